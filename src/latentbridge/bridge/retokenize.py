"""The C2C authors' token alignment: the sharer reads the receiver's tokens, each re-encoded.

thu-nics/C2C (``rosetta/model/aligner.py``, ``align_tokens``): each receiver token is decoded alone and
re-encoded with the sharer's tokenizer (no special tokens); one token is kept, the ``first`` or the
``longest`` (by decoded length; the earliest on a tie); a text that encodes to nothing becomes the sharer's
unknown token (or id 0). A special token maps to its counterpart (BOS to BOS, EOS to EOS, pad to pad,
unknown to unknown), else to the sharer's token of the same spelling, else to unknown (or 0). The result
has one sharer token per receiver token, so the sharer runs at the receiver's positions and position ``i``
of one cache is fused with position ``i`` of the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from latentbridge.errors import LatentBridgeError

_ROLES = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")


def _fallback(sharer: Any) -> int:
    return sharer.unk_token_id if sharer.unk_token_id is not None else 0


def _special(receiver: Any, sharer: Any, token_id: int) -> int:
    for role in _ROLES:
        if getattr(receiver, role) == token_id and getattr(sharer, role) is not None:
            return int(getattr(sharer, role))
    spelled = sharer.convert_tokens_to_ids(receiver.convert_ids_to_tokens(token_id))
    if spelled is not None and spelled != sharer.unk_token_id:
        return int(spelled)
    return _fallback(sharer)


def _one(receiver: Any, sharer: Any, token_id: int, strategy: str, special: set[int]) -> int:
    if token_id in special:
        return _special(receiver, sharer, token_id)
    text = receiver.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    encoded = sharer(text, add_special_tokens=False)["input_ids"]
    if not encoded:
        return _fallback(sharer)
    if len(encoded) == 1 or strategy == "first":
        return int(encoded[0])
    lengths = [len(sharer.decode([t], skip_special_tokens=False, clean_up_tokenization_spaces=False)) for t in encoded]
    return int(encoded[lengths.index(max(lengths))])


def retokenize(receiver: Any, sharer: Any, ids: Sequence[int], strategy: str = "first",
               memo: dict[int, int] | None = None) -> list[int]:
    """One sharer token id per receiver token id of ``ids`` (see the module). ``memo`` (receiver id ->
    sharer id, for this pair and strategy) keeps what was mapped for the next call: the mapping is per
    token, and training maps the same tokens at every step."""
    if strategy not in ("first", "longest"):
        raise ValueError(f"alignment strategy must be 'first' or 'longest', not {strategy!r}")
    memo = {} if memo is None else memo
    special: set[int] | None = None
    out = []
    for token_id in ids:
        if token_id not in memo:
            special = set(receiver.all_special_ids) if special is None else special
            memo[token_id] = _one(receiver, sharer, token_id, strategy, special)
        out.append(memo[token_id])
    return out


@dataclass(frozen=True)
class Sections:
    """One row aligned by chat sections, as the C2C authors' ``align_chat_messages`` aligns a templated
    conversation: the sequence alternates template and message sections (``template`` lengths: one more than
    the message sections, the first and last possibly empty). Each model keeps its own template tokens, and a
    template section takes the longer of the two models' lengths (the shorter padded at its end); in a message
    section the sharer reads the receiver's tokens re-encoded, one for one. Positions count the padding: both
    models' tokens sit at the positions of the padded sequence (here without the pad tokens themselves, which
    the authors mask out)."""

    ids: list[int]  # the sharer's row: its own template tokens, the receiver's message tokens re-encoded
    positions: list[int]  # the sharer's positions
    template: list[int]  # the sharer's template section lengths
    message_slots: list[int]  # the sharer row's index of each message token, in order
    received: list[int]  # the receiver row's index of each message token, in the same order


def runs(flags: Sequence[bool]) -> tuple[list[int], list[int]]:
    """A row's template and message section lengths (alternating, template first and last, maybe empty)."""
    template, message = [0], []
    for i, flag in enumerate(flags):
        if flag:
            if i == 0 or not flags[i - 1]:
                message.append(0)
            message[-1] += 1
        else:
            if i > 0 and flags[i - 1]:
                template.append(0)
            template[-1] += 1
    if flags and flags[-1]:
        template.append(0)
    return template, message


def fused_end(flags: Sequence[bool]) -> int:
    """Under chat sections, where the part of a row that c2c fuses ends: after the last message section that is
    not the row's last section. The authors run a row section by section, fusing each message section's cache
    before the next reads it; the last section (the template's closing, or a cue after it) is the input, read
    with the fused cache and never fused. A row without such a section: before its last token."""
    template, message = runs(flags)
    ends, cursor = [], 0
    for before, length in zip(template, message, strict=False):  # each message section's end
        cursor += before + length
        ends.append(cursor)
    if template[-1] == 0:  # the row ends in a message section: that one is the input
        ends = ends[:-1]
    return ends[-1] if ends else len(flags) - 1


def aligned_positions(flags: Sequence[bool], other_template: Sequence[int]) -> tuple[list[int], int]:
    """Positions of a row's tokens (``flags``: True on message tokens) in the padded sequence it shares with a
    row of ``other_template`` template section lengths (a missing section counts as empty), and that
    sequence's length (where what follows it, a response, starts)."""
    template, message = runs(flags)
    positions, cursor = [], 0
    for i, length in enumerate(template):
        positions += range(cursor, cursor + length)
        cursor += max(length, other_template[i] if i < len(other_template) else 0)
        if i < len(message):
            positions += range(cursor, cursor + message[i])
            cursor += message[i]
    return positions, cursor


def align_sections(receiver_ids: Sequence[int], receiver_flags: Sequence[bool], sharer_ids: Sequence[int],
                   sharer_flags: Sequence[bool], reencode: Callable[[list[int]], list[int]]) -> Sections:
    """The sharer's row for a receiver row (see :class:`Sections`); ``reencode``: receiver ids -> sharer ids,
    one each (:func:`retokenize`). Both rows must have as many message sections."""
    r_template, r_message = runs(receiver_flags)
    s_template, s_message = runs(sharer_flags)
    if len(r_message) != len(s_message):
        raise LatentBridgeError(f"c2c chat alignment: the receiver's template splits the prompt into {len(r_message)} "
                                f"message sections, the sharer's into {len(s_message)} (chat_alignment: reencode "
                                "reads the receiver's template tokens re-encoded instead)")
    received = reencode([t for t, f in zip(receiver_ids, receiver_flags, strict=True) if f])
    ids, slots, at, taken = [], [], 0, 0
    for i, length in enumerate(s_template):
        ids += sharer_ids[at : at + length]
        at += length
        if i < len(s_message):
            n = r_message[i]
            slots += range(len(ids), len(ids) + n)
            ids += received[taken : taken + n]
            taken += n
            at += s_message[i]
    flags = [False] * len(ids)
    for slot in slots:
        flags[slot] = True
    received_at = [i for i, f in enumerate(receiver_flags) if f]
    return Sections(ids, aligned_positions(flags, r_template)[0], s_template, slots, received_at)


def section_offsets(sections: Sections, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The character span of each token of the sharer's row (``spans``: the receiver row's): a message token
    has its receiver token's, a template token none."""
    out = [(0, 0)] * len(sections.ids)
    for slot, at in zip(sections.message_slots, sections.received, strict=True):
        out[slot] = tuple(spans[at])
    return out


def share_vocabulary(receiver: Any, sharer: Any) -> bool:
    """Whether two tokenizers have one vocabulary (their tokens apart from the added ones, with the same ids):
    the pairs for which the C2C authors' recipes leave alignment off (``is_do_alignment: false``)."""
    vocab = [getattr(t, "backend_tokenizer", None) for t in (receiver, sharer)]
    return None not in vocab and vocab[0].get_vocab(with_added_tokens=False) == vocab[1].get_vocab(with_added_tokens=False)


def by_sections(bridge: Any, setting: str) -> bool:
    """Whether c2c's ``chat_alignment`` ``setting`` aligns this bridge's prompts by chat sections (``auto``: the
    vocabularies compared once per bridge)."""
    if bridge.target_encoder.chat is None or setting == "reencode":
        return False
    if setting == "sections":
        return True
    if bridge._shares_vocabulary is None:
        bridge._shares_vocabulary = share_vocabulary(bridge.target.tokenizer, bridge.source.tokenizer)
    return not bridge._shares_vocabulary


def sharer_rows(bridge: Any, prompts: Sequence[Any], strategy: str, memo: dict[int, int],
                sections: bool) -> tuple[list[list[int]], list[Sections] | None]:
    """The rows the sharer reads for ``prompts`` under c2c's alignment: the receiver's prompt tokens re-encoded,
    or (``sections``) its own template around the receiver's message tokens re-encoded (:func:`align_sections`,
    the rows' :class:`Sections` beside them)."""
    target, source = bridge.target_encoder, bridge.source_encoder

    def reencode(ids: list[int]) -> list[int]:
        return retokenize(bridge.target.tokenizer, bridge.source.tokenizer, ids, strategy, memo)

    if not sections:
        return [reencode(target.prompt_ids(p)) for p in prompts], None
    aligned = [align_sections(target.prompt_ids(p), target.message_flags(p), source.prompt_ids(p),
                              source.message_flags(p), reencode) for p in prompts]
    return [s.ids for s in aligned], aligned
