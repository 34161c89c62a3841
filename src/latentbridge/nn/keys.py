"""Looking inside a frozen decoder: the rotary-embedded attention keys of its first layers."""

from __future__ import annotations

from typing import Any

import torch

from latentbridge.api.segments import TargetInputs
from latentbridge.errors import LatentBridgeError


class _Enough(Exception):
    """Raised by a hook once the layers we need have run (the rest of the forward pass is skipped)."""


def decoder_layers(model: Any) -> Any:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not all(hasattr(layer, "self_attn") for layer in layers):
        raise LatentBridgeError(
            f"{type(model).__name__}: expected model.model.layers[i].self_attn (Llama/Mistral-style decoder)"
        )
    return layers


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary_keys(model: Any, inputs: TargetInputs, layers: int) -> list[torch.Tensor]:
    """Post-RoPE keys of the first ``layers`` decoder layers, each ``b heads L head_dim``.

    The keys are recomputed from each layer's own input (``k_proj`` of the normed hidden states,
    rotated with the cos/sin the model passes to the layer), so gradients flow to ``inputs_embeds``.
    The forward pass stops after the last layer needed.
    """
    blocks = decoder_layers(model)
    if not 0 < layers <= len(blocks):
        raise LatentBridgeError(f"rotary_keys: layers must be in 1..{len(blocks)}, got {layers}")
    keys: list[torch.Tensor] = []

    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        cos, sin = kwargs["position_embeddings"]
        k = module.k_proj(hidden).view(*hidden.shape[:-1], -1, module.head_dim).transpose(1, 2)
        keys.append(k * cos.unsqueeze(1) + _rotate_half(k) * sin.unsqueeze(1))
        if len(keys) == layers:
            raise _Enough

    handles = [blocks[i].self_attn.register_forward_pre_hook(hook, with_kwargs=True) for i in range(layers)]
    try:
        model(**inputs.model_kwargs())
    except _Enough:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return keys
