"""Translator ``linear``: one linear map from source to target space, pooled or per token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from latentbridge import Translator, TranslatorConfig, hookimpl, option
from latentbridge.pooling import masked_mean, select_last_k


@dataclass
class LinearConfig(TranslatorConfig):
    variant: Literal["pooled", "per_token"] = option(
        "pooled",
        help="'pooled': masked mean of the source tokens -> k soft tokens; "
        "'per_token': each of the last k source tokens -> one soft token",
    )


class LinearTranslator(Translator):
    """A linear map: pooled source -> k soft tokens, or each of the last k source tokens -> one."""

    name = "linear"
    Config = LinearConfig

    def __init__(self, config: LinearConfig):
        super().__init__(config)
        c = config
        if c.variant == "pooled":
            self.proj = nn.Linear(c.d_src, c.k * c.d_tgt)
        else:
            self.proj = nn.Linear(c.d_src, c.d_tgt)
            # stands in for slots a short source prompt cannot fill
            self.filler = nn.Parameter(torch.randn(c.k, c.d_tgt) * 0.02)

    def translate(self, h: torch.Tensor, mask: torch.Tensor, *, seeds: torch.Tensor | None) -> torch.Tensor:
        if self.config.variant == "pooled":
            return rearrange(self.proj(masked_mean(h, mask)), "b (k d) -> b k d", k=self.config.k)
        tokens, valid = select_last_k(h, mask, self.config.k)
        return torch.where(valid[..., None], self.proj(tokens), self.filler.to(h.dtype))


@hookimpl
def register_translators(register):
    register(LinearTranslator)
