"""A base for translators that map either the pooled source or each of its last k tokens."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from latentbridge.api.options import option
from latentbridge.api.translator import SoftTokenConfig, Translator
from latentbridge.nn.pooling import masked_mean, select_last_k

VARIANT_HELP = ("'pooled': masked mean of the source tokens -> k soft tokens; "
                "'per_token': each of the last k source tokens -> one soft token")


@dataclass
class PooledOrPerTokenConfig(SoftTokenConfig):
    variant: Literal["pooled", "per_token"] = option("pooled", help=VARIANT_HELP)


class PooledOrPerToken(Translator):
    """``pooled``: the masked mean of the source -> ``k * d_tgt`` -> k soft tokens. ``per_token``: each of
    the last k real source tokens -> one soft token (see :func:`latentbridge.nn.pooling.select_last_k`);
    slots a prompt shorter than k cannot fill take a learned filler. Subclasses build the map."""

    Config = PooledOrPerTokenConfig

    def __init__(self, config: PooledOrPerTokenConfig):
        super().__init__(config)
        c = config
        if c.variant == "pooled":
            self.net = self.make_map(c.d_src, c.k * c.d_tgt)
        else:
            self.net = self.make_map(c.d_src, c.d_tgt)
            self.filler = nn.Parameter(torch.randn(c.k, c.d_tgt) * 0.02)

    @abstractmethod
    def make_map(self, d_in: int, d_out: int) -> nn.Module:
        """The trainable map from ``d_in`` to ``d_out`` features."""

    def translate(self, h: torch.Tensor, mask: torch.Tensor, *, seeds: torch.Tensor | None) -> torch.Tensor:
        if self.config.variant == "pooled":
            return rearrange(self.net(masked_mean(h, mask)), "b (k d) -> b k d", k=self.config.k)
        tokens, valid = select_last_k(h, mask, self.config.k)
        return torch.where(valid[..., None], self.net(tokens), self.filler.to(h.dtype))
