"""rope_phase depends on positional geometry, and reads keys from the model's own attention code.

The old objective compared keys at the same positions, so the rotation cancelled: its value was the same
with RoPE removed. These tests would fail on it: the loss changes with the rotary base and with the soft
tokens' relative positions, is another value with the rotation removed, and is unchanged by a shift of
every position (RoPE is relative). The captured keys equal the model's cached keys on Llama, Qwen3
(per-head k_norm) and Gemma-3 (k_norm, query scaling) tiny models.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from latentbridge.cli import app
from latentbridge.nn.keys import capture_attention
from latentbridge.train.steps import StepBuilder

from .helpers import make_experiment, recipe_dict

OVERRIDES = ("objectives.rope_phase.weight=1", "injection=soft_only", "task.shots=1")


@pytest.fixture(scope="module")
def trained_pair():
    """The built-in pair: trained, so its attention is sharp enough for positions to matter (a random
    model's attention is nearly uniform whatever the positions)."""
    from latentbridge.bridge.models import builtin_models

    return {"llama": builtin_models()["tiny-llama"], "mistral": builtin_models()["tiny-mistral"]}


def context(exp):
    builder = StepBuilder(exp, torch.Generator().manual_seed(0))
    return builder.context(1, exp.task.examples("train")[:4])


def loss_of(exp, ctx=None) -> float:
    ctx = ctx or context(exp)
    with torch.no_grad():
        return float(exp.objectives["rope_phase"](ctx))


def with_rope_theta(folder: Path, tmp: Path, theta: float) -> Path:
    out = tmp / f"rope-{theta:g}"
    shutil.copytree(folder, out)
    config = json.loads((out / "config.json").read_text())
    config["rope_parameters"] = {**config.get("rope_parameters", {}), "rope_type": "default", "rope_theta": theta}
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_the_loss_changes_with_the_rotary_base(trained_pair, tmp_path, monkeypatch):
    """The loss moves with the RoPE base; with the rotation removed (the control) the base cannot matter and
    the loss stays put to float precision. The threshold sits between the two: 1e-3, against a control
    difference below 1e-6 (a loss in which the rotation cancels, the old design, is such a control)."""
    others = {theta: dict(trained_pair, mistral=with_rope_theta(trained_pair["mistral"], tmp_path, theta))
              for theta in (2.0, 1e7)}
    base = loss_of(make_experiment(trained_pair, *OVERRIDES))
    moved = {theta: abs(loss_of(make_experiment(pair, *OVERRIDES)) - base) for theta, pair in others.items()}
    import transformers.models.mistral.modeling_mistral as mistral

    monkeypatch.setattr(mistral, "apply_rotary_pos_emb", lambda q, k, cos, sin, *a, **kw: (q, k))
    flat = loss_of(make_experiment(trained_pair, *OVERRIDES))
    for theta, pair in others.items():
        assert abs(loss_of(make_experiment(pair, *OVERRIDES)) - flat) < 1e-6, theta  # the control
        assert moved[theta] > 1e-3, theta


def test_the_loss_changes_with_relative_positions_not_with_a_shift_of_all(trained_pair):
    exp = make_experiment(trained_pair, *OVERRIDES)
    ctx = context(exp)
    base = loss_of(exp, ctx)
    positions = ctx.inputs.position_ids
    shifted_all = dataclasses.replace(ctx, inputs=dataclasses.replace(ctx.inputs, position_ids=positions + 7))
    assert loss_of(exp, shifted_all) == pytest.approx(base, abs=1e-4)  # rotary scores are relative
    gap = torch.where(ctx.inputs.soft_mask, positions - 5, positions)  # the soft tokens read from further away
    moved = dataclasses.replace(ctx, inputs=dataclasses.replace(ctx.inputs, position_ids=gap))
    assert abs(loss_of(exp, moved) - base) > 0.01


def test_the_loss_is_another_value_with_the_rotation_removed(trained_pair, monkeypatch):
    exp = make_experiment(trained_pair, *OVERRIDES)
    base = loss_of(exp)
    import transformers.models.mistral.modeling_mistral as mistral

    monkeypatch.setattr(mistral, "apply_rotary_pos_emb", lambda q, k, cos, sin, *a, **kw: (q, k))
    assert abs(loss_of(exp) - base) > 0.01


def tiny_model_folder(kind: str, tokenizer_from: Path, root: Path) -> Path:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    if kind == "qwen3":
        from transformers import Qwen3Config as Config
        from transformers import Qwen3ForCausalLM as Model
    else:
        from transformers import Gemma3ForCausalLM as Model
        from transformers import Gemma3TextConfig as Config

        common.update(query_pre_attn_scalar=32, sliding_window=16)  # scaling 32^-0.5, not head_dim's 8^-0.5
    torch.manual_seed(0)
    folder = root / kind
    Model(Config(**common)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind, implementation", [("llama", "sdpa"), ("llama", "eager"), ("qwen3", "sdpa"),
                                                   ("gemma3", "sdpa"), ("gemma3", "eager")])
def test_captured_keys_equal_the_models_cached_keys(random_pair, tmp_path, kind, implementation):
    """Layer 1's keys depend on layer 0's output, so they also check that the capture hands the model's
    own kernel every argument (Gemma-3's query scaling, its sliding window)."""
    folder = random_pair["llama"] if kind == "llama" else tiny_model_folder(kind, random_pair["llama"], tmp_path)
    exp = make_experiment({"llama": random_pair["llama"], "mistral": folder}, *OVERRIDES)
    ctx = context(exp)
    model = exp.bridge.target.model
    model.set_attn_implementation(implementation)
    captured = capture_attention(model, ctx.inputs, 2)
    with torch.no_grad():
        cache = model(**ctx.inputs.model_kwargs(), use_cache=True).past_key_values
    for layer, c in enumerate(captured):
        keys, values = cache.layers[layer].keys, cache.layers[layer].values
        n = keys.shape[2]  # a sliding-window layer caches only its window: compare the positions it keeps
        torch.testing.assert_close(c.key[:, :, -n:], keys, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c.value[:, :, -n:], values, rtol=1e-5, atol=1e-6)
    loss = exp.objectives["rope_phase"](ctx)
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in exp.translator.parameters())


def test_a_target_without_rotary_embeddings_is_refused_by_validate(random_pair, tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(random_pair["llama"])
    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    recipe = tmp_path / "r.yaml"
    data = recipe_dict(random_pair, "objectives.rope_phase.weight=1")
    data["models"]["target"] = str(folder)
    recipe.write_text(json.dumps(data))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2
    assert f"objectives.rope_phase: needs a target with rotary position embeddings; {folder} (gpt2) has none" \
        in " ".join(result.output.split())


@pytest.mark.parametrize("mode", ["soft_plus_text", "soft_only"])
def test_the_gradient_is_finite_with_padding_inside_the_answer_window(trained_pair, mode):
    """Rows with short answers have padding among the query positions: they have nothing to attend to.
    They are left out, and must not turn the gradient into NaN (a masked -inf did, at step 1 of every run)."""
    exp = make_experiment(trained_pair, "objectives.rope_phase.weight=1", f"injection={mode}", "task.shots=1")
    ctx = StepBuilder(exp, torch.Generator().manual_seed(0)).context(1, exp.task.examples("train")[:16])
    lengths = (ctx.inputs.labels != -100).sum(1)
    assert lengths.min() < lengths.max()  # the premise: answers of different lengths
    loss = exp.objectives["rope_phase"](ctx)
    loss.backward()
    grads = [p.grad for p in exp.translator.parameters() if p.grad is not None]
    assert torch.isfinite(loss) and grads and all(bool(torch.isfinite(g).all()) for g in grads)


def test_the_forward_pass_stops_after_the_last_layer_asked_for(random_pair):
    exp = make_experiment(random_pair, *OVERRIDES)
    model = exp.bridge.target.model
    ran = []
    handles = [layer.register_forward_pre_hook(lambda module, args, i=i: ran.append(i))
               for i, layer in enumerate(model.model.layers)]
    try:
        assert len(capture_attention(model, context(exp).inputs, 1)) == 1
    finally:
        for handle in handles:
            handle.remove()
    assert ran == [0]


def test_layers_out_of_range_are_refused(random_pair):
    from latentbridge.errors import LatentBridgeError

    exp = make_experiment(random_pair, *OVERRIDES)
    model, inputs = exp.bridge.target.model, context(exp).inputs
    total = model.config.num_hidden_layers
    for layers in (0, total + 1):
        with pytest.raises(LatentBridgeError, match=rf"^capture_attention: layers must be in 1\.\.{total}, got {layers}$"):
            capture_attention(model, inputs, layers)


def test_a_layer_that_bypasses_the_attention_interface_is_named(random_pair, monkeypatch):
    from latentbridge.errors import LatentBridgeError

    exp = make_experiment(random_pair, *OVERRIDES)
    model, inputs = exp.bridge.target.model, context(exp).inputs
    attention = model.model.layers[1].self_attn
    monkeypatch.setattr(attention, "forward", lambda hidden_states, *a, **k: (torch.zeros_like(hidden_states), None))
    expected = (f"{type(model).__name__}: attention layers [1] did not run through the attention interface "
                "(an architecture latentbridge cannot look inside)")
    with pytest.raises(LatentBridgeError) as error:
        capture_attention(model, inputs, 2)
    assert str(error.value) == expected


def test_an_attention_module_without_an_eager_kernel_is_a_clear_error():
    from latentbridge.errors import LatentBridgeError
    from latentbridge.nn.keys import kernel as _kernel

    class Odd(torch.nn.Module):
        pass

    Odd.__module__ = "builtins"  # a module that defines no eager_attention_forward
    with pytest.raises(LatentBridgeError) as error:
        _kernel("eager", Odd())
    assert str(error.value) == "Odd: no eager attention to capture around"


def test_every_config_the_attention_layers_read_is_switched():
    """A model whose modules hold several config objects (a composite model's sub-configs): each one."""
    from types import SimpleNamespace

    from latentbridge.nn.keys import _attention_configs, _implementation

    class Holder(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config

    configs = [SimpleNamespace(_attn_implementation="sdpa"), SimpleNamespace(_attn_implementation="eager")]
    model = torch.nn.Sequential(Holder(configs[0]), Holder(configs[1]), Holder(configs[0]))
    assert [id(c) for c in _attention_configs(model)] == [id(c) for c in configs]
    with _implementation(model):
        assert [c._attn_implementation for c in configs] == ["latentbridge_capture_sdpa", "latentbridge_capture_eager"]
    assert [c._attn_implementation for c in configs] == ["sdpa", "eager"]


def test_answer_queries_are_the_positions_whose_next_token_is_supervised():
    from latentbridge.plugins.objectives.rope_phase import answer_queries

    labels = torch.tensor([[-100, -100, 7, 8, 9], [-100, -100, -100, 4, -100]])
    assert answer_queries(labels, 4).tolist() == [[True, True, True, False], [False, True, False, False]]
    assert answer_queries(labels, 5).tolist() == [[False, True, True, True, False], [False, False, True, False, False]]


def test_student_and_teacher_answers_out_of_line_are_refused(random_pair):
    exp = make_experiment(random_pair, *OVERRIDES)
    ctx = context(exp)
    teacher = ctx.get("teacher_inputs")
    shifted = dataclasses.replace(teacher, labels=torch.roll(teacher.labels, 1, dims=1))
    get = ctx.get
    ctx.get = lambda name: shifted if name == "teacher_inputs" else get(name)
    with pytest.raises(RuntimeError) as error:
        exp.objectives["rope_phase"](ctx)
    assert str(error.value) == "rope_phase: the answer positions of student and teacher are not aligned"
