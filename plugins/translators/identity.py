"""Translator ``identity``: the source's hidden states themselves (same-model controls).

Which k positions: the last k real tokens of the source prompt, in order (the end of the prompt is
where the question and the answer cue sit; the first k would be a few-shot header shared by every
question). A source prompt shorter than k leaves the leading slots zero. Widths must match, unless
``projection: linear`` declares a trainable linear map from source to target width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from latentbridge import LatentBridgeError, SoftTokenConfig, Translator, hookimpl, option
from latentbridge.nn.pooling import select_last_k


@dataclass
class IdentityConfig(SoftTokenConfig):
    projection: Literal["none", "linear"] = option(
        "none", help="'none': widths must match; 'linear': a trainable d_src -> d_tgt map"
    )


class Identity(Translator):
    """The last k source hidden states, unchanged (or through a declared linear projection)."""

    name = "identity"
    Config = IdentityConfig

    def __init__(self, config: IdentityConfig):
        super().__init__(config)
        if config.projection == "none" and config.d_src != config.d_tgt:
            raise LatentBridgeError(
                f"translator identity: source width {config.d_src} != target width {config.d_tgt}; "
                "set translator.projection=linear to declare a projection"
            )
        self.proj = nn.Linear(config.d_src, config.d_tgt) if config.projection == "linear" else None

    def translate(self, h: torch.Tensor, mask: torch.Tensor, *, seeds: torch.Tensor | None) -> torch.Tensor:
        tokens, valid = select_last_k(h, mask, self.config.k)
        out = self.proj(tokens) if self.proj is not None else tokens
        return out * valid[..., None].to(out.dtype)


@hookimpl
def register_translators(register):
    register(Identity)
