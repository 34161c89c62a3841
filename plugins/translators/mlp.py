"""Translator ``mlp``: a two-or-more-layer MLP from source to target space, pooled or per token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from latentbridge import Translator, TranslatorConfig, hookimpl, option
from latentbridge.pooling import masked_mean, select_last_k


@dataclass
class MLPConfig(TranslatorConfig):
    variant: Literal["pooled", "per_token"] = option(
        "per_token",
        help="'pooled': masked mean of the source tokens -> k soft tokens; "
        "'per_token': each of the last k source tokens -> one soft token",
    )
    hidden: int = option(256, gt=0, help="hidden width")
    depth: int = option(2, ge=2, help="number of linear layers (GELU between them)")


def mlp(d_in: int, hidden: int, d_out: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(d_in, hidden)]
    for _ in range(depth - 2):
        layers += [nn.GELU(), nn.Linear(hidden, hidden)]
    layers += [nn.GELU(), nn.Linear(hidden, d_out)]
    return nn.Sequential(*layers)


class MLPTranslator(Translator):
    """An MLP: pooled source -> k soft tokens, or each of the last k source tokens -> one."""

    name = "mlp"
    Config = MLPConfig

    def __init__(self, config: MLPConfig):
        super().__init__(config)
        c = config
        if c.variant == "pooled":
            self.net = mlp(c.d_src, c.hidden, c.k * c.d_tgt, c.depth)
        else:
            self.net = mlp(c.d_src, c.hidden, c.d_tgt, c.depth)
            self.filler = nn.Parameter(torch.randn(c.k, c.d_tgt) * 0.02)  # slots a short prompt cannot fill

    def translate(self, h: torch.Tensor, mask: torch.Tensor, *, seeds: torch.Tensor | None) -> torch.Tensor:
        if self.config.variant == "pooled":
            return rearrange(self.net(masked_mean(h, mask)), "b (k d) -> b k d", k=self.config.k)
        tokens, valid = select_last_k(h, mask, self.config.k)
        return torch.where(valid[..., None], self.net(tokens), self.filler.to(h.dtype))


@hookimpl
def register_translators(register):
    register(MLPTranslator)
