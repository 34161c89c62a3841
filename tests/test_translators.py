"""Contract tests run for every registered translator (built-in or not)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentbridge.io.weights import load_translator, save_translator
from latentbridge.registry.host import Registry

REGISTRY = Registry.load(autoload=False)
VARIANTS = {
    "linear": [{"variant": "pooled"}, {"variant": "per_token"}],
    "mlp": [{"variant": "pooled"}, {"variant": "per_token", "depth": 3}],
    "identity": [{"projection": "linear"}],
    "dit": [{"sample_steps": 2, "d_model": 16, "heads": 2, "guidance": 2.0}],
    "resampler": [{"d_model": 16, "heads": 2}],
}
# soft-token translators; those emitting key/value messages are tested in test_messages.py
SOFT = [n for n in REGISTRY.names("translator") if REGISTRY.get("translator", n).cls.emits == "soft_tokens"]
CASES = [(name, extra) for name in SOFT for extra in VARIANTS.get(name, [{}])]
IDS = [f"{name}-{'-'.join(map(str, extra.values())) or 'default'}" for name, extra in CASES]


def build(name, extra, k, d_src, d_tgt, seed=0):
    torch.manual_seed(seed)
    config = REGISTRY.config_for(
        "translator", name, {"k": k, "d_src": d_src, "d_tgt": d_tgt, "target_rms": 0.7, **extra}
    )
    return REGISTRY.get("translator", name).cls(config)


def pad(h_rows, side, total, d, fill_seed=1):
    """Place variable-length rows into a ``b total d`` tensor with junk in the padding."""
    gen = torch.Generator().manual_seed(fill_seed)
    b = len(h_rows)
    h = torch.randn(b, total, d, generator=gen) * 100
    mask = torch.zeros(b, total, dtype=torch.long)
    for r, row in enumerate(h_rows):
        n = row.shape[0]
        sl = slice(total - n, total) if side == "left" else slice(0, n)
        h[r, sl] = row
        mask[r, sl] = 1
    return h, mask


shapes = dict(
    b=st.integers(1, 4),
    k=st.integers(1, 6),
    d_src=st.integers(1, 13),
    d_tgt=st.integers(1, 11),
    lengths=st.lists(st.integers(1, 9), min_size=4, max_size=4),
    extra_pad=st.integers(0, 5),
)


@pytest.mark.parametrize("name, extra", CASES, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(**shapes)
def test_shape_dtype_and_padding_invariance(name, extra, b, k, d_src, d_tgt, lengths, extra_pad):
    translator = build(name, extra, k, d_src, d_tgt).eval()
    rows = [torch.randn(n, d_src) for n in lengths[:b]]
    total = max(lengths[:b]) + extra_pad
    h_left, m_left = pad(rows, "left", total, d_src)
    h_right, m_right = pad(rows, "right", total, d_src, fill_seed=2)
    with torch.no_grad():
        out_left = translator(h_left, m_left)
        out_right = translator(h_right, m_right)
        alone = [translator(row[None], torch.ones(1, row.shape[0], dtype=torch.long)) for row in rows]
    assert out_left.shape == (b, k, d_tgt)
    assert out_left.dtype == h_left.dtype
    torch.testing.assert_close(out_left, out_right)
    torch.testing.assert_close(out_left, torch.cat(alone))


@pytest.mark.parametrize("name, extra", CASES, ids=IDS)
@settings(max_examples=10, deadline=None)
@given(k=st.integers(2, 5), d_src=st.integers(1, 9), d_tgt=st.integers(2, 9))
def test_gradients_reach_every_parameter(name, extra, k, d_src, d_tgt):
    # d_tgt >= 2: with one dimension the RMS rescaling keeps only the sign, which has no gradient
    translator = build(name, extra, k, d_src, d_tgt).train()
    # one long row and one single-token row, so every code path (and filler slot) is used
    h, mask = pad([torch.randn(k + 3, d_src), torch.randn(1, d_src)], "left", k + 3, d_src)
    out = translator(h, mask)
    (out * torch.randn_like(out)).sum().backward()  # a generic linear read-out of every output
    for pname, param in translator.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, f"no gradient reaches {pname}"


@pytest.mark.parametrize("name, extra", CASES, ids=IDS)
def test_save_load_round_trip(name, extra, tmp_path):
    translator = build(name, extra, k=3, d_src=7, d_tgt=5, seed=3).eval()
    h, mask = pad([torch.randn(4, 7), torch.randn(2, 7)], "left", 6, 7)
    save_translator(translator, tmp_path)
    rebuilt = load_translator(tmp_path, REGISTRY)
    assert type(rebuilt) is type(translator)
    with torch.no_grad():
        assert torch.equal(rebuilt(h, mask), translator(h, mask))


def test_saved_weights_do_not_alias_live_weights(tmp_path):
    translator = build("linear", {}, k=2, d_src=3, d_tgt=4)
    save_translator(translator, tmp_path)
    with torch.no_grad():
        for p in translator.parameters():
            p.add_(1.0)
    rebuilt = load_translator(tmp_path, REGISTRY)
    for (name, saved), live in zip(rebuilt.state_dict().items(), translator.state_dict().values(), strict=True):
        assert not torch.equal(saved, live), name


@pytest.mark.parametrize("name, extra", CASES, ids=IDS)
def test_soft_tokens_have_the_target_rms(name, extra):
    """The documented scaling rule: every soft token's RMS equals target_rms, whatever the input scale."""
    translator = build(name, extra, k=4, d_src=6, d_tgt=5)
    for scale in (1e-3, 1.0, 1e3):
        h, mask = pad([torch.randn(5, 6) * scale, torch.randn(4, 6) * scale], "left", 5, 6)  # no empty slots
        with torch.no_grad():
            soft = translator(h, mask)
        rms = soft.pow(2).mean(-1).sqrt()
        torch.testing.assert_close(rms, torch.full_like(rms, 0.7), rtol=1e-3, atol=1e-3)


def test_identity_passes_the_last_k_hidden_states_through():
    from latentbridge.errors import LatentBridgeError

    translator = build("identity", {"scale": "none"}, k=3, d_src=5, d_tgt=5)
    h, mask = pad([torch.randn(6, 5), torch.randn(2, 5)], "left", 6, 5)
    out = translator(h, mask)
    torch.testing.assert_close(out[0], h[0, -3:])
    torch.testing.assert_close(out[1, 1:], h[1, -2:])  # a 2-token prompt: the first slot stays empty
    assert torch.equal(out[1, 0], torch.zeros(5))
    assert list(translator.parameters()) == []
    with pytest.raises(LatentBridgeError, match="set translator.projection=linear"):
        build("identity", {}, k=3, d_src=5, d_tgt=4)


def test_dit_is_deterministic_per_seed_and_varies_across_seeds():
    translator = build("dit", {"d_model": 16, "heads": 2}, k=3, d_src=5, d_tgt=6).eval()
    h, mask = pad([torch.randn(4, 5), torch.randn(4, 5)], "left", 4, 5)
    with torch.no_grad():
        a = translator(h, mask, seeds=torch.tensor([11, 12]))
        b = translator(h, mask, seeds=torch.tensor([11, 12]))
        c = translator(h, mask, seeds=torch.tensor([13, 12]))
    assert torch.equal(a, b)
    assert not torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])  # noise is per item


def test_dit_flow_loss_trains_every_parameter():
    translator = build("dit", {"d_model": 16, "heads": 2, "cond_dropout": 0.5}, k=3, d_src=5, d_tgt=6)
    h, mask = pad([torch.randn(4, 5), torch.randn(2, 5), torch.randn(3, 5), torch.randn(4, 5)], "left", 4, 5)
    teacher = torch.randn(4, 3, 6)
    loss = translator.flow_loss(h, mask, teacher, torch.tensor([1, 2, 3, 4]))
    loss.backward()
    for pname, param in translator.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, pname
