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

from collections.abc import Sequence
from typing import Any

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
