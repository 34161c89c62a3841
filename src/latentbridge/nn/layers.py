"""Small neural-network building blocks shared by translators."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class Attention(nn.Module):
    """Multi-head attention of ``x: b k d`` over ``context: b t d``; ``mask: b t`` (True = attend)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"attention width {d} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = rearrange(self.q(x), "b k (h e) -> b h k e", h=self.heads)
        k, v = rearrange(self.kv(context), "b t (two h e) -> two b h t e", two=2, h=self.heads)
        attn_mask = mask[:, None, None, :].bool() if mask is not None else None
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(rearrange(y, "b h k e -> b k (h e)"))


def feed_forward(d: int, ratio: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, ratio * d), nn.GELU(), nn.Linear(ratio * d, d))


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of ``t`` in [0, 1] (``b``) -> ``b dim``; ``t`` is multiplied by ``scale`` first,
    so the embedding spans the same range of frequencies as for diffusion steps 0..1000."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    args = (t.float() * scale)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim - emb.shape[-1]))
