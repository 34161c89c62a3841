"""Translator ``mlp``: a two-or-more-layer MLP from source to target space, pooled or per token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from latentbridge import hookimpl, option
from latentbridge.nn.tokenwise import VARIANT_HELP, PooledOrPerToken, PooledOrPerTokenConfig


@dataclass
class MLPConfig(PooledOrPerTokenConfig):
    variant: Literal["pooled", "per_token"] = option("per_token", help=VARIANT_HELP)
    hidden: int = option(256, gt=0, help="hidden width")
    depth: int = option(2, ge=2, help="number of linear layers (GELU between them)")


class MLPTranslator(PooledOrPerToken):
    """An MLP: pooled source -> k soft tokens, or each of the last k source tokens -> one."""

    name = "mlp"
    Config = MLPConfig

    def make_map(self, d_in: int, d_out: int) -> nn.Module:
        c = self.config
        layers: list[nn.Module] = [nn.Linear(d_in, c.hidden)]
        for _ in range(c.depth - 2):
            layers += [nn.GELU(), nn.Linear(c.hidden, c.hidden)]
        layers += [nn.GELU(), nn.Linear(c.hidden, d_out)]
        return nn.Sequential(*layers)


@hookimpl
def register_translators(register):
    register(MLPTranslator)
