"""Evaluation systems as plugins: the registry's ten built-ins, the baselines (skyline, two_stage) and the
controls that keep a message's statistics (covgauss, randomrot), each with the planted mistake it must catch."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from latentbridge.plugins.systems.controls import gaussian_like, random_rotation
from typer.testing import CliRunner

from latentbridge.cli import app
from latentbridge.eval.harness import EvalSettings, Evaluator

from .helpers import make_experiment
from .test_messages import experiment, train

TEN = {"source", "target", "bridged", "shuffled", "null", "relay", "skyline", "two_stage", "covgauss", "randomrot"}
EVERY = ["source", "target", "bridged", "shuffled", "null", "relay", "covgauss", "randomrot", "skyline", "two_stage"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))


def evaluator(exp, out_dir, systems=EVERY, n=6, batch_size=4, **config):
    settings = EvalSettings(n=n, batch_size=batch_size, max_new_tokens=6, stop=["\n\n"], systems=list(systems),
                            system_config=config)
    return Evaluator(exp.bridge, exp.task, settings, out_dir, use_cache=False)


def test_list_plugins_lists_the_ten_systems():
    result = CliRunner().invoke(app, ["list-plugins", "--json", "--kind", "system"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["name"] for r in rows} == TEN and {r["kind"] for r in rows} == {"system"}


def test_a_run_with_every_system_reports_each(random_pair, tmp_path):
    exp = make_experiment(random_pair)
    result = evaluator(exp, tmp_path, two_stage={"max_new_tokens": 4}).evaluate(step=1)
    assert [s for s, v in result["systems"].items() if v is not None] == EVERY
    assert set(result["information_flow_by_control"]) == {"shuffled", "null", "covgauss", "randomrot"}
    record = json.loads((tmp_path / "eval_samples_test_step_1.jsonl").read_text().splitlines()[0])
    assert record["two_stage_message_bytes"] >= 0 and "skyline_message_bytes" not in record


@pytest.mark.parametrize(("args", "expected"), [
    (["eval.systems=[bridged,skylin]"], "eval.systems[1]: unknown evaluation system 'skylin' (did you mean 'skyline'?)"),
    (["eval.systems=[bridged,two_stage]", "eval.system_config.two_stage.max_new_tokens=0"],
     "eval.system_config.two_stage.max_new_tokens: expected an integer > 0, got 0"),
    (["eval.systems=[bridged,target,target]"], "eval.systems[2]: 'target' is listed twice"),
    (["eval.system_config.nosuch.x=1"], "eval.system_config.nosuch: unknown evaluation system 'nosuch'"),
])
def test_bad_systems_are_one_line_and_exit_2(args, expected, tmp_path):
    result = CliRunner().invoke(app, ["validate", "answer_softplus", *args])
    assert result.exit_code == 2 and expected in result.output, result.output
    assert "Traceback" not in result.output


# -- skyline and two_stage: what they read ---------------------------------------------------------


def rows_read(monkeypatch, ev):
    """Spy: every token row a text system generates from, decoded, by what it is (``what``)."""
    seen: dict[str, list[str]] = {}
    original = Evaluator.generate_text

    def spy(self, model, rows, what, max_new_tokens=None):
        seen.setdefault(what, []).extend(model.tokenizer.decode(r) for r in rows)
        seen.setdefault(f"{what} limit", []).append(max_new_tokens)
        return original(self, model, rows, what, max_new_tokens)

    monkeypatch.setattr(Evaluator, "generate_text", spy)
    return seen


def test_the_skyline_reads_what_the_source_reads(random_pair, tmp_path, monkeypatch):
    """A task whose source reads a context the target does not: the skyline's target reads it."""
    exp = make_experiment(random_pair)
    plain = exp.task.prompt

    def with_context(example):
        prompt = plain(example)
        return dataclasses.replace(prompt, header=f"Context: item {example.id} is special.\n" + prompt.header)

    monkeypatch.setattr(exp.task, "source_prompt", with_context)
    ev = evaluator(exp, tmp_path, systems=["bridged", "target", "skyline"])
    seen = rows_read(monkeypatch, ev)
    ev.outputs()
    encoder, tokenizer = exp.bridge.target_encoder, exp.bridge.target.tokenizer
    for example, row, target_row in zip(ev.items, seen["skyline"], seen["target"], strict=True):
        assert f"item {example.id} is special" in row and "is special" not in target_row
        assert row == tokenizer.decode(encoder.prompt_ids(with_context(example)))


def test_two_stage_hands_over_the_background_never_the_answer(random_pair, tmp_path, monkeypatch):
    from .test_eval_harness import _leaks

    exp = make_experiment(random_pair)
    ev = evaluator(exp, tmp_path, systems=["bridged", "two_stage"], two_stage={"max_new_tokens": 5})
    seen = rows_read(monkeypatch, ev)
    outputs = ev.outputs()
    backgrounds = ev.systems["two_stage"].backgrounds(ev)
    assert seen["two_stage background limit"] == [5]  # the background's own limit, not eval.max_new_tokens
    instruction = ev.systems["two_stage"].config.instruction
    for example, asked, read, background in zip(ev.items, seen["two_stage background"], seen["two_stage"],
                                                backgrounds, strict=True):
        assert asked.endswith(instruction) and example.question in asked
        assert f"Background: {background}" in read and example.question in read
        for text in (asked, read):
            assert not _leaks(example, text), (example.answer, text)
    assert len(outputs["two_stage"]) == len(ev.items)


# -- the controls ------------------------------------------------------------------------------------


def test_gaussian_like_keeps_the_covariance_across_dimensions():
    """Draws whose dimensions are exactly correlated in the samples stay so: a draw from the mean and the
    per-dimension variance alone (no covariance) gives uncorrelated dimensions and fails here."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(50, 1, generator=g, dtype=torch.float64)
    samples = torch.cat([base + 3.0, 2 * base, -base + 0.01 * torch.randn(50, 1, generator=g, dtype=torch.float64)], 1)
    draws = gaussian_like(samples, list(range(4000)))
    corr = torch.corrcoef(draws.T)
    assert corr[0, 1] > 0.99 and corr[0, 2] < -0.99
    assert torch.allclose(draws.mean(0), samples.mean(0), atol=0.1)
    assert torch.allclose(torch.cov(draws.T), torch.cov(samples.T), rtol=0.1, atol=0.02)
    assert torch.allclose(gaussian_like(samples, [7, 8])[1], gaussian_like(samples, [8])[0], atol=1e-12)  # per seed


def test_random_rotation_is_orthogonal_and_fixed_by_its_seed():
    q = random_rotation(16, 3)
    assert torch.allclose(q @ q.T, torch.eye(16, dtype=q.dtype), atol=1e-10)
    assert torch.equal(q, random_rotation(16, 3)) and not torch.equal(q, random_rotation(16, 4))


def control_messages(ev, name):
    """The control's message and the bridged one for every item, chunk by chunk, as ``N D`` rows."""
    system = ev.systems[name]
    make = system.message_for(ev)
    own, controlled = [], []
    with torch.no_grad():
        for chunk in ev.chunks():
            own.append(torch.cat([v.flatten(1) for v in ev.own_message(chunk).vectors()], 1).double())
            controlled.append(torch.cat([v.flatten(1) for v in make(chunk).vectors()], 1).double())
    return torch.cat(own), torch.cat(controlled)


@pytest.mark.parametrize(("translator", "mode"), [("linear", "soft_plus_text"), ("kv_prefix", "soft_only")])
def test_randomrot_rotates_every_item_by_one_matrix(random_pair, tmp_path, translator, mode):
    """Inner products between any two items' vectors (in different batches too) are kept, and so are norms;
    the vectors themselves change. A rotation drawn per item (or per batch) breaks the cross-item products."""
    exp = experiment(random_pair, translator, mode)
    ev = evaluator(exp, tmp_path, n=6, batch_size=4)
    own, rotated = control_messages(ev, "randomrot")
    width = ev.own_message(ev.chunks()[0]).vectors()[0].shape[-1]
    own_v, rot_v = own.reshape(-1, width), rotated.reshape(-1, width)
    assert torch.allclose(own_v @ own_v.T, rot_v @ rot_v.T, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(own_v, rot_v, atol=1e-3)


@pytest.mark.parametrize(("translator", "mode"), [("linear", "soft_plus_text"), ("kv_prefix", "soft_only")])
def test_covgauss_draws_from_the_messages_statistics_per_item(random_pair, tmp_path, translator, mode):
    exp = experiment(random_pair, translator, mode)
    ev = evaluator(exp, tmp_path, n=6, batch_size=4)
    own, drawn = control_messages(ev, "covgauss")
    assert drawn.shape == own.shape and not torch.allclose(drawn, own, atol=1e-3)
    centred = own - own.mean(0)
    # every draw lies in the span of the items' centred messages around their mean (the covariance's range)
    basis = torch.linalg.svd(centred, full_matrices=False).Vh[: own.shape[0] - 1]
    residual = (drawn - own.mean(0)) - (drawn - own.mean(0)) @ basis.T @ basis
    assert residual.abs().max() < 1e-3 * own.abs().max()
    other = evaluator(exp, tmp_path / "b", n=6, batch_size=5)  # other batches: the same draw per item
    assert torch.allclose(control_messages(other, "covgauss")[1], drawn, atol=1e-5)


def test_fusion_controls_change_the_deltas(random_pair, tmp_path):
    """c2c's message: randomrot keeps each fused delta's norm, covgauss draws new deltas; both change what
    the target reads, and an identity change leaves it exactly as the bridged input."""
    exp = experiment(random_pair, "c2c", "fused_prompt")
    train(exp)
    ev = evaluator(exp, tmp_path, n=4, batch_size=4)
    chunk = ev.chunks()[0]
    own = ev.own_message(chunk)
    norms: dict[str, list[torch.Tensor]] = {"own": [], "rot": []}
    rotate = ev.systems["randomrot"].message_for(ev)(chunk)
    rotation = rotate.extra["delta_map"]

    def spy(layer, which, delta, mask):
        out = rotation(layer, which, delta, mask)
        norms["own"].append(delta.norm(dim=-1))
        norms["rot"].append(out.norm(dim=-1))
        return out

    with torch.no_grad():
        base = ev.bridge.bridged_inputs(own, ev.prompts[chunk], with_answer=False)
        same = ev.bridge.bridged_inputs(own.with_deltas(lambda layer, which, d, m: d), ev.prompts[chunk], with_answer=False)
        ev.bridge.bridged_inputs(own.with_deltas(spy), ev.prompts[chunk], with_answer=False)
        drawn = ev.bridge.bridged_inputs(ev.systems["covgauss"].message_for(ev)(chunk), ev.prompts[chunk],
                                         with_answer=False)
    for a, b in zip(norms["own"], norms["rot"], strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    model = ev.bridge.target.model
    with torch.no_grad():
        logits = [model(**inputs.model_kwargs()).logits[:, -1] for inputs in (base, same, drawn)]
    assert torch.allclose(logits[0], logits[1], atol=1e-5)  # an identity change is the bridged input
    assert not torch.allclose(logits[0], logits[2], atol=1e-3)  # covgauss's deltas are not the message's


@pytest.mark.parametrize(("name", "role", "says"), [("gold", "baseline", "takes a name the evaluation records already use"),
                                                    ("fine_name", "judge", "needs `role`")])
def test_a_system_with_a_reserved_name_or_unknown_role_is_a_load_problem(name, role, says):
    """A system named like a record field ("gold" would write ``gold_full`` beside the gold answer) or with a
    role the harness does not know is refused at load, and the rest of the registry works."""
    from latentbridge import System
    from latentbridge.registry.host import Registry

    from .test_registry import plugin_module, registers

    bad = type("Bad", (System,), {"name": name, "role": role})
    registry = Registry.load(autoload=False, extra=[plugin_module("bad_systems", register_systems=registers(bad))])
    problems = [p for p in registry.problems if p.kind == "system"]
    assert len(problems) == 1 and problems[0].problem == "invalid-class" and says in problems[0].message
    assert name not in registry.names("system") and "bridged" in registry.names("system")


def test_the_parts_of_a_systems_latency_are_recorded(random_pair, tmp_path):
    """Each generation a system runs is timed under its own name (two_stage: the source's background, then
    the target's answer; the relay: the source's solution, then the target), and the bridged system's
    messages apart from its generation."""
    exp = make_experiment(random_pair)
    ev = evaluator(exp, tmp_path, systems=["bridged", "two_stage"], two_stage={"max_new_tokens": 3})
    ev.system("two_stage").generate(ev)
    assert set(ev.timings) == {"two_stage background", "two_stage"} and all(t > 0 for t in ev.timings.values())
    ev.system("relay").generate(ev)
    assert {"source", "relay"} <= set(ev.timings)
    ev.timings.clear()
    ev.system("bridged").generate(ev)
    assert set(ev.timings) == {"message", "bridged"} and ev.timings["message"] < ev.timings["bridged"]
