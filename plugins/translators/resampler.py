"""Translator ``resampler``: a Perceiver-style resampler, k learned queries cross-attending to the source."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from latentbridge import SoftTokenConfig, Translator, hookimpl, option
from latentbridge.nn.layers import Attention, feed_forward


@dataclass
class ResamplerConfig(SoftTokenConfig):
    d_model: int = option(128, gt=0, help="width of the resampler's latents")
    depth: int = option(2, gt=0, help="blocks of (cross-attention, self-attention, MLP)")
    heads: int = option(4, gt=0, help="attention heads; must divide d_model")
    mlp_ratio: int = option(4, gt=0, help="MLP hidden width as a multiple of d_model")
    gate_init: float = option(0.5, help="initial value of each block's residual gates (tanh-gated)")

    def check(self) -> list[tuple[str, str]]:
        if self.d_model % self.heads:
            return [("heads", f"must divide d_model ({self.d_model}), got {self.heads}")]
        return []


class Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: int, gate_init: float):
        super().__init__()
        self.norm_x, self.norm_ctx = nn.LayerNorm(d), nn.LayerNorm(d)
        self.cross = Attention(d, heads)
        self.norm_self = nn.LayerNorm(d)
        self.self_attn = Attention(d, heads)
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = feed_forward(d, mlp_ratio)
        self.gates = nn.Parameter(torch.full((3,), gate_init))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        g = torch.tanh(self.gates)
        x = x + g[0] * self.cross(self.norm_x(x), self.norm_ctx(context), mask)
        y = self.norm_self(x)
        x = x + g[1] * self.self_attn(y, y, None)
        return x + g[2] * self.mlp(self.norm_mlp(x))


class Resampler(Translator):
    """Perceiver resampler: k learned queries cross-attend to the source tokens, gated residual blocks."""

    name = "resampler"
    Config = ResamplerConfig

    def __init__(self, config: ResamplerConfig):
        super().__init__(config)
        c = config
        self.inp = nn.Linear(c.d_src, c.d_model)
        self.queries = nn.Parameter(torch.randn(c.k, c.d_model) * 0.02)
        self.blocks = nn.ModuleList(Block(c.d_model, c.heads, c.mlp_ratio, c.gate_init) for _ in range(c.depth))
        self.norm_out = nn.LayerNorm(c.d_model)
        self.out = nn.Linear(c.d_model, c.d_tgt)

    def translate(self, h: torch.Tensor, mask: torch.Tensor, *, seeds: torch.Tensor | None) -> torch.Tensor:
        context = self.inp(h)
        x = self.queries.expand(h.shape[0], -1, -1).to(context.dtype)
        for block in self.blocks:
            x = block(x, context, mask)
        return self.out(self.norm_out(x))


@hookimpl
def register_translators(register):
    register(Resampler)
