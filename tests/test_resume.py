"""Never lose a run: exact resume after SIGKILL, graceful preemption, damaged checkpoints, divergence."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from latentbridge.api.events import Message
from latentbridge.errors import LatentBridgeError
from latentbridge.io.checkpoint import list_checkpoints
from latentbridge.train.runner import Runner
from latentbridge.train.state import Diverged, Preempted

from .helpers import make_experiment, recipe_dict

STEPS = 8
OVERRIDES = ["train.steps=8", "train.log_every=1", "eval.every=3", "checkpoint.every=2", "checkpoint.keep=3",
             "eval.n=4", "eval.max_new_tokens=4", "train.warmup_steps=2"]


@pytest.fixture(scope="module")
def recipe_path(random_pair, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "resume.yaml"
    path.write_text(yaml.safe_dump(recipe_dict(random_pair, *OVERRIDES)))
    return path


def env(cache: Path) -> dict[str, str]:
    return {**os.environ, "LATENTBRIDGE_CACHE_DIR": str(cache), "LATENTBRIDGE_DISABLE_PLUGIN_AUTOLOAD": "1"}


def start(recipe: Path, run_dir: Path, cache: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "latentbridge", "run", str(recipe), f"run_dir={run_dir}", *extra],
        env=env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(recipe: Path, run_dir: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = start(recipe, run_dir, cache, *extra)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for_step(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before step {step}: {proc.stderr.read()}")
        time.sleep(0.01)
    raise AssertionError(f"step {step} not reached in {timeout}s")


def outputs(run_dir: Path) -> dict[str, bytes]:
    """What must be bit-identical: final weights, metrics and every evaluation file."""
    files = ["translator.safetensors", "metrics.jsonl", "best/translator.safetensors"]
    files += sorted(p.name for p in run_dir.glob("eval_samples_*.jsonl"))
    return {name: (run_dir / name).read_bytes() for name in files}


@pytest.fixture(scope="module")
def reference(recipe_path, tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("reference")
    done = finish(recipe_path, root / "run", root / "cache")
    assert done.returncode == 0, done.stderr
    files = outputs(root / "run")
    assert len([n for n in files if n.startswith("eval_samples_dev")]) == 3  # steps 3, 6, 8
    assert "eval_samples_test_step_8.jsonl" in files
    return files


@pytest.mark.parametrize("kill_step", random.Random(20261124).sample(range(1, STEPS - 1), 3))
def test_sigkill_at_a_random_step_then_resume_is_bit_identical(recipe_path, reference, tmp_path, kill_step):
    run_dir = tmp_path / "run"
    proc = start(recipe_path, run_dir, tmp_path / "cache")
    wait_for_step(run_dir, kill_step, proc)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    resumed = finish(recipe_path, run_dir, tmp_path / "cache", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert outputs(run_dir) == reference


@pytest.mark.parametrize("message", [("translator=c2c", "translator.hidden=32", "translator.intermediate=32",
                                      "injection=fused_prompt"), ("translator=kv_prefix",),
                                     ("source.view=generation", "injection=soft_only", "train.max_train_examples=16")],
                         ids=["kv_fusion", "kv_prefix", "latent_relay"])
def test_key_value_messages_resume_bit_identical_after_sigkill(random_pair, tmp_path, message):
    """The c2c gates' annealing and noise, the kv prefix heads and the latent relay (the source's cached
    solutions) resume exactly like soft tokens."""
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_dict(random_pair, *OVERRIDES, *message)))
    done = finish(path, tmp_path / "reference", tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "run"
    proc = start(path, run_dir, tmp_path / "cache")
    wait_for_step(run_dir, 5, proc)
    proc.kill()
    proc.wait()
    resumed = finish(path, run_dir, tmp_path / "cache", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert outputs(run_dir) == outputs(tmp_path / "reference")


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1", "SIGINT"])
def test_preemption_checkpoints_and_exits_then_resumes(recipe_path, reference, tmp_path, signame):
    run_dir = tmp_path / "run"
    proc = start(recipe_path, run_dir, tmp_path / "cache")
    wait_for_step(run_dir, 2, proc)
    sent = time.time()
    proc.send_signal(getattr(signal, signame))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert time.time() - sent < 20
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "preempted" and info["signal"] == signame
    assert list_checkpoints(run_dir)[0].name == f"step_{info['step']}"
    assert "--resume" in out
    resumed = finish(recipe_path, run_dir, tmp_path / "cache", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert outputs(run_dir) == reference


def preempt_at_step_3_then_resume(random_pair, tmp_path, monkeypatch, patch) -> None:
    """``patch(runner)`` makes a signal arrive somewhere around step 3 (an evaluation step); the run must
    stop at step 3 without its evaluation file, and the resumed run must equal an uninterrupted one."""
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    reference_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    Runner(make_experiment(random_pair, *OVERRIDES), reference_dir).run()
    runner = Runner(make_experiment(random_pair, *OVERRIDES), run_dir)
    patch(runner)
    with pytest.raises(Preempted) as info:
        runner.run()
    assert info.value.step == 3
    assert not (run_dir / "eval_samples_dev_step_3.jsonl").exists()
    Runner(make_experiment(random_pair, *OVERRIDES), run_dir).run(resume=True)
    assert outputs(run_dir) == outputs(reference_dir)


def test_preempted_during_evaluation_resumes_that_evaluation(random_pair, tmp_path, monkeypatch):
    def patch(runner):
        original = runner.evaluators["dev"].generate

        def generate(*args, **kwargs):  # a signal arrives while the step-3 evaluation is generating
            runner.signal_name = "SIGTERM"
            return original(*args, **kwargs)

        runner.evaluators["dev"].generate = generate

    preempt_at_step_3_then_resume(random_pair, tmp_path, monkeypatch, patch)


def test_preempted_just_before_an_evaluation_owes_it_to_the_resumed_run(random_pair, tmp_path, monkeypatch):
    """A signal during the training of step 3 stops before evaluating; the resumed run evaluates step 3."""
    def patch(runner):
        original = runner.train_step

        def train_step(step):
            if step == 3:
                runner.signal_name = "SIGUSR1"
            return original(step)

        runner.train_step = train_step

    preempt_at_step_3_then_resume(random_pair, tmp_path, monkeypatch, patch)


def test_a_corrupt_newest_checkpoint_is_reported_and_the_previous_used(random_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    Runner(make_experiment(random_pair, *OVERRIDES), run_dir).run()
    expected = outputs(run_dir)
    newest, previous = list_checkpoints(run_dir)[:2]
    weights = newest / "translator.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    (run_dir / "checkpoints" / ".step_99.tmp123").mkdir()  # a partial write: never considered
    messages = []
    exp = make_experiment(random_pair, *OVERRIDES)

    class Watcher:  # a consumer of the run's events
        def on_run_event(self, event):
            if isinstance(event, Message):
                messages.append(event.text)

    Runner(exp, run_dir, consumers=[Watcher()]).run(resume=True)
    assert messages[0] == f"skipping checkpoint {newest.name}: translator.safetensors is corrupt (checksum mismatch)"
    assert f"resuming from checkpoint at step {previous.name.split('_')[1]}" in messages
    assert outputs(run_dir) == expected


def test_non_finite_losses_are_skipped_then_the_run_stops(random_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    exp = make_experiment(random_pair, *OVERRIDES, "train.max_nonfinite=2", "eval.every=100")
    nll = exp.objectives["nll"]
    original = nll.compute
    bad_steps = {3, 5, 6}
    nll.compute = lambda ctx: original(ctx) * (math_nan() if ctx.step in bad_steps else 1.0)
    runner = Runner(exp, tmp_path)
    before = {k: v.clone() for k, v in exp.translator.state_dict().items()}
    with pytest.raises(Diverged) as info:
        runner.run()
    assert info.value.step == 6 and info.value.count == 2
    assert info.value.last_checkpoint == 4
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped_steps"] for m in metrics] == [0, 0, 1, 1, 2]
    assert metrics[2]["loss"] is None  # NaN is written as null, never as invalid JSON
    status = json.loads((tmp_path / "run.json").read_text())
    assert status["status"] == "stopped" and "non-finite" in status["reason"]
    assert list_checkpoints(tmp_path)[0].name == "step_4"
    assert any(not torch.equal(v, before[k]) for k, v in exp.translator.state_dict().items())


def math_nan() -> float:
    return float("nan")


def test_resume_refuses_another_recipe_or_model_pair(random_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    Runner(make_experiment(random_pair, *OVERRIDES), tmp_path).run()
    with pytest.raises(LatentBridgeError, match="holds a run of another recipe"):
        Runner(make_experiment(random_pair, *OVERRIDES, "train.lr=0.5"), tmp_path).run(resume=True)
    before = outputs(tmp_path)
    with pytest.raises(LatentBridgeError, match="holds a run of another recipe"):
        Runner(make_experiment(random_pair, *OVERRIDES, reverse=True), tmp_path).run(resume=True)
    assert outputs(tmp_path) == before  # nothing was touched


def test_loading_a_translator_onto_another_pair_says_what_differs(random_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    Runner(make_experiment(random_pair, *OVERRIDES, "translator.d_src=null"), tmp_path).run()
    card = json.loads((tmp_path / "bridge_card.json").read_text())
    assert card["source"]["hidden_size"] == 32 and card["target"]["hidden_size"] == 24 and card["k"] == 3
    assert {"recipe_hash", "plugins", "latentbridge", "source_layer", "injection"} <= card.keys()
    other = make_experiment(random_pair, *OVERRIDES, "translator.k=5")
    with pytest.raises(LatentBridgeError, match=r"was trained for .* not for .*: k 3 -> 5"):
        other.load_translator(tmp_path)


@pytest.mark.parametrize("which", ["final", "best"])
def test_preempted_during_the_test_evaluations_resumes_them(random_pair, tmp_path, monkeypatch, which):
    """A signal during the end-of-run test evaluation of the final (or the dev-chosen) weights: the
    checkpoint holds the final weights (never the best ones loaded for their test evaluation), and the
    resumed run ends with the same files as an uninterrupted one."""
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    reference_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    Runner(make_experiment(random_pair, *OVERRIDES), reference_dir).run()
    best_step = json.loads((reference_dir / "summary.json").read_text())["best"]["step"]
    if which == "best" and best_step == STEPS:
        pytest.skip("the dev-chosen weights are the final ones in this run")
    runner = Runner(make_experiment(random_pair, *OVERRIDES), run_dir)
    test = runner.evaluators["test"]
    original = test.generate

    def generate(*args, **kwargs):
        if which == "final" or runner.state.test.get("final") is not None:
            runner.signal_name = "SIGTERM"
        return original(*args, **kwargs)

    test.generate = generate
    with pytest.raises(Preempted):
        runner.run()
    newest = list_checkpoints(run_dir)[0]
    from safetensors.torch import load_file

    assert load_file(str(newest / "translator.safetensors")).keys() == load_file(
        str(reference_dir / "translator.safetensors")).keys()
    for key, value in load_file(str(newest / "translator.safetensors")).items():
        assert torch.equal(value, load_file(str(reference_dir / "translator.safetensors"))[key])
    Runner(make_experiment(random_pair, *OVERRIDES), run_dir).run(resume=True)
    assert outputs(run_dir) == outputs(reference_dir)
    assert json.loads((run_dir / "summary.json").read_text())["test"] == json.loads(
        (reference_dir / "summary.json").read_text())["test"]
