"""Property tests for the one path that builds the target's inputs: layout, masks, positions, labels."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentbridge.api.injection import TargetText
from latentbridge.api.segments import IGNORE_INDEX, Soft, Text
from latentbridge.bridge.layout import assemble, inject, positions_from_mask
from latentbridge.nn.resample import resample_weights
from latentbridge.registry.host import Registry

VOCAB, D, PAD = 50, 6, 0
token_ids = st.lists(st.integers(min_value=1, max_value=VOCAB - 1), min_size=0, max_size=7)


@st.composite
def target_texts(draw, with_answer=True):
    prompt = draw(token_ids.filter(len))
    start = draw(st.integers(0, len(prompt) - 1))
    end = draw(st.integers(start + 1, len(prompt)))
    answer = draw(token_ids.filter(len)) if with_answer else []
    return TargetText(
        prefix=draw(st.sampled_from([[], [1]])),
        prompt=prompt,
        question_span=(start, end),
        cue=draw(token_ids.filter(len)),
        answer=answer,
    )


def embedding() -> torch.nn.Embedding:
    torch.manual_seed(0)
    return torch.nn.Embedding(VOCAB, D)


def expected_row(mode: str, text: TargetText, k: int) -> list[tuple[str, int]]:
    """What each position should hold, independent of the implementation: ('soft', j) or ('text', id)."""
    soft = [("soft", j) for j in range(k)]
    prefix = [("text", i) for i in text.prefix]
    answer = [("answer", i) for i in text.answer]
    if mode == "soft_only":  # BOS (the attention sink) first, as the teacher reads it; then the soft tokens
        return prefix + soft + [("text", i) for i in text.cue] + answer
    return prefix + soft + [("text", i) for i in text.prompt] + answer


@pytest.mark.parametrize("mode", ["soft_only", "soft_plus_text"])
@settings(max_examples=60, deadline=None)
@given(data=st.data(), b=st.integers(1, 4), k=st.integers(1, 5))
def test_injection_layout(mode, data, b, k):
    registry = Registry.load(autoload=False)
    injection = registry.get("injection", mode).cls(registry.config_for("injection", mode))
    texts = [data.draw(target_texts(with_answer=data.draw(st.booleans()))) for _ in range(b)]
    soft = torch.randn(b, k, D)
    emb = embedding()
    out = inject(injection, soft, texts, emb, PAD)
    width = out.inputs_embeds.shape[1]
    assert out.inputs_embeds.shape == (b, width, D)
    for r, text in enumerate(texts):
        row = expected_row(mode, text, k)
        pad = width - len(row)
        # left padding: zeros first, then exactly the row's tokens
        assert out.attention_mask[r].tolist() == [0] * pad + [1] * len(row)
        # positions count real tokens only
        assert out.position_ids[r, pad:].tolist() == list(range(len(row)))
        for pos, (what, value) in enumerate(row, start=pad):
            vec = out.inputs_embeds[r, pos]
            if what == "soft":
                assert torch.equal(vec, soft[r, value])
                assert out.labels[r, pos] == IGNORE_INDEX
            else:
                assert torch.allclose(vec, emb.weight[value])
                assert out.labels[r, pos] == (value if what == "answer" else IGNORE_INDEX)
        assert (out.labels[r, :pad] == IGNORE_INDEX).all()


@settings(max_examples=40, deadline=None)
@given(
    question=st.lists(st.integers(30, VOCAB - 1), min_size=1, max_size=6),
    others=st.lists(st.integers(1, 29), min_size=1, max_size=6),
    k=st.integers(1, 4),
)
def test_soft_only_never_reads_the_question(question, others, k):
    """Question tokens come from ids 30+, everything else from 1..29: none of 30+ may reach the target."""
    registry = Registry.load(autoload=False)
    injection = registry.get("injection", "soft_only").cls(registry.config_for("injection", "soft_only"))
    assert injection.reads_question is False
    text = TargetText(prefix=[1], prompt=others + question, question_span=(len(others), len(others) + len(question)),
                      cue=others, answer=others)
    seen = [i for seg in injection.segments(text) if isinstance(seg, Text) for i in seg.ids]
    assert not set(seen) & set(question)
    soft_plus = registry.get("injection", "soft_plus_text").cls(registry.config_for("injection", "soft_plus_text"))
    seen_plus = [i for seg in soft_plus.segments(text) if isinstance(seg, Text) for i in seg.ids]
    assert set(question) <= set(seen_plus)  # the contrast: soft_plus_text does read it


@given(mask=st.lists(st.lists(st.booleans(), min_size=1, max_size=8), min_size=1, max_size=4).filter(
    lambda rows: len({len(r) for r in rows}) == 1))
def test_positions_from_mask_count_only_real_tokens(mask):
    m = torch.tensor(mask, dtype=torch.long)
    pos = positions_from_mask(m)
    for r, row in enumerate(mask):
        real = [p for p, keep in zip(pos[r].tolist(), row, strict=True) if keep]
        assert real == list(range(len(real)))


@given(n=st.integers(1, 40), k=st.integers(1, 40))
def test_resample_weights(n, k):
    w = resample_weights(n, k)
    assert w.shape == (n, k)
    assert torch.allclose(w.sum(1), torch.ones(n))
    assert (w.sum(0) > 0).all()  # every soft token is used
    assert (w >= 0).all()
    if n == k:
        assert torch.equal(w, torch.eye(n))


def test_assemble_adds_soft_on_add_soft_segments():
    emb = embedding()
    soft = torch.randn(1, 2, D)
    out = assemble([[Text([3, 4, 5, 6], add_soft=True)]], soft, emb, PAD)
    expected = emb(torch.tensor([3, 4, 5, 6])) + resample_weights(4, 2) @ soft[0]
    assert torch.allclose(out.inputs_embeds[0], expected)


def test_assemble_gradient_reaches_soft_tokens():
    emb = embedding()
    soft = torch.randn(2, 3, D, requires_grad=True)
    out = assemble([[Soft(), Text([1, 2])], [Soft(), Text([4])]], soft, emb, PAD)
    out.inputs_embeds.sum().backward()
    assert torch.equal(soft.grad, torch.ones_like(soft))


def test_assemble_rejects_empty_rows():
    with pytest.raises(ValueError, match="no tokens"):
        assemble([[Text([])]], None, embedding(), PAD)
