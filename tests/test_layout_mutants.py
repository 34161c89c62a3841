"""Exact checks of the layout code (src/latentbridge/bridge/layout.py) that the property tests in
test_layout.py leave open: the soft mask, the soft gain, the dtypes and devices of what the target reads,
the errors, and the padding helpers. Written against the surviving mutants of a mutation run
(benchmarks/mutation.md). The device checks use PyTorch's ``meta`` device: a tensor left on the CPU
shows up there without an accelerator.
"""

from __future__ import annotations

import re

import pytest
import torch

from latentbridge.api.injection import TargetText
from latentbridge.api.segments import IGNORE_INDEX, Soft, Text
from latentbridge.bridge.layout import assemble, inject, left_pad, pad_hidden, positions_from_mask
from latentbridge.errors import ShapeError
from latentbridge.nn.resample import resample_weights
from latentbridge.registry.host import Registry

VOCAB, D, PAD = 30, 4, 0
META = torch.device("meta")


def embedding(dtype=torch.float32, device=None) -> torch.nn.Embedding:
    torch.manual_seed(0)
    return torch.nn.Embedding(VOCAB, D, dtype=dtype, device=device)


ROWS = [
    [Soft(), Text([1]), Text([3, 4, 5], add_soft=True), Text([6, 7], supervised=True)],  # 2 + 1 + 3 + 2 = 8
    [Text([2, 3], add_soft=True, soft_gain=2.0), Soft(), Text([8], supervised=True)],  # 2 + 2 + 1 = 5, padded by 3
]


def test_positions_count_real_tokens_from_zero():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    positions = positions_from_mask(mask)
    assert positions.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert positions.dtype == torch.long


def test_soft_mask_marks_the_soft_and_the_added_positions_only():
    out = assemble(ROWS, torch.randn(2, 2, D), embedding(), PAD)
    assert out.soft_mask.dtype == torch.bool
    assert out.soft_mask.tolist() == [
        [True, True, False, True, True, True, False, False],
        [False, False, False, True, True, True, True, False],
    ]
    no_soft = assemble([[Text([1, 2]), Text([3], supervised=True)]], None, embedding(), PAD)
    assert no_soft.soft_mask is not None and no_soft.soft_mask.dtype == torch.bool
    assert no_soft.soft_mask.tolist() == [[False, False, False]]


def test_everything_but_the_soft_parts_is_the_text():
    emb = embedding()
    soft = torch.randn(2, 2, D)
    out = assemble(ROWS, soft, emb, PAD)
    e = emb.weight.detach()
    w3 = resample_weights(3, 2)
    w2 = resample_weights(2, 2)
    expected = [
        [soft[0, 0], soft[0, 1], e[1], *(e[[3, 4, 5]] + w3 @ soft[0]), e[6], e[7]],
        [e[PAD]] * 3 + [*(e[[2, 3]] + 2.0 * w2 @ soft[1]), soft[1, 0], soft[1, 1], e[8]],
    ]
    for r in range(2):
        torch.testing.assert_close(out.inputs_embeds[r].detach(), torch.stack(expected[r]))
    assert out.labels.tolist() == [[IGNORE_INDEX] * 6 + [6, 7], [IGNORE_INDEX] * 7 + [8]]
    assert out.attention_mask.tolist() == [[1] * 8, [0] * 3 + [1] * 5]
    assert out.position_ids.tolist() == [list(range(8)), [0, 0, 0, 0, 1, 2, 3, 4]]


@pytest.mark.parametrize("gain", [0.5, 2.0, 3.0])
def test_soft_gain_scales_the_added_soft_tokens(gain):
    emb = embedding()
    soft = torch.randn(1, 2, D)
    out = assemble([[Text([3, 4, 5, 6], add_soft=True, soft_gain=gain)]], soft, emb, PAD)
    expected = emb(torch.tensor([3, 4, 5, 6])) + gain * (resample_weights(4, 2) @ soft[0])
    torch.testing.assert_close(out.inputs_embeds[0], expected)


def test_the_target_reads_its_own_dtype_and_integer_masks():
    """Soft tokens in float64 (a translator in full precision) and a float32 target: the target reads
    float32; masks, positions and labels are integers, the soft mask boolean."""
    out = assemble(ROWS, torch.randn(2, 2, D, dtype=torch.float64), embedding(), PAD)
    assert out.inputs_embeds.dtype == torch.float32
    assert out.attention_mask.dtype == torch.long
    assert out.position_ids.dtype == torch.long
    assert out.labels.dtype == torch.long
    assert out.soft_mask.dtype == torch.bool
    half = assemble(ROWS, torch.randn(2, 2, D), embedding(torch.bfloat16), PAD)
    assert half.inputs_embeds.dtype == torch.bfloat16


def test_everything_the_target_reads_is_on_the_soft_tokens_device():
    out = assemble(ROWS, torch.randn(2, 2, D, device=META), embedding(device=META), PAD)
    for name in ("inputs_embeds", "attention_mask", "position_ids", "labels", "soft_mask"):
        assert getattr(out, name).device == META, name


def test_soft_segments_without_soft_tokens_are_refused():
    with pytest.raises(ValueError, match=r"^assemble: a Soft segment but no soft tokens were given$"):
        assemble([[Soft(), Text([1])]], None, embedding(), PAD)
    with pytest.raises(ValueError, match=r"^assemble: an add_soft segment but no soft tokens were given$"):
        assemble([[Text([1, 2], add_soft=True)]], None, embedding(), PAD)


def test_an_empty_row_is_refused():
    with pytest.raises(ValueError, match=r"^assemble: a row with no tokens$"):
        assemble([[Text([1])], [Text([])]], None, embedding(), PAD)


def test_soft_tokens_for_another_batch_are_refused():
    message = re.escape("soft tokens: shape (3, 2, 4) does not match (b k d): b=3 (expected 2)")
    with pytest.raises(ShapeError, match=f"^{message}$"):
        assemble(ROWS, torch.randn(3, 2, D), embedding(), PAD)
    with pytest.raises(ShapeError, match=r"^soft tokens: expected 3 dims \(b k d\), got shape \(2, 4\)$"):
        assemble(ROWS, torch.randn(2, D), embedding(), PAD)


def test_inject_names_the_injection_mode_when_the_batch_is_wrong():
    registry = Registry.load(autoload=False)
    mode = registry.get("injection", "soft_only").cls(registry.config_for("injection", "soft_only"))
    text = TargetText(prefix=[1], prompt=[2, 3, 4], question_span=(0, 2), cue=[4], answer=[5])
    message = re.escape("injection 'soft_only' soft tokens: shape (2, 2, 4) does not match (b k d): b=2 (expected 1)")
    with pytest.raises(ShapeError, match=f"^{message}$"):
        inject(mode, torch.randn(2, 2, D), [text], embedding(), PAD)
    with pytest.raises(ShapeError, match=r"^injection 'soft_only' soft tokens: expected 3 dims"):
        inject(mode, torch.randn(2, D), [text], embedding(), PAD)
    out = inject(mode, torch.randn(1, 2, D), [text], embedding(), PAD)
    assert out.labels.tolist() == [[IGNORE_INDEX] * 4 + [5]]  # soft, soft, prefix, cue, answer


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8], []], PAD, torch.device("cpu"))
    assert ids.tolist() == [[5, 6, 7], [PAD, PAD, 8], [PAD, PAD, PAD]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
    ids, mask = left_pad([[5, 6], [7]], 9, META)
    assert ids.device == mask.device == META


def test_pad_hidden():
    rows = [torch.arange(6.0).view(3, 2), torch.tensor([[7.0, 8.0]])]
    h, mask = pad_hidden(rows, torch.device("cpu"))
    assert h.tolist() == [[[0, 1], [2, 3], [4, 5]], [[0, 0], [0, 0], [7, 8]]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert h.dtype == torch.float32 and mask.dtype == torch.long
    h, mask = pad_hidden([r.double() for r in rows], META)
    assert h.device == mask.device == META and h.dtype == torch.float64
    h, mask = pad_hidden(rows[:1], torch.device("cpu"))  # a batch of one
    assert h.tolist() == [[[0, 1], [2, 3], [4, 5]]] and mask.tolist() == [[1, 1, 1]]
