"""The C2C authors' ``align_chat_messages`` (thu-nics/C2C ``rosetta/model/aligner.py``), restated for tests from
their description, on token ids and section flags: both templated rows are split into alternating template
and message sections; a template section keeps each model's own tokens, the shorter padded at its end to the
longer; a message section holds the receiver's tokens and, for the sharer, their re-encodings, one for one.
Both padded rows share the positions ``0 .. n-1``; pads are masked out. (Their receiver is the "slm" side, the
sharer the "llm" side.)"""

from __future__ import annotations

PAD = -1


def sections(flags):
    """``[(is_message, start, end)]``, template sections only where non-empty (as their ``build_sections``)."""
    out, start = [], 0
    for i in range(1, len(flags) + 1):
        if i == len(flags) or flags[i] != flags[start]:
            out.append((bool(flags[start]), start, i))
            start = i
    return out


def align_chat(receiver_ids, receiver_flags, sharer_ids, sharer_flags, reencode):
    """The padded receiver row, the padded sharer row, and which slots are message tokens."""
    r_sections, s_sections = sections(receiver_flags), sections(sharer_flags)
    assert [m for m, _, _ in r_sections] == [m for m, _, _ in s_sections], "section mismatch"
    r_out, s_out, message = [], [], []
    for (is_message, rs, re), (_, ss, se) in zip(r_sections, s_sections, strict=True):
        if is_message:
            tokens = list(receiver_ids[rs:re])
            r_out += tokens
            s_out += reencode(tokens)
            message += [True] * len(tokens)
        else:
            n = max(re - rs, se - ss)
            r_out += list(receiver_ids[rs:re]) + [PAD] * (n - (re - rs))
            s_out += list(sharer_ids[ss:se]) + [PAD] * (n - (se - ss))
            message += [False] * n
    return r_out, s_out, message
