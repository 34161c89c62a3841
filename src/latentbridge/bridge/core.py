"""The bridge: frozen source -> translator -> injection -> frozen target, one path for training and evaluation.

:class:`Bridge` owns the frozen models, their prompt encoders, the translator and the injection
mode. Training (:mod:`latentbridge.train.runner`) and evaluation (:mod:`latentbridge.eval.harness`) both
build the target's inputs with :meth:`Bridge.bridged_inputs`, so what the target reads at training
time is exactly what it reads at test time (minus the answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from latentbridge.api.injection import InjectionMode
from latentbridge.api.segments import TargetInputs, Text
from latentbridge.api.task import Example, Prompt
from latentbridge.api.translator import Translator
from latentbridge.bridge.encoding import PromptEncoder
from latentbridge.bridge.layout import assemble, left_pad, pad_hidden, positions_from_mask
from latentbridge.bridge.models import FrozenModel
from latentbridge.bridge.prefix import MIN_SHARED_PREFIX, PrefixState, common_prefix
from latentbridge.registry.blame import blame


@dataclass
class Bridge:
    source: FrozenModel
    target: FrozenModel
    translator: Translator
    injection: InjectionMode
    source_layer: int
    source_cache: Any = None  # a SourceCache, when the recipe turns the cache on

    def __post_init__(self) -> None:
        self.source_encoder = PromptEncoder(self.source.tokenizer)
        self.target_encoder = PromptEncoder(self.target.tokenizer)
        self._prefixes: dict[tuple[int, ...], PrefixState] = {}

    # -- source side ---------------------------------------------------------------------------------

    def source_rows(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """What the source reads: its special prefix and the prompt (header, question, cue), no answer."""
        return [self.source_encoder.prompt_ids(p) for p in prompts]

    @torch.no_grad()
    def source_hidden(
        self, prompts: Sequence[Prompt], examples: Sequence[Example] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states of the chosen source layer: ``b t d_src`` and the mask ``b t``.

        With the source cache on (and the examples known), they come from the cache. When the rows
        share a long token prefix (a fixed few-shot header), the prefix is run once and its key/value
        cache reused, laid out as ``[prefix][pad][rest]``."""
        if self.source_cache is not None and examples is not None:
            return pad_hidden(self.source_cache.get(examples), self.source.device)
        rows = self.source_rows(prompts)
        shared = common_prefix(rows)
        if shared >= MIN_SHARED_PREFIX and len(rows) > 1:
            return self._hidden_with_prefix(rows, shared)
        ids, mask = left_pad(rows, self.source.pad_id, self.source.device)
        out = self.source.model(
            input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), output_hidden_states=True
        )
        return out.hidden_states[self.source_layer], mask

    def _hidden_with_prefix(self, rows: Sequence[Sequence[int]], shared: int) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = tuple(rows[0][:shared])
        cached = self._prefixes.get(prefix)
        if cached is None:
            cached = PrefixState.compute(self.source.model, prefix, self.source_layer, self.source.device)
            self._prefixes = {prefix: cached}  # the header changes rarely: keep the last one
        rest_ids, rest_mask = left_pad([r[shared:] for r in rows], self.source.pad_id, self.source.device)
        b = len(rows)
        mask = torch.cat([torch.ones(b, shared, dtype=rest_mask.dtype, device=rest_mask.device), rest_mask], 1)
        out = self.source.model(
            input_ids=rest_ids, attention_mask=mask, position_ids=positions_from_mask(mask)[:, shared:],
            past_key_values=cached.cache(b, self.source.model.config), output_hidden_states=True,
        )
        hidden = torch.cat([cached.hidden.expand(b, -1, -1), out.hidden_states[self.source_layer]], 1)
        return hidden, mask

    def hidden_rows(self, prompts: Sequence[Prompt]) -> list[torch.Tensor]:
        """Each prompt's source hidden states on its real tokens only (``t_i d``)."""
        h, mask = self.source_hidden(prompts)
        return [h[i][mask[i].bool()] for i in range(h.shape[0])]

    # -- target side ---------------------------------------------------------------------------------

    def soft_tokens(
        self, prompts: Sequence[Prompt], seeds: torch.Tensor | None = None,
        hidden: tuple[torch.Tensor, torch.Tensor] | None = None, examples: Sequence[Example] | None = None,
    ) -> torch.Tensor:
        """The translator's soft tokens for ``prompts`` (``b k d_tgt``, in the translator's dtype)."""
        h, mask = hidden if hidden is not None else self.source_hidden(prompts, examples)
        param = next(self.translator.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        with blame("translator", self.translator.name, self.translator):
            return self.translator(h.to(dtype), mask, seeds=seeds)

    def bridged_inputs(
        self, soft: torch.Tensor, prompts: Sequence[Prompt], with_answer: bool,
        modes: Sequence[InjectionMode] | None = None,
        answers: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None,
    ) -> TargetInputs:
        """The target's inputs for the bridged system; ``with_answer`` adds the supervised answer.

        ``modes`` gives each row its own injection mode (the curriculum mixes ``soft_plus_text`` rows
        into a ``soft_only`` run); by default every row uses the recipe's. ``answers`` replaces each row's
        answer by ``(context, supervised)`` token ids: the context read, the rest supervised.
        """
        texts = [self.target_encoder.target_text(p, with_answer) for p in prompts]
        if answers is not None:
            texts = [t.with_answer(supervised, context) for t, (context, supervised) in zip(texts, answers, strict=True)]
        soft = soft.to(self.target.dtype)
        modes = modes or [self.injection] * len(texts)
        rows = []
        for mode, text in zip(modes, texts, strict=True):
            with blame("injection mode", mode.name, mode):
                rows.append(mode.segments(text))
        return assemble(rows, soft, self.target.embed, self.target.pad_id)

    def text_inputs(self, model: FrozenModel, rows: Sequence[Sequence[int]]) -> TargetInputs:
        """Plain-text inputs (baselines), laid out by the same function as the bridged ones."""
        return assemble([[Text(list(r))] for r in rows], None, model.embed, model.pad_id)
