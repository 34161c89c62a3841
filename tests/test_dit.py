"""The DiT done right: no teacher in what the target reads, deterministic evaluation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from latentbridge.errors import LatentBridgeError
from latentbridge.eval.harness import EvalSettings, Evaluator
from latentbridge.train.steps import StepBuilder

from .helpers import make_experiment

DIT = ["translator={name: dit, k: 4, d_model: 16, heads: 2, sample_steps: 2}", "objectives.dit_flow.weight=0.1"]


@pytest.mark.parametrize("teacher", ["answer", "prompt"])
def test_the_target_reads_nothing_of_the_teacher_in_training(random_pair, teacher):
    exp = make_experiment(random_pair, *DIT, f"teacher={teacher}")
    examples = exp.task.examples("train")[:4]
    others = exp.task.examples("train")[4:8]
    altered = [dataclasses.replace(e, answer=o.answer) for e, o in zip(examples, others, strict=True)]
    ctx = StepBuilder(exp, torch.Generator().manual_seed(0)).context(1, examples)
    ctx_altered = StepBuilder(exp, torch.Generator().manual_seed(0)).context(1, altered)
    # another gold answer changes the (answer) teacher, but not the soft tokens the target reads
    assert torch.equal(ctx.soft, ctx_altered.soft)
    # and they are exactly what evaluation produces for the same seeds: no training-only path
    with torch.no_grad():
        again = exp.bridge.soft_tokens(ctx.prompts, ctx.seeds)
    torch.testing.assert_close(again, ctx.soft.detach())
    flow = exp.objectives["dit_flow"]
    a = float(flow(ctx).detach())
    b = float(flow(ctx_altered).detach())
    assert (a != b) == (teacher == "answer")  # the teacher is the regression target, nothing more


def test_evaluating_a_dit_twice_gives_identical_files(random_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    exp = make_experiment(random_pair, *DIT)
    settings = EvalSettings(n=6, batch_size=4, max_new_tokens=6, stop=["\n\n"], systems=["bridged"])
    Evaluator(exp.bridge, exp.task, settings, tmp_path / "a").evaluate(step=1)
    settings_other_batching = dataclasses.replace(settings, batch_size=5)
    Evaluator(exp.bridge, exp.task, settings_other_batching, tmp_path / "b").evaluate(step=1)
    a = (tmp_path / "a" / "eval_samples_test_step_1.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "eval_samples_test_step_1.jsonl").read_bytes()


def test_dit_flow_needs_a_dit(random_pair):
    with pytest.raises(LatentBridgeError, match="dit_flow needs a translator with a flow loss"):
        make_experiment(random_pair, "objectives.dit_flow.weight=0.1")
