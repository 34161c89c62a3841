"""Rotary position embeddings, read from a model's own rotary module: undo them, apply them elsewhere.

A cached key is rotated at its token's position. To move keys from one model (or position) to another,
:func:`unrotate` takes the rotation off with the model's own tables and :func:`rotate` puts the target's on
at the positions the keys will take. The tables come from the model's ``rotary_emb`` module, so its
frequencies, scaling (``rope_type``, attention scaling) and, for models with per-layer-type tables
(Gemma-3's local and global layers), the layer's own table are the ones it uses itself. Keys are rotated
in halves (``rotate_half``: Llama, Mistral, Qwen, Gemma, Phi-3, OLMo), on the first ``cos.shape[-1]``
channels (partial rotary) and the rest left as they are.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from latentbridge.errors import LatentBridgeError


def _rotary_module(model: Any) -> Any:
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", model)
    for owner in (decoder, getattr(decoder, "language_model", None), getattr(model, "model", None)):
        rotary = getattr(owner, "rotary_emb", None) if owner is not None else None
        if rotary is not None:
            return rotary
    raise LatentBridgeError(f"{type(model).__name__} has no rotary_emb module: its keys carry no rotary positions")


def rope_tables(model: Any, layer: int, positions: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)``, ``b t rot_dim`` each: the rotation ``model`` gives a key at ``positions`` (``b t``) in
    decoder layer ``layer`` (``like``: a tensor of the dtype and device wanted)."""
    rotary = _rotary_module(model)
    if "layer_type" in inspect.signature(rotary.forward).parameters:
        types = getattr(model.config.get_text_config(), "layer_types", None)
        cos, sin = rotary(like, positions, types[layer] if types else None)
    else:
        cos, sin = rotary(like, positions)
    return cos, sin


def _half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """``x`` (``b heads t head_dim``) turned by the angles of ``(cos, sin)`` (``b t rot_dim``); ``inverse``: the
    angles taken off. The rotation only: a table's attention scaling (YaRN's and longrope's ``s``, with
    ``cos² + sin² = s²``) stays with the key, so an un-rotated key keeps the size the model's cache holds it
    at, and ``rotate(unrotate(k, p), q)`` is the key the model writes at ``q`` (with ``s = 1``, ``rotate`` is
    the model's own rotary embedding)."""
    rot = cos.shape[-1]
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    scale = (cos * cos + sin * sin).sqrt()
    cos, sin = cos / scale, (-sin if inverse else sin) / scale
    head, rest = x[..., :rot], x[..., rot:]
    return torch.cat((head * cos + _half(head) * sin, rest), dim=-1)


def unrotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x`` with the rotation ``(cos, sin)`` taken off (see :func:`rotate`)."""
    return rotate(x, cos, sin, inverse=True)
