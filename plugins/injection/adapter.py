"""Injection mode ``adapter``: soft tokens added residually onto the question tokens' embeddings."""

from __future__ import annotations

from dataclasses import dataclass

from latentbridge import InjectionConfig, InjectionMode, TargetText, hookimpl, option
from latentbridge.api.injection import answer_segment
from latentbridge.api.segments import Segment, Text


@dataclass
class AdapterConfig(InjectionConfig):
    gain: float = option(1.0, ge=0, help="multiplier of the soft tokens before they are added")


class Adapter(InjectionMode):
    """[prompt + soft]: the k soft tokens are spread over the question's own tokens and added to them."""

    name = "adapter"
    Config = AdapterConfig

    def segments(self, text: TargetText) -> list[Segment]:
        start, end = text.question_span
        prompt = list(text.prompt)
        return [
            Text(text.prefix),
            Text(prompt[:start]),
            Text(prompt[start:end], add_soft=True, soft_gain=self.config.gain),
            Text(prompt[end:]),
            *answer_segment(text),
        ]


@hookimpl
def register_injection_modes(register):
    register(Adapter)
