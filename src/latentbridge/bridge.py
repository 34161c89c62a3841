"""The bridge: frozen source -> translator -> injection -> frozen target, one path for training and evaluation.

:class:`Bridge` owns the frozen models, their prompt encoders, the translator and the injection
mode. Training (:mod:`latentbridge.runner`) and evaluation (:mod:`latentbridge.eval.harness`) both
build the target's inputs with :meth:`Bridge.bridged_inputs`, so what the target reads at training
time is exactly what it reads at test time (minus the answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from .encoding import PromptEncoder
from .injection import InjectionMode
from .layout import TargetInputs, Text, assemble, positions_from_mask
from .models import FrozenModel
from .registry import blame
from .task import Example, Prompt
from .translator import Translator


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows -> left-padded ``b L`` ids and attention mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.as_tensor(list(row), dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def pad_hidden(rows: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example hidden states (``t_i d``) -> left-padded ``b t d`` (zeros) and mask ``b t``."""
    width = max(r.shape[0] for r in rows)
    h = rows[0].new_zeros(len(rows), width, rows[0].shape[1])
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        h[i, width - row.shape[0] :] = row
        mask[i, width - row.shape[0] :] = 1
    return h.to(device), mask.to(device)


MIN_SHARED_PREFIX = 32  # tokens: below this, reusing a prefix's key/value cache is not worth it


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every row shares, leaving each row at least one token of its own."""
    shortest = min(len(r) for r in rows)
    n = 0
    while n < shortest - 1 and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


@dataclass
class PrefixState:
    """A shared prefix run once: its key/value cache and its hidden states at the chosen layer."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    hidden: torch.Tensor  # 1 P d

    @classmethod
    def compute(cls, model: Any, prefix: Sequence[int], layer: int, device: torch.device) -> PrefixState:
        ids = torch.tensor([list(prefix)], device=device)
        out = model(input_ids=ids, position_ids=torch.arange(len(prefix), device=device)[None],
                    use_cache=True, output_hidden_states=True)
        kv = [(lay.keys, lay.values) for lay in out.past_key_values.layers]
        return cls(kv, out.hidden_states[layer])

    def cache(self, b: int, config: Any) -> DynamicCache:
        """A fresh cache holding the prefix for ``b`` rows (the model appends to it in place)."""
        data = [(k.expand(b, -1, -1, -1).contiguous(), v.expand(b, -1, -1, -1).contiguous()) for k, v in self.kv]
        return DynamicCache(ddp_cache_data=data, config=config)


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
    ) -> TargetInputs:
        """The target's inputs for the bridged system; ``with_answer`` adds the supervised answer.

        ``modes`` gives each row its own injection mode (the curriculum mixes ``soft_plus_text`` rows
        into a ``soft_only`` run); by default every row uses the recipe's.
        """
        texts = [self.target_encoder.target_text(p, with_answer) for p in prompts]
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
