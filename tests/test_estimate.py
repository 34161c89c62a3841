"""``validate --estimate``: parameters, memory and seconds per step from a short measured probe, written nowhere."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from latentbridge.cli import app
from latentbridge.train.estimate import PeakMemory, estimate

from .helpers import make_experiment, make_recipe, recipe_dict


def parameters(folder) -> int:
    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(folder).parameters())


def test_the_estimate_counts_what_the_recipe_loads_and_trains(random_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    recipe = make_recipe(random_pair, "translator=resampler", "translator.k=4", "train.steps=40", "train.grad_accum=2")
    found = estimate(recipe, probe_steps=2)
    assert found.source_parameters == parameters(random_pair["llama"]) != found.target_parameters
    assert found.target_parameters == parameters(random_pair["mistral"])
    trainable = sum(p.numel() for p in make_experiment(random_pair, "translator=resampler",
                                                       "translator.k=4").trainable_parameters())
    assert found.trainable_parameters == trainable and found.trainable_bytes == 4 * trainable  # fp32
    # AdamW keeps two moments per parameter (and a step count per tensor)
    assert 2 * found.trainable_bytes <= found.optimizer_bytes <= 2 * found.trainable_bytes + 8 * 64
    assert found.frozen_bytes == 4 * (found.source_parameters + found.target_parameters)
    assert found.batch_size == 8 and found.probe_steps == 2 and found.train_steps == 40
    assert found.step_seconds > 0 and found.train_seconds == pytest.approx(40 * found.step_seconds)
    assert found.solve_seconds is None  # source.view: prompt solves nothing
    if sys.platform == "linux":
        assert found.peak_bytes == found.static_bytes + found.step_extra_bytes
    assert list(tmp_path.iterdir()) == []  # no run folder, no cache entry: the probe writes nowhere of the user's


def test_a_generation_view_recipe_times_the_source_solving_every_prompt_it_will_need(random_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    recipe = make_recipe(random_pair, "source.view=generation", "train.max_train_examples=30")
    found = estimate(recipe, probe_steps=1)
    # a run solves the train items it uses, then dev and test (the tiny recipe: 30 + 6 + 12, all distinct)
    assert found.prompts_to_solve == 30 + 6 + 12
    assert found.solve_seconds_per_prompt > 0
    assert found.solve_seconds == pytest.approx(found.solve_seconds_per_prompt * 48)
    assert not (tmp_path / "cache").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="the CPU peak is read from /proc")
def test_peak_memory_sees_what_a_block_holds_at_its_peak():
    with PeakMemory(torch.device("cpu")) as small:
        torch.ones(1000).sum()
    with PeakMemory(torch.device("cpu")) as big:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
        block.add_(1)
        del block
    assert big.extra >= 60 * 2**20 > small.extra


def test_validate_estimate_through_the_cli(random_pair, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(recipe_dict(random_pair, "train.steps=1200")))
    result = CliRunner().invoke(app, ["validate", str(recipe), "--estimate", "--estimate-steps", "2"])
    assert result.exit_code == 0, result.output
    for words in ("is a valid recipe", "parameters", "static memory", "peak memory", "seconds per step",
                  "1,200 steps", "from 2 measured steps"):
        assert words in result.output, words
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]
    bad = CliRunner().invoke(app, ["validate", str(recipe), "--estimate", "--estimate-steps", "0"])
    assert bad.exit_code == 2 and "--estimate-steps must be at least 1" in bad.output
    shown = CliRunner().invoke(app, ["validate", str(recipe), "--show", "--estimate", "--estimate-steps", "1"])
    assert shown.exit_code == 0 and "seconds per step" in shown.stderr
    assert yaml.safe_load(shown.stdout)["train"]["steps"] == 1200  # stdout: the resolved recipe alone
    plain = CliRunner().invoke(app, ["validate", str(recipe)])  # without --estimate nothing loads or runs
    assert plain.exit_code == 0 and "seconds per step" not in plain.output


def test_a_training_free_recipe_is_estimated_without_a_step(tmp_path, monkeypatch):
    """``ac`` (train.steps: 0, nothing trainable): parameters and memory, no step timed, no traceback."""
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["validate", "ac", "--estimate"])
    assert result.exit_code == 0, result.output
    assert "no training step" in result.output and "train.steps is 0" in result.output
    assert "seconds per step" not in result.output and "static memory" in result.output


def test_the_measured_window_holds_the_timed_steps_and_their_gradients(random_pair, tmp_path, monkeypatch):
    """What the peak covers: the timed steps (not the warm-up) run inside the window, which opens with no
    gradient held, so the steps' own gradients count in what a step adds."""
    from latentbridge.train import estimate as module
    from latentbridge.train.runner import Runner

    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    events, runners = [], []
    enter, leave, step = module.PeakMemory.__enter__, module.PeakMemory.__exit__, Runner.train_step

    def stepping(self, n):
        runners[:] = [self]
        events.append(("step", n))
        return step(self, n)

    def entering(self):
        held = [p.grad for p in runners[0].exp.trainable_parameters() if p.grad is not None]
        events.append(("enter", len(held)))
        return enter(self)

    monkeypatch.setattr(module.PeakMemory, "__enter__", entering)
    monkeypatch.setattr(module.PeakMemory, "__exit__", lambda self, *exc: events.append(("exit",)) or leave(self, *exc))
    monkeypatch.setattr(Runner, "train_step", stepping)
    estimate(make_recipe(random_pair, "train.steps=40"), probe_steps=2)
    assert events == [("step", 1), ("enter", 0), ("step", 2), ("step", 3), ("exit",)]
