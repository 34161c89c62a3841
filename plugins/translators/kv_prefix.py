"""Translator ``kv_prefix``: a resampler whose k queries read the source and write k virtual tokens' keys
and values at every target layer (deep prompt tuning, from another model).

The queries cross-attend to the source's hidden states (any tokenizer, any width: no token alignment is
needed, which sets it apart from cache fusion; with ``models.source_layers``, a learned softmax mix of
those layers, each layer-normalised), then a linear head per target layer maps each query to
that layer's keys and values (``kv_heads x head_dim`` each). Every layer's keys and values are rescaled
to the RMS of the target's own keys and values at that layer (measured on real text when the translator
is built), so the virtual tokens start at the size of real ones. The target reads them as a cache right
after its special prefix (see :mod:`latentbridge.bridge.kv`).

``layers: learned`` sends the message to a share of the target's layers only (``layer_share``; KVComm's
setting, where the sender's cache reaches ``ceil(share x L)`` of the receiver's layers): the
``ceil(layer_share x L)`` layers of highest learned logit read it, the others do not see its positions,
and its bytes count the layers that read it. The logits learn through a straight-through estimator: in
the forward pass each chosen layer's values are multiplied by exactly 1; the gradient is that of
``sigmoid(logit)`` in its place. A layer left out gets no gradient while it is out, so the choice moves
only as the chosen layers' logits fall below the others'. The logits start at small seeded random values
(no layer favoured). At evaluation the choice is the same top ``ceil(layer_share x L)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from latentbridge import KVGeometryConfig, Translator, hookimpl, option
from latentbridge.api.messages import KVPrefix
from latentbridge.nn.layers import Attention, feed_forward


@dataclass
class KVPrefixConfig(KVGeometryConfig):
    d_model: int = option(128, gt=0, help="width of the resampler's latents")
    depth: int = option(2, gt=0, help="blocks of (cross-attention, self-attention, MLP)")
    heads: int = option(4, gt=0, help="attention heads; must divide d_model")
    n_source_layers: int | None = option(None, gt=0, help="how many source layers it mixes (filled from "
                                         "models.source_layers; null: the one models.source_layer)")
    layers: Literal["all", "learned"] = option("all", help="which target layers read the message: all, or a "
                                               "learned share of them")
    layer_share: float = option(0.5, gt=0, le=1, help="with layers: learned, the share of the target's layers "
                                "that read the message (ceil(share x layers))")

    def check(self) -> list[tuple[str, str]]:
        if self.d_model % self.heads:
            return [("heads", f"must divide d_model ({self.d_model}), got {self.heads}")]
        return []


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.norm_x, self.norm_ctx, self.norm_self, self.norm_mlp = (nn.LayerNorm(d) for _ in range(4))
        self.cross, self.self_attn = Attention(d, heads), Attention(d, heads)
        self.mlp = feed_forward(d, 4)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.cross(self.norm_x(x), self.norm_ctx(context), mask)
        y = self.norm_self(x)
        x = x + self.self_attn(y, y, None)
        return x + self.mlp(self.norm_mlp(x))


class KVPrefixTranslator(Translator):
    """k learned queries read the source; per target layer, a head writes k virtual keys and values."""

    name = "kv_prefix"
    Config = KVPrefixConfig
    emits = "kv_prefix"
    reads_layers = True

    def __init__(self, config: KVPrefixConfig):
        super().__init__(config)
        c = config
        if None in (c.target_layers, c.target_kv_heads, c.target_head_dim, c.kv_rms):
            raise ValueError("kv_prefix: the target's layers, heads, head width and kv_rms must be filled in")
        self.inp = nn.Linear(c.d_src, c.d_model)
        if c.n_source_layers:  # several source layers: each normalised, mixed with learned softmax weights
            self.layer_norm = nn.LayerNorm(c.d_src)
            self.layer_weights = nn.Parameter(torch.zeros(c.n_source_layers))
        self.queries = nn.Parameter(torch.randn(c.k, c.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(c.d_model, c.heads) for _ in range(c.depth))
        self.norm_out = nn.LayerNorm(c.d_model)
        width = c.target_kv_heads * c.target_head_dim
        self.out = nn.Linear(c.d_model, c.target_layers * 2 * width)
        self.register_buffer("scale", torch.tensor(c.kv_rms, dtype=torch.float32).view(c.target_layers, 2),
                             persistent=False)
        if c.layers == "learned":
            self.layer_logits = nn.Parameter(torch.randn(c.target_layers) * 0.01)

    def chosen_layers(self) -> list[int]:
        """The target layers that read the message (every one unless ``layers: learned``)."""
        c = self.config
        if c.layers == "all":
            return list(range(c.target_layers))
        n = math.ceil(c.layer_share * c.target_layers)
        return sorted(torch.topk(self.layer_logits.detach(), n).indices.tolist())

    def message(self, states, seeds=None) -> KVPrefix:
        c = self.config
        h, mask = states.hidden, states.mask.bool()
        if c.n_source_layers:
            if len(states.layers) != c.n_source_layers:
                raise ValueError(f"kv_prefix mixes {c.n_source_layers} source layers, got {len(states.layers)}")
            mix = torch.softmax(self.layer_weights, 0)
            h = sum(w * self.layer_norm(x.to(self.inp.weight.dtype)) for w, x in zip(mix, states.layers, strict=True))
        context = self.inp(h.to(self.inp.weight.dtype))
        x = self.queries.expand(h.shape[0], -1, -1).to(context.dtype)
        for block in self.blocks:
            x = block(x, context, mask)
        kv = rearrange(self.out(self.norm_out(x)), "b k (l two h e) -> l two b h k e", l=c.target_layers, two=2,
                       h=c.target_kv_heads)
        rms = kv.float().pow(2).mean(dim=(-1, -3), keepdim=True).add(1e-12).sqrt()  # per layer, row, position
        kv = kv * (self.scale[:, :, None, None, None, None] / rms).to(kv.dtype)
        keys, values = [kv[layer, 0] for layer in range(c.target_layers)], [kv[layer, 1] for layer in range(c.target_layers)]
        if c.layers == "all":
            return KVPrefix(keys, values)
        chosen = self.chosen_layers()
        soft = torch.sigmoid(self.layer_logits)
        hard = torch.zeros_like(soft)
        hard[chosen] = 1.0
        weight = (hard + soft - soft.detach()).to(kv.dtype)  # exactly 1 or 0 forward; sigmoid's gradient back
        values = [v * weight[layer] for layer, v in enumerate(values)]
        return KVPrefix(keys, values, layers=chosen)

    def describe(self) -> dict:
        return {**super().describe(), "layers_read": self.chosen_layers()}


@hookimpl
def register_translators(register):
    register(KVPrefixTranslator)
