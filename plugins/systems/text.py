"""Text systems: each model alone, the text relay, the skyline and C2C's two-stage text-to-text baseline.

None of them reads anything trained, so each is generated once per models, items and decoding and cached
(``role = "baseline"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from latentbridge import Prompt, System, SystemConfig, hookimpl, option
from latentbridge.bridge.solutions import relay_continuation
from latentbridge.eval.choices import relay_prompt


class Alone(System):
    """One model alone, reading the prompt (``side``: ``source`` or ``target``)."""

    side = "source"
    default = always_recorded = True

    def prompts(self, ev: Any) -> list[Prompt]:
        """What this model reads: the source a context split's context and question, the target its prompt."""
        return [p.for_source for p in ev.prompts] if self.side == "source" else list(ev.prompts)

    def generate(self, ev: Any) -> list[str]:
        model, encoder = getattr(ev.bridge, self.side), getattr(ev.bridge, f"{self.side}_encoder")
        return ev.generate_text(model, [encoder.prompt_ids(p) for p in self.prompts(ev)], self.name)

    def score(self, ev: Any) -> list[list[float]]:
        model, encoder = getattr(ev.bridge, self.side), getattr(ev.bridge, f"{self.side}_encoder")
        return ev.score_text(model, encoder, self.prompts(ev), self.name)


class Source(Alone):
    """The source model alone, reading its prompt (in a context split, the context and the question)."""

    name = side = "source"
    rank = 0


class Target(Alone):
    """The target model alone, reading the prompt: what the bridge must beat."""

    name = side = "target"
    rank = 1


class Relay(System):
    """The text relay: the source's worked solution (to its '####' line) handed to the target as text.

    The solution follows the cue; the target writes the final answer."""

    name = "relay"
    default = always_recorded = True
    rank = 5

    def _continuations(self, ev: Any) -> list[str]:
        return [relay_continuation(p, out) for p, out in zip(ev.prompts, ev.baseline("source"), strict=True)]

    def generate(self, ev: Any) -> list[str]:
        enc = ev.bridge.target_encoder
        rows = [enc.continued_ids(p, c) for p, c in zip(ev.prompts, self._continuations(ev), strict=True)]
        return ev.generate_text(ev.bridge.target, rows, "relay")

    def score(self, ev: Any) -> list[list[float]]:
        prompts = [relay_prompt(p, c) for p, c in zip(ev.prompts, self._continuations(ev), strict=True)]
        return ev.score_text(ev.bridge.target, ev.bridge.target_encoder, prompts, "relay")

    def message_sizes(self, ev: Any, outputs: dict[str, Sequence[str] | None]) -> list[tuple[int, int]] | None:
        """The relayed text's UTF-8 bytes and its length in target tokens."""
        if outputs.get("relay") is None:
            return None
        return [(len(t.encode()), len(ev.bridge.target_encoder.ids(t))) for t in self._continuations(ev)]


class Skyline(System):
    """The skyline: the target reads everything the source reads.

    A context-split task's context and question (``Task.source_prompt``); elsewhere the source's prompt."""

    name = "skyline"
    rank = 10

    @staticmethod
    def prompts(ev: Any) -> list[Prompt]:
        return [ev.task.source_prompt(e) for e in ev.items]

    def generate(self, ev: Any) -> list[str]:
        enc = ev.bridge.target_encoder
        return ev.generate_text(ev.bridge.target, [enc.prompt_ids(p) for p in self.prompts(ev)], "skyline")

    def score(self, ev: Any) -> list[list[float]]:
        return ev.score_text(ev.bridge.target, ev.bridge.target_encoder, self.prompts(ev), "skyline")


@dataclass
class TwoStageConfig(SystemConfig):
    instruction: str = option("Briefly describe the most useful background to solve the problem:",
                              help="what the source is asked after the question (it writes the background)")
    max_new_tokens: int = option(64, gt=0, help="the longest background the source writes, in its tokens")
    template: str = option("Background: {background}\n",
                           help="how the background is written into the target's prompt, after the question")

    def check(self) -> list[tuple[str, str]]:
        if "{background}" not in self.template:
            return [("template", "must contain {background}")]
        return []


class TwoStage(System):
    """C2C's two-stage text-to-text baseline: the source writes a background, the target answers with it.

    The source reads the question with an instruction as its cue and writes up to ``max_new_tokens``; the
    target reads the prompt with that background after the question (``template``)."""

    name = "two_stage"
    Config = TwoStageConfig
    rank = 11

    def source_prompt(self, prompt: Prompt) -> Prompt:
        """What the source reads to write the background: its prompt (in a context split, the context and the
        question) with the instruction as its cue."""
        return dataclasses.replace(prompt.for_source, cue=self.config.instruction, answer="")

    def backgrounds(self, ev: Any) -> list[str]:
        """The source's background for every item (written once, cached beside the outputs)."""
        def write() -> list[str]:
            enc = ev.bridge.source_encoder
            rows = [enc.prompt_ids(self.source_prompt(p)) for p in ev.prompts]
            written = ev.generate_text(ev.bridge.source, rows, "two_stage background",
                                       max_new_tokens=self.config.max_new_tokens)
            return [t.strip() for t in written]

        return ev.cached(f"{self.cache_entry()}/background", write)

    def target_prompts(self, ev: Any) -> list[Prompt]:
        return [dataclasses.replace(p, question=p.question + self.config.template.format(background=bg))
                for p, bg in zip(ev.prompts, self.backgrounds(ev), strict=True)]

    def generate(self, ev: Any) -> list[str]:
        enc = ev.bridge.target_encoder
        return ev.generate_text(ev.bridge.target, [enc.prompt_ids(p) for p in self.target_prompts(ev)], "two_stage")

    def score(self, ev: Any) -> list[list[float]]:
        return ev.score_text(ev.bridge.target, ev.bridge.target_encoder, self.target_prompts(ev), "two_stage")

    def message_sizes(self, ev: Any, outputs: dict[str, Sequence[str] | None]) -> list[tuple[int, int]] | None:
        """The background's UTF-8 bytes and its length in target tokens."""
        if outputs.get("two_stage") is None:
            return None
        return [(len(t.encode()), len(ev.bridge.target_encoder.ids(t))) for t in self.backgrounds(ev)]


@hookimpl
def register_systems(register):
    for cls in (Source, Target, Relay, Skyline, TwoStage):
        register(cls)
