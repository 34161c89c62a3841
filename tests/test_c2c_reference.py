"""``c2c`` computes the authors' formula (thu-nics/C2C at 69eb705, ``C2CProjector.forward``).

The reference is restated here from its code as plain tensor operations on a state dict with the authors'
parameter names (``key_in``, ``key_mlp1.blocks.0.{norm,w1,w2}``, ``key_scalar_mlp2``, ``key_scalar_head``,
``key_proj_mlp2``, ``key_proj_out``, ``key_gate_logit`` and the value side alike), and compared with the
translator's fusion on random tensors with the same weights, in training (the same Gumbel draws) and at
evaluation.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from latentbridge.plugins.translators.c2c import C2C, C2CConfig, gumbel

HS, DS, HT, DT, HIDDEN, INNER, BLOCKS = 2, 8, 3, 4, 16, 24, 4


def rms_norm(x, weight, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def block(x, sd, prefix):
    return x + F.linear(F.gelu(F.linear(rms_norm(x, sd[f"{prefix}.norm.weight"]), sd[f"{prefix}.w1.weight"])),
                        sd[f"{prefix}.w2.weight"])


def reference_branch(sd, kind, receiver, sharer, gate, blocks=BLOCKS):
    """One side of ``C2CProjector.forward``: ``receiver`` (B, Ht, N, Dt), ``sharer`` (B, Hs, N, Ds)."""
    b, heads, n, width = receiver.shape
    source = sharer.transpose(1, 2).reshape(b, n, -1)  # (B, N, Hs*Ds), head-major
    target = receiver.transpose(1, 2).reshape(b, n, -1)
    x = torch.cat([source, target], -1)  # the sharer first
    h = F.linear(x, sd[f"{kind}_in.weight"], sd[f"{kind}_in.bias"])
    h = block(h, sd, f"{kind}_mlp1.blocks.0")
    p = h
    for i in range(blocks - 2):
        p = block(p, sd, f"{kind}_proj_mlp2.blocks.{i}")
    p = F.linear(p, sd[f"{kind}_proj_out.weight"], sd[f"{kind}_proj_out.bias"]).view(b, n, heads, width).transpose(1, 2)
    s = block(h, sd, f"{kind}_scalar_mlp2.blocks.0")
    w = torch.sigmoid(F.linear(s, sd[f"{kind}_scalar_head.weight"], sd[f"{kind}_scalar_head.bias"]))
    w = w.permute(0, 2, 1).unsqueeze(-1)  # (B, Ht, N, 1)
    return receiver + gate * w * p


def translator(**over) -> C2C:
    config = C2CConfig(source_layers=2, source_kv_heads=HS, source_head_dim=DS, target_layers=2,
                       target_kv_heads=HT, target_head_dim=DT, hidden=HIDDEN, intermediate=INNER, blocks=BLOCKS,
                       dropout=0.0, d_src=8, d_tgt=8, **over)
    torch.manual_seed(0)
    c2c = C2C(config)
    with torch.no_grad():  # every weight random, the gates open or closed by hand
        for p in c2c.parameters():
            p.normal_(0, 0.3)
    return c2c


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, HT, 5, DT, generator=g), torch.randn(2, HT, 5, DT, generator=g),
            torch.randn(2, HS, 5, DS, generator=g), torch.randn(2, HS, 5, DS, generator=g))


class States:
    def __init__(self, kv):
        self.kv, self.mask, self.offsets, self.text = kv, torch.ones(2, 5), [[]] * 2, ["", ""]


@pytest.mark.parametrize("logits", [(0.7, -0.4), (-0.2, 0.9)])
def test_evaluation_agrees_with_the_reference_formula(logits):
    c2c = translator()
    c2c.eval()
    k, v, sk, sv = inputs()
    sd = {name: t.detach() for name, t in c2c.fusers["1"].state_dict().items()}
    with torch.no_grad():
        c2c.fusers["1"].key_gate_logit.fill_(logits[0])
        c2c.fusers["1"].value_gate_logit.fill_(logits[1])
        fk, fv = c2c.message(States([(sk, sv), (sk, sv)])).fuse(1, k, v, sk, sv)
    gk, gv = float(logits[0] > 0), float(logits[1] > 0)
    torch.testing.assert_close(fk, reference_branch(sd, "key", k, sk, gk), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fv, reference_branch(sd, "value", v, sv, gv), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fk, k) or not torch.allclose(fv, v)  # an open gate changed something


def test_training_agrees_with_the_reference_formula_and_its_gumbel_gate():
    c2c = translator(anneal_steps=10)
    c2c.train()
    c2c.set_progress(3, 10)
    tau = 0.001 ** 0.3
    k, v, sk, sv = inputs()
    sd = {name: t.detach() for name, t in c2c.fusers["0"].state_dict().items()}
    seeds = torch.tensor([1234, 5])
    with torch.no_grad():
        fk, fv = c2c.message(States([(sk, sv), (sk, sv)]), seeds).fuse(0, k, v, sk, sv)
    g = torch.Generator().manual_seed(1234)  # the draws in the translator's order: keys, then values
    shape = torch.Size([2, HT, 5, 1])
    gate_k = torch.sigmoid((sd["key_gate_logit"] + gumbel(shape, g)) / tau)
    gate_v = torch.sigmoid((sd["value_gate_logit"] + gumbel(shape, g)) / tau)
    torch.testing.assert_close(fk, reference_branch(sd, "key", k, sk, gate_k), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fv, reference_branch(sd, "value", v, sv, gate_v), atol=1e-5, rtol=1e-5)


def test_the_reference_sizes():
    """At the authors' sizes (hidden 1024, intermediate 1024, 3 blocks), Qwen3-0.6B (8 kv heads x 128)
    receiving from Qwen2.5-0.5B (2 x 64) has 17,066,002 parameters per receiver layer (two branches of
    8,533,000 and two gate logits), as their projector does."""
    config = C2CConfig(source_layers=24, source_kv_heads=2, source_head_dim=64, target_layers=1,
                       target_kv_heads=8, target_head_dim=128, d_src=896, d_tgt=1024)
    from latentbridge.plugins.translators.c2c import LayerFuser

    assert sum(p.numel() for p in LayerFuser(config).parameters()) == 17_066_002
    assert (config.temperature, config.final_temperature, config.gate_init, config.dropout) == (1.0, 0.001, 0.0, 0.1)


@pytest.mark.parametrize(("models", "setting", "expected"), [
    ("float32", "auto", torch.float32), ("bfloat16", "auto", torch.bfloat16), ("bfloat16", "float32", torch.float32),
    ("float32", "bfloat16", torch.bfloat16), ("float16", "auto", torch.float32)])
def test_the_fusers_precision_follows_the_models_unless_set(random_pair, tmp_path, models, setting, expected):
    """``dtype: auto`` keeps the fusers in the target's dtype, as the authors keep theirs in bf16 beside bf16
    models; a step trains them in it (the optimizer updates them) and the fused cache has the target's dtype."""
    from latentbridge.train.runner import Runner

    from .helpers import make_experiment

    exp = make_experiment(random_pair, "translator=c2c", "translator.hidden=16", "translator.intermediate=16",
                          "injection=fused_prompt", f"models.dtype={models}", f"translator.dtype={setting}")
    params = list(exp.translator.parameters())
    assert params and {p.dtype for p in params} == {expected}
    before = [p.detach().clone() for p in params]
    runner = Runner(exp, tmp_path / "run")
    for step in (1, 2):
        assert math.isfinite(runner.train_step(step)["grad_norm"])
    assert all(torch.isfinite(p).all() for p in params)
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, params, strict=True))
    assert {p.dtype for p in params} == {expected}
    bridge = exp.bridge
    prompts = [exp.task.prompt(e) for e in exp.task.examples("test")[:2]]
    inputs = bridge.bridged_inputs(bridge.message(prompts), prompts, with_answer=False)
    (cache,) = inputs.cache().values()  # under whichever keyword the model takes its cache
    keys = [layer.keys for layer in cache.layers]
    assert keys and {k.dtype for k in keys} == {bridge.target.dtype}


def test_fusers_saved_in_float32_keep_their_precision(random_pair):
    """Weights from a run made before ``dtype: auto`` (float32 fusers beside bf16 models) load as float32, not
    rounded to the models' bf16; weights saved in bf16 stay bf16."""
    from .helpers import make_experiment

    args = ["translator=c2c", "translator.hidden=16", "translator.intermediate=16", "injection=fused_prompt",
            "models.dtype=bfloat16"]
    exp = make_experiment(random_pair, *args)
    assert {p.dtype for p in exp.translator.parameters()} == {torch.bfloat16}
    saved = {k: torch.randn(v.shape, dtype=torch.float32) for k, v in exp.translator.state_dict().items()}
    exp.translator.load_state_dict(saved)
    for key, value in exp.translator.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, saved[key])
    again = make_experiment(random_pair, *args)
    again.translator.load_state_dict({k: v.to(torch.bfloat16) for k, v in saved.items()})
    assert {p.dtype for p in again.translator.parameters()} == {torch.bfloat16}
