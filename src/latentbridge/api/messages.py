"""Messages: what a translator hands the target.

Three kinds are built in, one layout path for each (``latentbridge.bridge.layout``), the same in training
and in generation:

- :class:`SoftTokens` — ``b k d_tgt`` vectors placed in the target's input embeddings (where the injection
  mode's ``Soft()`` segment is);
- :class:`KVPrefix` — ``k`` virtual tokens' keys and values at every target layer (deep prompt tuning):
  the target's attention reads them before the text, as if they were cached; with a ``mask``, rows of
  different lengths (``kv_translate``'s translated context), and with ``rotated=False`` keys before the
  target's rotary embedding, which the layout applies at the positions they take;
- :class:`KVFusion` — a change to the target's own key/value cache of the prompt, C2C-style: the target
  reads the prompt, its cache is fused with the source's aligned cache by the translator's fuser, and
  the answer (or generation) continues on the fused cache;
- :class:`KVShare` — the source's own key/value cache of what it read, in front of the target's text at a
  subset of the target's layers (KVComm); the other layers see none of its positions;
- :class:`ActivationPatch` — one vector per row written into the target's residual stream at one layer,
  at the prompt's last token (activation communication): the target reads its own prompt, and at that
  position the state entering the layer is replaced by, summed with or averaged with the vector.

Every kind, built-in or a plugin's, implements :meth:`Message.target_inputs` (what the target reads for it;
``bridge.layout``, :class:`Layouts`, lays out the built-in kinds and is there for a plugin's to reuse): the
core dispatches on no kind. An injection mode says which kinds it places (``InjectionMode.accepts``). ``nbytes`` reports a message's size (the summaries compare messages
by bytes). :class:`SourceStates` is what a translator reads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch


@dataclass
class SourceStates:
    """What the source computed for a batch, as a translator reads it.

    ``hidden``: ``b t d_src``, the chosen source layer (``models.source_layer``); ``mask``: ``b t`` (1 on
    real tokens; rows left-padded). ``layers``: with ``models.source_layers``, those layers' states,
    ``b t d_src`` each, in the order given (else empty). For a translator that reads the cache
    (``reads_cache``): ``kv``, per source layer the keys and values ``b kv_heads t head_dim`` as the
    source caches them; ``offsets``, per row, each real token's character span in ``text`` (special
    tokens ``(0, 0)``); ``text``, per row, the prompt text the source read; ``positions``, ``b t`` the
    position of each token (what its key was rotated at); ``rope(layer, positions)``, the source's rotary
    tables ``(cos, sin)`` at that layer (see :mod:`latentbridge.nn.rope`; None for a model without rotary
    positions); ``context``, in a context split (:class:`~latentbridge.api.task.ContextTask`), per row the
    ``[start, end)`` token indices of the context in the padded row (``(t, t)`` where it holds none);
    ``sections``, with chat templates and c2c's ``chat_alignment: sections``, per row how the source's row is
    aligned with the target's (:class:`latentbridge.bridge.retokenize.Sections`; ``positions`` then count the
    padding the alignment puts between sections). For a translator that reads the context only
    (``reads_context_only``) each row ends at its context's last token: ``hidden``, ``mask``, ``kv``,
    ``offsets`` and ``positions`` stop there, while ``text`` stays the whole prompt."""

    hidden: torch.Tensor
    mask: torch.Tensor
    layers: list[torch.Tensor] = field(default_factory=list)
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    offsets: list[list[tuple[int, int]]] | None = None
    text: list[str] | None = None
    positions: torch.Tensor | None = None
    rope: Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    context: list[tuple[int, int]] | None = None
    sections: list[Any] | None = None


class Layouts(Protocol):
    """The layouts of the built-in message kinds, as ``bridge.layout`` offers them to any kind's
    :meth:`Message.target_inputs` (``rows``: the injection mode's segments per row; each returns the
    target's ``TargetInputs``)."""

    def assemble(self, rows: Sequence[Sequence[Any]], soft: torch.Tensor | None = None) -> Any:
        """``rows`` left-padded (positions from the mask), ``soft`` (``b k d``) at each row's ``Soft()``."""

    def soft_tokens(self, message: SoftTokens, rows: Sequence[Sequence[Any]]) -> Any: ...

    def kv_prefix(self, message: KVPrefix, rows: Sequence[Sequence[Any]]) -> Any: ...

    def kv_fusion(self, message: KVFusion, rows: Sequence[Sequence[Any]], texts: Sequence[Any],
                  prompts: Sequence[Any]) -> Any: ...

    def kv_share(self, message: KVShare, rows: Sequence[Sequence[Any]]) -> Any: ...

    def activation(self, message: ActivationPatch, rows: Sequence[Sequence[Any]], texts: Sequence[Any]) -> Any: ...


LAYOUTS = ("soft_slot", "cache_prefix", "fused_prompt", "cache_before", "patched_prompt")
_KINDS: dict[str, type[Message]] = {}


def layout_of(kind: str) -> str | None:
    """The layout family of message kind ``kind`` (None for a kind no loaded module defines)."""
    cls = _KINDS.get(kind)
    return cls.layout if cls is not None else None


class Message:
    """What a translator emits for a batch. Subclasses set ``kind`` and implement :meth:`target_inputs`
    (how the target reads it: most kinds call one of ``bridge.layout``'s :class:`Layouts`), :meth:`nbytes`,
    :meth:`ntokens` and :meth:`rows`.

    ``layout`` names the family of segments it needs from an injection mode, so that a mode accepts a
    family rather than each kind by name: ``soft_slot`` (vectors at each ``Soft()``), ``cache_prefix``
    (a cache in the ``Soft()``'s place), ``fused_prompt`` (the target's own prompt, fused, no ``Soft()``),
    ``cache_before`` (a cache before the whole row, no ``Soft()``), ``patched_prompt`` (the prompt read
    as it is, the message acting inside the model). None: only modes that name the kind accept it."""

    kind: ClassVar[str]
    layout: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if isinstance(cls.__dict__.get("kind"), str):
            _KINDS[cls.kind] = cls
        if cls.layout is not None and cls.layout not in LAYOUTS:
            raise ValueError(f"message kind {cls.__name__}: layout must be one of {', '.join(LAYOUTS)}, "
                             f"not {cls.layout!r}")

    def vector_mask(self) -> torch.Tensor | None:
        """``b n``: which of :meth:`vectors`' positions are real, for a kind whose rows differ in length
        (None: every position of every row is). The statistics controls then draw per position."""
        return None

    def target_inputs(self, bridge: Any, rows: Sequence[Sequence[Any]], texts: Sequence[Any],
                      prompts: Sequence[Any]) -> Any:
        """The target's inputs (a ``TargetInputs``) for this message and the injection mode's ``rows``
        (segments per row; ``texts``, the rows' ``TargetText``; ``prompts``, their prompts). The core calls
        it for every kind, built-in or not; ``bridge.layout`` (:class:`Layouts`) lays out the built-in ones."""
        raise NotImplementedError(f"message kind '{self.kind}' has no layout: implement Message.target_inputs")

    def nbytes(self) -> list[int]:
        """The size of each row's message in bytes (what would cross a wire between two machines)."""
        raise NotImplementedError

    def rows(self) -> int:
        raise NotImplementedError

    def ntokens(self) -> list[int]:
        """Each row's message length in token positions (soft or virtual tokens; for a fusion, the source
        positions whose cache is sent)."""
        raise NotImplementedError

    def vectors(self) -> list[torch.Tensor]:
        """The message as groups of vectors, ``b n d`` each (soft tokens: one group; a kv prefix: each
        layer's keys and values, the heads side by side): what the controls that keep a message's
        statistics redraw or rotate (``covgauss``, ``randomrot``). A kind without them raises."""
        raise NotImplementedError(f"message kind '{self.kind}' does not expose its vectors")

    def with_vectors(self, groups: Sequence[torch.Tensor]) -> Message:
        """The same message with its :meth:`vectors` replaced by ``groups`` (same shapes)."""
        raise NotImplementedError(f"message kind '{self.kind}' does not expose its vectors")


def _bytes(t: torch.Tensor) -> int:
    return t.element_size()


@dataclass
class SoftTokens(Message):
    """``tokens``: ``b k d_tgt`` vectors in the target's input-embedding space."""

    tokens: torch.Tensor
    kind: ClassVar[str] = "soft_tokens"
    layout: ClassVar[str | None] = "soft_slot"

    def target_inputs(self, bridge: Any, rows: Sequence[Sequence[Any]], texts: Sequence[Any],
                      prompts: Sequence[Any]) -> Any:
        return bridge.layout.soft_tokens(self, rows)

    def nbytes(self) -> list[int]:
        b, k, d = self.tokens.shape
        return [k * d * _bytes(self.tokens)] * b

    def rows(self) -> int:
        return self.tokens.shape[0]

    def ntokens(self) -> list[int]:
        return [self.tokens.shape[1]] * self.rows()

    def vectors(self) -> list[torch.Tensor]:
        return [self.tokens]

    def with_vectors(self, groups: Sequence[torch.Tensor]) -> SoftTokens:
        (tokens,) = groups
        return SoftTokens(tokens.to(self.tokens.dtype))


@dataclass
class KVPrefix(Message):
    """``keys[l]``, ``values[l]``: ``b kv_heads k head_dim`` for every target layer ``l``, the keys as the
    target caches them (after its rotary embedding: the virtual tokens sit at fixed positions, right
    after the target's special prefix, so a learned key holds its rotation).

    ``mask`` (``b k``, rows left-padded): rows of different lengths, their real positions counted on from
    the special prefix (None: all ``k`` are real). ``rotated=False``: the keys are given before the
    target's rotary embedding, which the layout applies at the positions they take (a translated context
    sits where the target would have read it). ``layers``: the target layers that read the message (None:
    every layer); at the others its positions are masked out, and its bytes count these layers only."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor | None = None
    rotated: bool = True
    layers: list[int] | None = None
    kind: ClassVar[str] = "kv_prefix"
    layout: ClassVar[str | None] = "cache_prefix"

    def target_inputs(self, bridge: Any, rows: Sequence[Sequence[Any]], texts: Sequence[Any],
                      prompts: Sequence[Any]) -> Any:
        return bridge.layout.kv_prefix(self, rows)

    def read_by(self) -> list[int]:
        """The target layers that read the message."""
        return list(range(len(self.keys))) if self.layers is None else list(self.layers)

    def nbytes(self) -> list[int]:
        per_position = sum(self.keys[i].shape[1] * self.keys[i].shape[3] * _bytes(self.keys[i])
                           + self.values[i].shape[1] * self.values[i].shape[3] * _bytes(self.values[i])
                           for i in self.read_by())
        return [n * per_position for n in self.ntokens()]

    def rows(self) -> int:
        return self.keys[0].shape[0]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]

    def ntokens(self) -> list[int]:
        if self.mask is None:
            return [self.length] * self.rows()
        return [int(n) for n in self.mask.sum(1).tolist()]

    def vector_mask(self) -> torch.Tensor | None:
        return self.mask

    def vectors(self) -> list[torch.Tensor]:
        """Per layer, its keys then its values, ``b k (kv_heads head_dim)``."""
        return [t.transpose(1, 2).flatten(2) for pair in zip(self.keys, self.values, strict=True) for t in pair]

    def with_vectors(self, groups: Sequence[torch.Tensor]) -> KVPrefix:
        shaped = [g.reshape(t.shape[0], t.shape[2], t.shape[1], t.shape[3]).transpose(1, 2).to(t.dtype)
                  for g, t in zip(groups, [t for pair in zip(self.keys, self.values, strict=True) for t in pair],
                                  strict=True)]
        return KVPrefix(shaped[0::2], shaped[1::2], self.mask, self.rotated, self.layers)


# fuse(layer, receiver_keys, receiver_values, source_keys, source_values) -> fused keys, values; all
# ``b heads t head_dim`` (the source's at the receiver's positions, aligned)
Fuser = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# change(layer, which (0 keys, 1 values), delta b t D, mask b t) -> delta b t D: see KVFusion.with_deltas
DeltaMap = Callable[[int, int, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class KVFusion(Message):
    """The source's cache of its prompt, to be fused into the target's own. ``keys[l]``/``values[l]``:
    ``b kv_heads t_src head_dim`` per source layer; ``mask``: ``b t_src`` (1 on real source tokens);
    ``offsets``: per row, each real source token's character span in the prompt text (for the token
    alignment); ``fuse``: the translator's fuser; ``layers``: receiver layer -> source layer it reads
    (None: not fused); ``text``: per row, the prompt text the source read. ``fuse_special``: False leaves
    the receiver's special and template tokens (those without text) their own cache. ``one_to_one``: the
    source read the target's own tokens, one sharer token each, at the target's positions (c2c's
    ``alignment: retokenize``), so fused slot ``i`` reads source slot ``i`` (for another prompt's source, the
    controls, slots map proportionally).
    ``response``: None, or the strategy (``first``/``longest``) with which the sharer reads the receiver's
    response tokens re-encoded, so that each token from the prompt's last on is fused too, at every decoding
    step (the authors' ``include_response``)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    offsets: list[list[tuple[int, int]]]
    text: list[str]
    fuse: Fuser
    layers: list[int | None]
    extra: dict[str, Any] = field(default_factory=dict)
    fuse_special: bool = True
    one_to_one: bool = False
    response: str | None = None
    sections: list[Any] | None = None  # per row, the chat sections the source was aligned by (SourceStates.sections)
    kind: ClassVar[str] = "kv_fusion"
    layout: ClassVar[str | None] = "fused_prompt"

    def target_inputs(self, bridge: Any, rows: Sequence[Sequence[Any]], texts: Sequence[Any],
                      prompts: Sequence[Any]) -> Any:
        return bridge.layout.kv_fusion(self, rows, texts, prompts)

    def rows(self) -> int:
        return self.mask.shape[0]

    def ntokens(self) -> list[int]:
        return [int(n) for n in self.mask.sum(1).tolist()]

    def nbytes(self) -> list[int]:
        """The source cache of the fused layers over each row's real tokens: what the receiver gets."""
        used = sorted({s for s in self.layers if s is not None})
        per_token = sum(self.keys[s][0, :, 0].numel() * _bytes(self.keys[s]) * 2 for s in used)
        return [int(n) * per_token for n in self.mask.sum(1).tolist()]

    def with_deltas(self, change: DeltaMap) -> KVFusion:
        """The same message whose fused change to the target's cache passes through ``change``: per fused
        layer, ``change(layer, 0 for keys / 1 for values, delta b t D, mask b t)`` returns the delta the
        target gets (``D``: kv heads x head width; ``mask``: the fused prompt positions that are real)."""
        return dataclasses.replace(self, extra={**self.extra, "delta_map": change})



@dataclass
class ActivationPatch(Message):
    """``states``: ``b d_tgt``, one per row, combined at target layer ``layer`` (the state entering that
    decoder layer, ``hidden_states[layer]``) at the last token of the row's prompt by ``mode``: ``replace``
    (the row's vector), ``sum`` (state + vector) or ``mean`` ((state + vector) / 2)."""

    states: torch.Tensor
    layer: int
    mode: str = "replace"
    kind: ClassVar[str] = "activation"
    layout: ClassVar[str | None] = "patched_prompt"

    def target_inputs(self, bridge: Any, rows: Sequence[Sequence[Any]], texts: Sequence[Any],
                      prompts: Sequence[Any]) -> Any:
        return bridge.layout.activation(self, rows, texts)

    def rows(self) -> int:
        return self.states.shape[0]

    def ntokens(self) -> list[int]:
        return [1] * self.rows()

    def nbytes(self) -> list[int]:
        return [self.states.shape[1] * _bytes(self.states)] * self.rows()

    def vectors(self) -> list[torch.Tensor]:
        return [self.states[:, None, :]]

    def with_vectors(self, groups: Sequence[torch.Tensor]) -> ActivationPatch:
        (states,) = groups
        return ActivationPatch(states[:, 0].to(self.states.dtype), self.layer, self.mode)


@dataclass
class KVShare(Message):
    """The source's cache of what it read, shared with a target of the same architecture (KVComm).
    ``keys[l]``, ``values[l]``: ``b kv_heads t_src head_dim`` for every layer, as the source caches them
    (rotated at the source's own positions, which the target's text then follows); ``mask``: ``b t_src``
    (1 on real source tokens; rows left-padded); ``shared``: the target layers that read them (the others
    see none of these positions)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor
    shared: list[int]
    kind: ClassVar[str] = "kv_share"
    layout: ClassVar[str | None] = "cache_before"

    def rows(self) -> int:
        return self.mask.shape[0]

    def ntokens(self) -> list[int]:
        return [int(n) for n in self.mask.sum(1).tolist()]

    def nbytes(self) -> list[int]:
        """The shared layers' keys and values over each row's real tokens: what the target receives."""
        per_token = sum(self.keys[layer][0, :, 0].numel() * _bytes(self.keys[layer]) * 2 for layer in self.shared)
        return [n * per_token for n in self.ntokens()]

    def target_inputs(self, bridge: Any, rows: Sequence[Sequence[Any]], texts: Sequence[Any],
                      prompts: Sequence[Any]) -> Any:
        return bridge.layout.kv_share(self, rows)
