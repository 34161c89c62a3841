"""Translator ``dit``: a diffusion transformer that generates the k soft tokens by rectified flow.

The DiT denoises k tokens in the target's (unit-RMS) embedding space, conditioned on the source:
cross-attention to every source token (masked) in each block, plus the masked-mean source vector
added to the time embedding for adaptive layer norm. Learned positional embeddings tell the k
positions apart; a final adaptive norm and linear head map back to target width; time ``t`` in
[0, 1] is embedded sinusoidally at diffusion scale (``t * 1000``).

Training: the ``dit_flow`` objective regresses the velocity ``x1 - x0`` at ``x_t = (1 - t) x0 + t x1``,
``x1`` the recipe's teacher (answer or prompt embeddings, resampled to k tokens), ``x0`` noise; the
conditioning is dropped with probability ``cond_dropout`` (for classifier-free guidance).

What the target reads, in training as in evaluation, comes from the sampler: ``sample_steps`` Euler
steps from noise, differentiable, with no teacher anywhere in the path. The noise is drawn from
per-item seeds (``seeds``; the evaluator derives them from the item id), so the same weights and
input always give the same soft tokens. Without seeds every row uses seed 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from latentbridge import SoftTokenConfig, Translator, hookimpl, option
from latentbridge.nn.layers import Attention, feed_forward, timestep_embedding
from latentbridge.nn.pooling import masked_mean


@dataclass
class DiTConfig(SoftTokenConfig):
    d_model: int = option(128, gt=0, help="width of the DiT")
    depth: int = option(2, gt=0, help="DiT blocks (self-attention, cross-attention to the source, MLP)")
    heads: int = option(4, gt=0, help="attention heads; must divide d_model")
    mlp_ratio: int = option(4, gt=0, help="MLP hidden width as a multiple of d_model")
    sample_steps: int = option(4, gt=0, help="Euler steps of the deterministic sampler")
    guidance: float = option(1.0, ge=0, help="classifier-free guidance scale at sampling (1: conditional only)")
    cond_dropout: float = option(0.1, ge=0, lt=1, help="probability of dropping the condition in flow training")

    def check(self) -> list[tuple[str, str]]:
        if self.d_model % self.heads:
            return [("heads", f"must divide d_model ({self.d_model}), got {self.heads}")]
        return []


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(d, elementwise_affine=False) for _ in range(3))
        self.self_attn = Attention(d, heads)
        self.cross_attn = Attention(d, heads)
        self.mlp = feed_forward(d, mlp_ratio)
        self.ada = nn.Linear(d, 9 * d)
        nn.init.normal_(self.ada.weight, std=0.02)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s1, a1, g1, s2, a2, g2, s3, a3, g3 = self.ada(F.silu(c)).chunk(9, dim=-1)
        y = modulate(self.norms[0](x), s1, a1)
        x = x + (1 + g1[:, None]) * self.self_attn(y, y)
        x = x + (1 + g2[:, None]) * self.cross_attn(modulate(self.norms[1](x), s2, a2), cond, mask)
        return x + (1 + g3[:, None]) * self.mlp(modulate(self.norms[2](x), s3, a3))


class DiT(Translator):
    """Rectified-flow DiT: k soft tokens sampled from seeded noise, conditioned on the source tokens."""

    name = "dit"
    Config = DiTConfig

    def __init__(self, config: DiTConfig):
        super().__init__(config)
        c = config
        self.cond_in = nn.Sequential(nn.Linear(c.d_src, c.d_model), nn.LayerNorm(c.d_model))
        self.null_cond = nn.Parameter(torch.randn(c.d_model) * 0.02)
        self.x_in = nn.Linear(c.d_tgt, c.d_model)
        self.pos = nn.Parameter(torch.randn(c.k, c.d_model) * 0.02)
        self.time = nn.Sequential(nn.Linear(c.d_model, c.d_model), nn.SiLU(), nn.Linear(c.d_model, c.d_model))
        self.pooled = nn.Linear(c.d_model, c.d_model)
        self.blocks = nn.ModuleList(DiTBlock(c.d_model, c.heads, c.mlp_ratio) for _ in range(c.depth))
        self.final_norm = nn.LayerNorm(c.d_model, elementwise_affine=False)
        self.final_ada = nn.Linear(c.d_model, 2 * c.d_model)
        self.head = nn.Linear(c.d_model, c.d_tgt)

    # -- the network ---------------------------------------------------------------------------------

    def condition(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.cond_in(h)

    def velocity(
        self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor,
        drop: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted velocity ``b k d_tgt`` at noisy tokens ``x`` and times ``t`` (``b``); rows with
        ``drop`` set see the learned null condition instead of the source."""
        if drop is not None:
            cond = torch.where(drop[:, None, None], self.null_cond.to(cond.dtype).expand_as(cond), cond)
        c = self.time(timestep_embedding(t, self.config.d_model).to(x.dtype)) + self.pooled(masked_mean(cond, mask))
        y = self.x_in(x) + self.pos.to(x.dtype)
        for block in self.blocks:
            y = block(y, c, cond, mask)
        shift, scale = self.final_ada(F.silu(c)).chunk(2, dim=-1)
        return self.head(modulate(self.final_norm(y), shift, scale))

    def guided_velocity(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        v = self.velocity(x, t, cond, mask)
        g = self.config.guidance
        if g == 1.0:
            return v
        unconditional = self.velocity(x, t, cond, mask, drop=torch.ones(x.shape[0], dtype=torch.bool, device=x.device))
        return unconditional + g * (v - unconditional)

    # -- sampling and training -----------------------------------------------------------------------

    def noise(self, seeds: torch.Tensor | None, b: int, like: torch.Tensor) -> torch.Tensor:
        """``b k d_tgt`` standard normal noise, row r drawn from ``seeds[r]`` (0 when no seeds)."""
        rows = []
        for r in range(b):
            gen = torch.Generator().manual_seed(int(seeds[r]) if seeds is not None else 0)
            rows.append(torch.randn(self.config.k, self.config.d_tgt, generator=gen))
        return torch.stack(rows).to(device=like.device, dtype=like.dtype)

    def translate(self, h: torch.Tensor, mask: torch.Tensor, *, seeds: torch.Tensor | None) -> torch.Tensor:
        cond = self.condition(h, mask)
        x = self.noise(seeds, h.shape[0], cond)
        steps = self.config.sample_steps
        for i in range(steps):
            t = torch.full((h.shape[0],), i / steps, device=h.device)
            x = x + self.guided_velocity(x, t, cond, mask) / steps
        return x

    def flow_loss(
        self, h: torch.Tensor, mask: torch.Tensor, teacher: torch.Tensor, seeds: torch.Tensor | None
    ) -> torch.Tensor:
        """Rectified-flow regression toward ``teacher`` (``b k d_tgt``): MSE of the predicted velocity.

        Noise, time and condition dropout of row r are drawn from ``seeds[r]`` (offset so they differ
        from the sampler's noise), so a row's draws do not depend on the rest of the batch."""
        b = h.shape[0]
        x1 = teacher.to(h.dtype)
        x0, t, u = [], [], []
        for r in range(b):
            gen = torch.Generator().manual_seed((int(seeds[r]) if seeds is not None else 0) ^ 0x5DEECE66D)
            x0.append(torch.randn(x1.shape[1:], generator=gen))
            t.append(torch.rand((), generator=gen))
            u.append(torch.rand((), generator=gen))
        x0 = torch.stack(x0).to(x1)
        t = torch.stack(t).to(x1)
        drop = (torch.stack(u) < self.config.cond_dropout).to(h.device)
        xt = (1 - t)[:, None, None] * x0 + t[:, None, None] * x1
        predicted = self.velocity(xt, t, self.condition(h, mask), mask, drop=drop)
        return F.mse_loss(predicted.float(), (x1 - x0).float())


@hookimpl
def register_translators(register):
    register(DiT)
