"""The bridge: frozen source -> translator -> injection -> frozen target, one path for training and evaluation.

:class:`Bridge` owns the frozen models, their prompt encoders, the translator and the injection
mode. Training (:mod:`latentbridge.train.runner`) and evaluation (:mod:`latentbridge.eval.harness`) both
build the target's inputs with :meth:`Bridge.bridged_inputs`, so what the target reads at training
time is exactly what it reads at test time (minus the answer). The translator's output is a message
(:mod:`latentbridge.api.messages`): soft tokens are laid out by :func:`~latentbridge.bridge.layout.assemble`,
key/value messages by :mod:`latentbridge.bridge.kv`, a plugin's own kind by its ``target_inputs``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from latentbridge.api.injection import InjectionMode
from latentbridge.api.messages import (
    ActivationPatch,
    KVFusion,
    KVPrefix,
    KVShare,
    Message,
    SoftTokens,
    SourceStates,
)
from latentbridge.api.segments import Soft, TargetInputs, Text
from latentbridge.api.task import Example, Prompt
from latentbridge.api.translator import Translator
from latentbridge.bridge.context import context_tokens, cut_after_context, cut_is_exact
from latentbridge.bridge.encoding import PromptEncoder
from latentbridge.bridge.kv import kv_fusion_inputs, kv_prefix_inputs, kv_share_inputs
from latentbridge.bridge.layout import assemble, left_pad, pad_hidden, positions_from_mask, split_cached
from latentbridge.bridge.lead import LeadCache
from latentbridge.bridge.models import FrozenModel, cache_of, with_cache
from latentbridge.bridge.patch import activation_inputs
from latentbridge.bridge.prefix import MIN_SHARED_PREFIX, PrefixState, cache_pass, common_prefix, rest_pass
from latentbridge.bridge.response import ResponseSource
from latentbridge.bridge.retokenize import by_sections, retokenize, section_offsets, sharer_rows
from latentbridge.bridge.solutions import relay_continuation
from latentbridge.errors import LatentBridgeError
from latentbridge.nn.rope import rope_tables
from latentbridge.registry.blame import blame


class Layouts:
    """How the target reads each built-in message kind (:class:`latentbridge.api.messages.Layouts`): what a
    kind's :meth:`~latentbridge.api.messages.Message.target_inputs` calls, a plugin's kind included, with
    ``bridge.layout``. ``rows`` are the injection mode's segments per row."""

    def __init__(self, bridge: Bridge):
        self.bridge = bridge

    def assemble(self, rows: Sequence[Sequence[Any]], soft: torch.Tensor | None = None) -> TargetInputs:
        """``rows`` left-padded, ``soft`` (``b k d``, moved to the target) at each row's ``Soft()``."""
        target = self.bridge.target
        if soft is not None:
            soft = soft.to(device=target.device, dtype=target.dtype)
        return assemble(rows, soft, target.embed, target.pad_id)

    def soft_tokens(self, message: SoftTokens, rows: Sequence[Sequence[Any]]) -> TargetInputs:
        split = split_cached(rows)
        if split is None:
            return self.assemble(rows, message.tokens)
        return self.after_lead(*split, message.tokens)

    def after_lead(self, leads: Sequence[Sequence[int]], rows: Sequence[Sequence[Any]],
                   soft: torch.Tensor | None = None) -> TargetInputs:
        """``rows`` after the target's cache of each row's lead (:meth:`LeadCache.after`)."""
        return self.bridge.leads.after(self.bridge.target, leads, rows, soft)

    def lead_cache(self, leads: Sequence[Sequence[int]]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """The target's keys and values of each row's lead and their mask (:meth:`LeadCache.kv`)."""
        return self.bridge.leads.kv(self.bridge.target, leads)

    def kv_prefix(self, message: KVPrefix, rows: Sequence[Sequence[Any]]) -> TargetInputs:
        split = split_cached(rows)  # a cached lead right before the message (a header) is run once per batch
        right_before = split is not None and all(rest and isinstance(rest[0], Soft) for rest in split[1])
        own = self.lead_cache(split[0]) if right_before else None
        return kv_prefix_inputs(self.bridge.target, message, rows, own)

    def kv_fusion(self, message: KVFusion, rows: Sequence[Sequence[Any]], texts: Sequence[Any],
                  prompts: Sequence[Prompt]) -> TargetInputs:
        bridge, response = self.bridge, None
        if message.response is not None:  # the sharer reads the response tokens re-encoded, as it read the prompt
            memo = bridge._retokenized.setdefault(message.response, {})
            response = ResponseSource(bridge.source, lambda ids: retokenize(
                bridge.target.tokenizer, bridge.source.tokenizer, ids, message.response, memo))
        return kv_fusion_inputs(bridge.target, bridge.target_encoder, message, rows, texts, prompts, response)

    def kv_share(self, message: KVShare, rows: Sequence[Sequence[Any]]) -> TargetInputs:
        return kv_share_inputs(self.bridge.target, message, rows)

    def activation(self, message: ActivationPatch, rows: Sequence[Sequence[Any]], texts: Sequence[Any]) -> TargetInputs:
        return activation_inputs(self.bridge.target, message, rows, texts)


@dataclass
class Bridge:
    source: FrozenModel
    target: FrozenModel
    translator: Translator
    injection: InjectionMode
    source_layer: int
    source_cache: Any = None  # a SourceCache, when the recipe turns the cache on
    chat_template: bool = False  # each model reads its prompts through its own chat template
    chat_kwargs: dict[str, Any] | None = None  # task.chat_template_kwargs: the templates' variables
    solutions: Any = None  # a SourceSolutions with source.view 'generation': the source reads its own solution too
    through_answer: bool = False  # with solutions: the solution's '####' line is read too
    source_layers: list[int] | None = None  # models.source_layers: more layers for a translator that reads them
    # with solutions: a prompt solved now is read from the states its solving computed (False: a second pass)
    reuse_solving_states: bool = True

    def __post_init__(self) -> None:
        self.source_encoder = PromptEncoder(self.source.tokenizer, self.chat_template, self.source.name, self.chat_kwargs)
        self.target_encoder = PromptEncoder(self.target.tokenizer, self.chat_template, self.target.name, self.chat_kwargs)
        self._prefixes: dict[tuple[int, ...], PrefixState] = {}
        self.leads = LeadCache()  # the target's cached lead (a shared few-shot header), run once
        self._retokenized: dict[str, dict[int, int]] = {}  # c2c's alignment: target token -> source token
        self._shares_vocabulary: bool | None = None  # c2c's chat_alignment auto: found on first use (retokenize.py)

    # -- source side ---------------------------------------------------------------------------------

    def source_rows(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """What the source reads: its special prefix and the prompt (header, question, cue), no answer; with
        the ``generation`` view, followed by its own solution (cut as the text relay cuts it)."""
        prompts = [p.for_source for p in prompts]  # a context split's source reads the context too
        if self.solutions is None:
            return [self.source_encoder.prompt_ids(p) for p in prompts]
        solved = self.solutions.get(prompts)
        return [self.source_encoder.continued_ids(p, relay_continuation(p, s, self.through_answer))
                for p, s in zip(prompts, solved, strict=True)]

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
        shared = self._shared_prefix(rows, prompts)
        # ``[prefix][pad][rest]``: a sliding window is measured in positions (bridge/windows.py), not slots
        if shared >= MIN_SHARED_PREFIX:
            return self._hidden_with_prefix(rows, shared)
        ids, mask = left_pad(rows, self.source.pad_id, self.source.device)
        out = self.source.model(
            input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), output_hidden_states=True,
            logits_to_keep=1,  # only the hidden states are read: no full-vocabulary logits per position
        )
        return out.hidden_states[self.source_layer], mask

    def _shared_prefix(self, rows: Sequence[Sequence[int]], prompts: Sequence[Prompt]) -> int:
        """How many leading tokens the rows share with a prefix whose cache can be reused: each other's, for
        several rows; for one row (a query at batch 1), the prefix the source last ran, else the row's
        own few-shot header (its special prefix and the header's tokens), so the next query reuses it."""
        if len(rows) > 1:
            return common_prefix(rows)
        row = tuple(rows[0])
        for prefix in self._prefixes:
            if len(prefix) < len(row) and row[: len(prefix)] == prefix:
                return len(prefix)
        prompt = prompts[0].for_source
        if len(prompt.header) < MIN_SHARED_PREFIX:  # fewer characters than the tokens it would take
            return 0
        text = self.source_encoder.target_text(prompt, with_answer=False)
        inside = sum(1 for _, end in self.source_encoder.offsets(prompt) if 0 < end <= len(prompt.header))
        header = list(text.prefix) + list(text.prompt)[:inside]
        return common_prefix([list(row), header + [-1]])  # the row's tokens as far as they are the header's

    def _prefix_state(self, prefix: tuple[int, ...]) -> PrefixState:
        if prefix not in self._prefixes:  # the header changes rarely: keep the last one
            self._prefixes = {prefix: PrefixState.compute(self.source.model, prefix, self.source_layer, self.source.device)}
        return self._prefixes[prefix]

    def _hidden_with_prefix(self, rows: Sequence[Sequence[int]], shared: int) -> tuple[torch.Tensor, torch.Tensor]:
        cached = self._prefix_state(tuple(rows[0][:shared]))
        out, _, mask = rest_pass(self.source.model, rows, shared, cached, self.source.pad_id, self.source.device)
        return torch.cat([cached.hidden.expand(len(rows), -1, -1), out.hidden_states[self.source_layer]], 1), mask

    def hidden_rows(self, prompts: Sequence[Prompt]) -> list[torch.Tensor]:
        """Each prompt's source hidden states on its real tokens only (``t_i d``)."""
        h, mask = self.source_hidden(prompts)
        return [h[i][mask[i].bool()] for i in range(h.shape[0])]

    @torch.no_grad()
    def source_states(self, prompts: Sequence[Prompt], examples: Sequence[Example] | None = None) -> SourceStates:
        """What the translator reads: the chosen layer's states; with ``models.source_layers``, those layers
        too; for a translator that reads the cache (``reads_cache``), the source's key/value cache of the
        prompt and its token offsets (of each row up to its context's last token, for a translator that reads
        the context only: ``reads_context_only``, where :func:`cut_is_exact`).

        With the ``generation`` view, prompts whose solutions the source writes now (new questions; not the
        cached train, dev and test items) are read from the states the source computed while writing them:
        no second source pass over prompt + solution."""
        cache = self.translator.reads_cache
        if (self.solutions is not None and self.reuse_solving_states and not cache
                and not (self.source_cache is not None and examples is not None) and not self.solutions.is_known(prompts)):
            kept = self._states_while_solving(prompts)
            if kept is not None:
                return kept
        if not cache and not self.source_layers:
            return SourceStates(*self.source_hidden(prompts, examples))
        # a translator aligned as the C2C authors align: the source reads the target's tokens, re-encoded
        strategy = getattr(self.translator, "retokenize", None) if cache else None
        aligned = None  # with chat templates, c2c's sections: the sharer's own template, positions that count padding
        offsets = None  # each row's token spans, where its row was cut after the context
        if strategy:
            sections = by_sections(self, getattr(self.translator, "chat_alignment", "reencode"))
            memo = self._retokenized.setdefault(strategy, {})  # per strategy: the pair is the bridge's
            rows, aligned = sharer_rows(self, prompts, strategy, memo, sections)
        else:
            rows = self.source_rows(prompts)  # one plain forward pass gives every layer and the cache
            if (cache and self.translator.reads_context_only and self.solutions is None
                    and cut_is_exact(self.source.model)):
                # its message reads the cache at the context's tokens only, which nothing after them changes
                read = [p.for_source for p in prompts]
                spans = self._row_offsets(read, self.source_encoder)
                rows = cut_after_context(rows, read, spans)
                offsets = [s[: len(row)] for s, row in zip(spans, rows, strict=True)]
        shared = self._shared_prefix(rows, prompts) if cache and aligned is None and not self.source_layers else 0
        if shared >= MIN_SHARED_PREFIX:  # a shared header (the few-shot exemplars) run once, kept between batches
            state = self._prefix_state(tuple(rows[0][:shared]))
            hidden, mask, kv = cache_pass(self.source.model, rows, shared, state, self.source.pad_id, self.source.device,
                                          self.source_layer)
            states = SourceStates(hidden, mask)
            self._read_cache(states, prompts, kv, on_target_tokens=bool(strategy), offsets=offsets)
            return states
        ids, mask = left_pad(rows, self.source.pad_id, self.source.device)
        positions = positions_from_mask(mask) if aligned is None else \
            left_pad([s.positions for s in aligned], 0, self.source.device)[0]
        # a plain DynamicCache keeps every position of every layer: one built from the config would keep only
        # the last window - 1 positions of a sliding-window layer (Mistral with a window, Gemma-2/3)
        kept = with_cache(self.source.model, DynamicCache()) if cache else {"use_cache": False}
        out = self.source.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                output_hidden_states=True, logits_to_keep=1, **kept)
        states = SourceStates(out.hidden_states[self.source_layer], mask,
                              layers=[out.hidden_states[i] for i in self.source_layers or ()])
        if cache:
            self._read_cache(states, prompts, [(layer.keys, layer.values) for layer in cache_of(out).layers],
                             on_target_tokens=bool(strategy), offsets=offsets)
            if aligned is not None:
                states.sections, states.positions = aligned, positions
                states.offsets = [section_offsets(s, spans) for s, spans in zip(aligned, states.offsets, strict=True)]
        return states

    @staticmethod
    def _row_offsets(read: Sequence[Prompt], encoder: PromptEncoder) -> list[list[tuple[int, int]]]:
        """Each row's token spans in its prompt's text: ``(0, 0)`` for the special prefix, then the prompt's."""
        return [[(0, 0)] * len(encoder.target_text(p).prefix) + encoder.offsets(p) for p in read]

    def _read_cache(self, states: SourceStates, prompts: Sequence[Prompt],
                    kv: list[tuple[torch.Tensor, torch.Tensor]], on_target_tokens: bool = False,
                    offsets: list[list[tuple[int, int]]] | None = None) -> None:
        """Fill ``states``' cache fields: ``kv`` (every position the source read) and what locates it (with
        ``on_target_tokens``, the source read the target's tokens: each has the target token's span;
        ``offsets``: the rows' spans where they were cut after the context)."""
        states.kv = kv
        if any(k.shape[2] != states.mask.shape[1] for k, _ in states.kv):
            raise LatentBridgeError(f"the source's cache of {self.source.name} does not hold every position it "
                                    "read (a sliding-window layer dropped some): a cache reader needs them all")
        # the special prefix as the row has it (with a chat template: cut from the rendered prompt)
        read = [p.for_source for p in prompts]
        encoder = self.target_encoder if on_target_tokens else self.source_encoder
        states.offsets = offsets if offsets is not None else self._row_offsets(read, encoder)
        states.text = [p.text for p in read]
        states.positions = positions_from_mask(states.mask)
        source = self.source.model
        states.rope = lambda layer, at: rope_tables(source, layer, at, states.kv[layer][0])
        if any(p.context_span is not None for p in read):
            states.context = context_tokens(read, states.offsets, states.mask)

    def _states_while_solving(self, prompts: Sequence[Prompt]) -> SourceStates | None:
        """The source solves ``prompts`` and keeps the states it computes; they are what
        :meth:`source_states` would compute from the rows it reads (prompt + solution cut as the relay cuts
        it), laid out the same way. A row whose tokens differ from those the source generated (its cut
        text re-tokenizes otherwise; with ``through_answer``, the line end the relay appends) or run past
        those it read gets a second pass of its own; None (the caller runs the source) where every row does.
        ``solutions.reused`` and ``solutions.second_passes`` count the rows of each kind."""
        layers = tuple(dict.fromkeys([self.source_layer, *(self.source_layers or [])]))
        _, solved = self.solutions.solve(prompts, keep=layers)
        rows = self.source_rows(prompts)
        got = [solved.get(self.solutions.digest(p)) for p in prompts]
        kept = [g is not None and g.ids[: len(r)] == r for g, r in zip(got, rows, strict=True)]
        self.solutions.reused += sum(kept)
        self.solutions.second_passes += len(kept) - sum(kept)
        if not any(kept):
            return None
        per_row = [{layer: g.hidden[layer][: len(r)] for layer in layers} if ok else None
                   for g, r, ok in zip(got, rows, kept, strict=True)]
        again = [i for i, ok in enumerate(kept) if not ok]
        if again:  # only those rows, through the source once more
            ids, mask = left_pad([rows[i] for i in again], self.source.pad_id, self.source.device)
            out = self.source.model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                                    output_hidden_states=True, use_cache=False, logits_to_keep=1)
            for j, i in enumerate(again):
                per_row[i] = {layer: out.hidden_states[layer][j][mask[j].bool()] for layer in layers}
        lengths = [len(r) for r in rows]
        width = max(lengths)
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.source.device)
        for i, n in enumerate(lengths):
            mask[i, width - n:] = 1

        def padded(layer: int) -> torch.Tensor:  # each row's ``t_i d``, left-padded: ``b t d``
            parts = [row[layer] for row in per_row]
            out = parts[0].new_zeros(len(parts), width, parts[0].shape[-1])
            for i, (part, n) in enumerate(zip(parts, lengths, strict=True)):
                out[i, width - n:] = part
            return out

        hidden = {layer: padded(layer) for layer in layers}
        return SourceStates(hidden[self.source_layer], mask, layers=[hidden[i] for i in self.source_layers or ()])

    # -- target side ---------------------------------------------------------------------------------

    def message(
        self, prompts: Sequence[Prompt], seeds: torch.Tensor | None = None,
        states: SourceStates | tuple[torch.Tensor, torch.Tensor] | None = None,
        examples: Sequence[Example] | None = None,
    ) -> Message:
        """The translator's message for ``prompts`` (from ``states`` when given, else the source's)."""
        if states is None:
            states = self.source_states(prompts, examples)
        elif isinstance(states, tuple):
            states = SourceStates(*states)
        param = next(self.translator.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        device = param.device if param is not None else self.target.device  # the source may sit elsewhere
        moved = dataclasses.replace(states, hidden=states.hidden.to(device=device, dtype=dtype),
                                    mask=states.mask.to(device),
                                    layers=[h.to(device=device, dtype=dtype) for h in states.layers])
        with blame("translator", self.translator.name, self.translator):
            message = self.translator.message(moved, seeds)
        if not isinstance(message, Message) or message.kind != self.translator.emits:
            raise LatentBridgeError(f"translator '{self.translator.name}' declares emits = "
                                    f"'{self.translator.emits}' but returned {type(message).__name__}")
        return message

    def soft_tokens(
        self, prompts: Sequence[Prompt], seeds: torch.Tensor | None = None,
        hidden: tuple[torch.Tensor, torch.Tensor] | None = None, examples: Sequence[Example] | None = None,
    ) -> torch.Tensor:
        """The translator's soft tokens for ``prompts`` (``b k d_tgt``, in the translator's dtype)."""
        message = self.message(prompts, seeds, hidden, examples)
        if not isinstance(message, SoftTokens):
            raise LatentBridgeError(f"translator '{self.translator.name}' emits {message.kind}, not soft tokens")
        return message.tokens

    def bridged_inputs(
        self, message: Message | torch.Tensor, prompts: Sequence[Prompt], with_answer: bool,
        modes: Sequence[InjectionMode] | None = None,
        answers: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None,
    ) -> TargetInputs:
        """The target's inputs for the bridged system; ``with_answer`` adds the supervised answer.

        ``message``: the translator's message (a soft-token tensor stands for :class:`SoftTokens`).
        ``modes`` gives each row its own injection mode (the curriculum mixes ``soft_plus_text`` rows
        into a ``soft_only`` run); by default every row uses the recipe's. ``answers`` replaces each row's
        answer by ``(context, supervised)`` token ids: the context read, the rest supervised.
        """
        if isinstance(message, torch.Tensor):
            message = SoftTokens(message)
        texts = [self.target_encoder.target_text(p, with_answer) for p in prompts]
        if answers is not None:
            texts = [t.with_answer(supervised, context) for t, (context, supervised) in zip(texts, answers, strict=True)]
        modes = modes or [self.injection] * len(texts)
        rows = []
        for mode, text in zip(modes, texts, strict=True):
            if not mode.takes(message.kind):
                raise LatentBridgeError(f"injection mode '{mode.name}' does not take a {message.kind} message "
                                        f"(it takes {', '.join(mode.accepts)})")
            with blame("injection mode", mode.name, mode):
                rows.append(mode.segments(text))
        return message.target_inputs(self, rows, texts, prompts)  # every kind lays itself out

    @property
    def layout(self) -> Layouts:
        """The layouts of the built-in message kinds, for any kind's :meth:`Message.target_inputs`."""
        return Layouts(self)

    def text_inputs(self, model: FrozenModel, rows: Sequence[Sequence[int]]) -> TargetInputs:
        """Plain-text inputs (baselines), laid out by the same function as the bridged ones."""
        return assemble([[Text(list(r))] for r in rows], None, model.embed, model.pad_id)
