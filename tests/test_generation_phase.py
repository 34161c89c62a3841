"""The source-generation phase of a latent relay run (``source.view: generation``) is a part of the run:
its folder exists from the first second, a stop signal ends it within seconds with exit 75 and the
solutions made so far saved, and the command it prints continues with only the missing ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentbridge.api.task import Prompt
from latentbridge.bridge.solutions import SolvingStopped, SourceSolutions


def _solutions_saved(cache: Path) -> int:
    files = list((cache / "solutions").glob("*.json"))
    return sum(len(json.loads(f.read_text())["solutions"]) for f in files)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGUSR1"])
def test_a_stop_signal_while_the_source_solves_exits_75_and_keeps_what_it_made(tmp_path, signame):
    env = {**os.environ, "LATENTBRIDGE_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "latentbridge", "run", "arith_relay", "task.n_train=1500", "train.steps=2",
            "train.warmup_steps=0", "eval.every=2", "eval.n=8", "eval.dev_n=8", f"run_dir={run_dir}"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in process.stdout:  # the folder exists before the models have even loaded
            lines.append(line)
            if "loading source" in line:
                assert json.loads((run_dir / "run.json").read_text())["status"] == "preparing"
            if "the source solves" in line:
                total = int(line.split("the source solves ")[1].split()[0])
                break
        _deadline = time.monotonic() + 60
        while _solutions_saved(tmp_path / "cache") == 0 if (tmp_path / "cache" / "solutions").is_dir() else True:
            assert time.monotonic() < _deadline, "".join(lines)
            time.sleep(0.1)
        sent = time.monotonic()
        process.send_signal(getattr(signal, signame))
        rest, _ = process.communicate(timeout=60)
        waited = time.monotonic() - sent
    finally:
        process.kill()
    output = "".join(lines) + rest
    assert process.returncode == 75, output
    assert waited < 15, waited
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["status"], info["phase"], info["signal"]) == ("preempted", "preparing", signame)
    done = info["solutions"]["done"]
    assert 0 < done < total == info["solutions"]["total"] and _solutions_saved(tmp_path / "cache") == done
    command = next(line for line in output.splitlines() if line.startswith("continue with: "))
    assert f"latentbridge run {run_dir / 'recipe.yaml'} run_dir={run_dir} --resume" in command
    if signame != "SIGINT":
        return
    # what it prints continues: the same recipe (its overrides kept), only the missing solutions
    again = subprocess.run([sys.executable, "-m", "latentbridge", *command.split()[3:]], env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"the source solves {total - done} prompts" in again.stdout
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


def test_resuming_a_preparing_run_with_another_recipe_is_refused(tmp_path):
    env = {**os.environ, "LATENTBRIDGE_CACHE_DIR": str(tmp_path / "cache")}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"status": "preempted", "phase": "preparing"}))
    first = subprocess.run([sys.executable, "-m", "latentbridge", "validate", "arith_relay"], env=env,
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    from latentbridge.config.recipe import load_recipe

    (run_dir / "recipe.yaml").write_text(load_recipe("arith_relay", ["task.n_train=1500"]).to_yaml())
    result = subprocess.run([sys.executable, "-m", "latentbridge", "run", "arith_relay", f"run_dir={run_dir}",
                             "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "holds a run of another recipe" in result.stderr and "Traceback" not in result.stderr


class _Source:
    """Stands in for the frozen source where only the solving loop is under test."""


def test_should_stop_is_asked_between_batches_and_saves_what_was_made(tmp_path, monkeypatch):
    import latentbridge.bridge.solutions as solutions_module

    made = []

    def fake_generate(model, tokenizer, inputs, **kwargs):
        made.append(inputs.inputs_embeds.shape[0])
        return [type("G", (), {"text": f"s{len(made)}-{i}", "token_ids": []})() for i in range(inputs.inputs_embeds.shape[0])]

    monkeypatch.setattr(solutions_module, "greedy_generate", fake_generate)
    monkeypatch.setattr(solutions_module, "assemble", lambda rows, soft, embed, pad: type(
        "I", (), {"inputs_embeds": __import__("torch").zeros(len(rows), 1, 1)})())
    encoder = type("E", (), {"prefix": [], "chat": None, "prompt_ids": lambda self, p: [ord(c) for c in p.text]})()
    source = type("S", (), {"fingerprint": {"x": 1}, "dtype": "float32", "model": None, "tokenizer": None,
                            "embed": None, "pad_id": 0, "eos_ids": lambda self: set()})()
    solutions = SourceSolutions(source, encoder, max_new_tokens=4, stop=[], batch_size=2, root=tmp_path)
    calls = iter([None, None, "SIGTERM"])
    solutions.should_stop = lambda: next(calls, "SIGTERM")
    prompts = [Prompt(header="", question=f"question {i}", cue="", answer="") for i in range(7)]
    with pytest.raises(SolvingStopped) as stopped:
        solutions.get(prompts, save=True)
    assert (stopped.value.done, stopped.value.total) == (4, 7) and made == [2, 2]
    saved = json.loads(solutions.path.read_text())["solutions"]
    assert len(saved) == 4
