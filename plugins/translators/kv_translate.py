"""Translator ``kv_translate``: the source's keys and values over the context, turned into the target's
key/value geometry at those positions, so the target attends to a translated context as a cache it never
computed (the cross-model cache translation of the dense heterogeneous-KV and cache-flow work).

For a context-split task (``task.target_reads: question``) the source reads its prompt up to the context's
last token (the question after it would change nothing there: ``reads_context_only``); the target reads the
question only, after the translated context:

- **What it reads.** Only the source tokens whose characters lie in the item's context
  (``SourceStates.context``): never the question, the template's words or the special prefix.
- **Layer mapping** (``layer_map``). Target layer ``l`` of ``L_t`` reads source layer ``m(l)`` of ``L_s``:
  ``proportional`` (the default), ``m(l) = round(l (L_s - 1) / (L_t - 1))``, the same relative depth;
  ``last_aligned``, ``m(l) = max(0, l + L_s - L_t)``, the last layers aligned (C2C's mapping, clamped
  below zero so that every target layer reads one).
- **Per-layer maps.** At every target layer, a learned map of each context token's source key and value
  (the key with the source's rotation taken off) to the target's key and value (``hidden = 0``: one
  linear map; else a two-layer MLP of that width). With ``window`` w > 1 a position's map also reads the
  w - 1 context positions before it (zeros before the context's first), so that a translated key can say
  what came before it, as the keys of an induction head do. Each output is rescaled, per position, to the RMS of
  the target's own keys and values at that layer (``kv_rms``, measured on real text), so a translated
  token starts at the size of a real one (``rescale: false`` leaves the maps' outputs as they are).
- **Positions.** The source's keys are un-rotated at the source positions they were cached at (its own
  rotary tables, :mod:`latentbridge.nn.rope`); the translated keys are handed over *un-rotated*
  (``KVPrefix(rotated=False)``) and the layout rotates them with the target's tables at the positions
  they take in the target's cache: right after its special prefix, counted on from it over the real
  context tokens of the row (left padding never counts), the question's text following. Training and
  generation build this one layout (:func:`latentbridge.bridge.kv.kv_prefix_inputs`).

The message has as many positions per row as the source's context has tokens (``translator.k`` is not
used); its bytes are those of the translated keys and values at every target layer. With
``soft_plus_text`` the target reads ``[bos][translated context][question]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from einops import rearrange
from torch import nn

from latentbridge import KVGeometryConfig, LatentBridgeError, Translator, hookimpl, option
from latentbridge.api.messages import KVPrefix
from latentbridge.nn.rope import unrotate


@dataclass
class KVTranslateConfig(KVGeometryConfig):
    k: int = option(8, gt=0, help="not used: the message has one position per source token of the context")
    layer_map: Literal["proportional", "last_aligned"] = option(
        "proportional", help="which source layer each target layer reads: 'proportional' (the same relative "
        "depth) or 'last_aligned' (C2C's: the last layers aligned, clamped at the first)")
    hidden: int = option(0, ge=0, help="width of each per-layer map's hidden layer (0: a linear map)")
    rescale: bool = option(True, help="rescale every translated key and value, per position, to the RMS of the "
                           "target's own at that layer (kv_rms)")
    window: int = option(1, ge=1, help="source context positions each translated position reads: itself and the "
                         "window - 1 before it (1: itself only)")


def layer_map(kind: str, n_source: int, n_target: int) -> list[int]:
    """The source layer each target layer reads (see the module)."""
    if kind == "last_aligned":
        return [max(0, layer + n_source - n_target) for layer in range(n_target)]
    if n_target == 1:
        return [n_source - 1]
    return [round(layer * (n_source - 1) / (n_target - 1)) for layer in range(n_target)]


def gather_context(x: torch.Tensor, spans: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (``b ... t ...`` with positions on dim 2 for ``b h t d``, or dim 1 for ``b t``) cut to each row's
    ``[start, end)`` and left-padded to the longest: ``(gathered, mask b n)``."""
    b = x.shape[0]
    n = max((end - start for start, end in spans), default=0)
    dim = 2 if x.dim() == 4 else 1
    shape = list(x.shape)
    shape[dim] = n
    out = x.new_zeros(shape)
    mask = torch.zeros(b, n, dtype=torch.long, device=x.device)
    for row, (start, end) in enumerate(spans):
        width = end - start
        if width:
            out[row].narrow(dim - 1, n - width, width).copy_(x[row].narrow(dim - 1, start, width))
            mask[row, n - width :] = 1
    return out, mask


def with_window(x: torch.Tensor, mask: torch.Tensor, window: int) -> torch.Tensor:
    """``x`` (``b n d``, left-padded rows, ``mask b n``) with each position's ``window - 1`` predecessors in its
    row beside it: ``b n (window d)``, itself first, then the one before it, ...; a predecessor before the
    row's first position (or in its padding) reads zeros."""
    parts = [x]
    for shift in range(1, window):
        before = torch.zeros_like(x)
        before[:, shift:] = x[:, :-shift] * mask[:, :-shift, None].to(x.dtype)
        parts.append(before)
    return torch.cat(parts, -1)


class KVTranslate(Translator):
    """Per target layer, a map of the source's context keys and values to the target's."""

    name = "kv_translate"
    Config = KVTranslateConfig
    emits = "kv_prefix"
    reads_cache = True
    needs_context = True
    reads_context_only = True  # the source stops after the context's last token

    @classmethod
    def check_models(cls, source: Any, target: Any, config: KVTranslateConfig) -> list[str]:
        """Refused before any weight loads: a model whose keys carry no rotary positions (the positions are
        taken off the source's keys and put on for the target's)."""
        return [f"kv_translate moves keys between rotary positions, and {m.name} ({m.model_type}) has none"
                for m in (source, target) if not m.rotary]

    def __init__(self, config: KVTranslateConfig):
        super().__init__(config)
        c = config
        if None in (c.source_layers, c.source_kv_heads, c.source_head_dim, c.target_layers, c.target_kv_heads,
                    c.target_head_dim, c.kv_rms):
            raise ValueError("kv_translate: both models' layers, heads, head widths and kv_rms must be filled in")
        self.layers = layer_map(c.layer_map, c.source_layers, c.target_layers)
        d_in = 2 * c.source_kv_heads * c.source_head_dim * c.window
        d_out = 2 * c.target_kv_heads * c.target_head_dim
        self.maps = nn.ModuleList(
            nn.Linear(d_in, d_out) if c.hidden == 0
            else nn.Sequential(nn.Linear(d_in, c.hidden), nn.GELU(), nn.Linear(c.hidden, d_out))
            for _ in range(c.target_layers))
        self.register_buffer("scale", torch.tensor(c.kv_rms, dtype=torch.float32).view(c.target_layers, 2),
                             persistent=False)

    def message(self, states: Any, seeds: Any = None) -> KVPrefix:
        c = self.config
        if states.kv is None or states.context is None:
            raise LatentBridgeError("kv_translate translates the source's context: it needs a context-split "
                                    "task (task.target_reads: question, for example passages or qa_context)")
        if states.rope is None or states.positions is None:
            raise LatentBridgeError("kv_translate needs the source's rotary positions")
        positions, mask = gather_context(states.positions, states.context)
        dtype = next(self.maps.parameters()).dtype
        keys, values = [], []
        unrotated: dict[int, torch.Tensor] = {}
        for layer, source_layer in enumerate(self.layers):
            if source_layer not in unrotated:
                sk, sv = states.kv[source_layer]
                k, _ = gather_context(sk, states.context)
                v, _ = gather_context(sv, states.context)
                cos, sin = states.rope(source_layer, positions.to(k.device))
                k = unrotate(k.float(), cos.float(), sin.float())
                x = torch.cat([rearrange(k, "b h n e -> b n (h e)"), rearrange(v.float(), "b h n e -> b n (h e)")], -1)
                unrotated[source_layer] = with_window(x, mask.to(x.device), c.window)
            x = unrotated[source_layer].to(device=self.scale.device, dtype=dtype)
            kv = rearrange(self.maps[layer](x), "b n (two h e) -> two b h n e", two=2, h=c.target_kv_heads)
            if c.rescale:
                rms = kv.float().pow(2).mean(dim=(2, 4), keepdim=True).add(1e-12).sqrt()  # per row and position
                kv = kv * (self.scale[layer][:, None, None, None, None] / rms).to(kv.dtype)
            keys.append(kv[0])
            values.append(kv[1])
        return KVPrefix(keys, values, mask=mask.to(self.scale.device), rotated=False)


@hookimpl
def register_translators(register):
    register(KVTranslate)
