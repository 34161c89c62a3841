"""Translator ``linear``: one linear map from source to target space, pooled or per token."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from latentbridge import hookimpl
from latentbridge.nn.tokenwise import PooledOrPerToken, PooledOrPerTokenConfig


@dataclass
class LinearConfig(PooledOrPerTokenConfig):
    pass


class LinearTranslator(PooledOrPerToken):
    """A linear map: pooled source -> k soft tokens, or each of the last k source tokens -> one."""

    name = "linear"
    Config = LinearConfig

    def make_map(self, d_in: int, d_out: int) -> nn.Module:
        return nn.Linear(d_in, d_out)


@hookimpl
def register_translators(register):
    register(LinearTranslator)
