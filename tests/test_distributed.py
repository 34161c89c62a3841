"""torchrun with the gloo backend and 2 CPU processes: the same global batch trains the same translator
as 1 process (within floating-point tolerance), and the evaluation files match exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from .helpers import recipe_dict

OVERRIDES = [
    "train.steps=4", "train.batch_size=4", "train.log_every=1", "eval.every=2", "eval.n=6", "eval.dev_n=6", "eval.batch_size=2",
    "eval.max_new_tokens=5", "objectives.nll.reduction=example", "objectives.contrastive_prompt.weight=0.5",
    "translator={name: resampler, k: 3, d_model: 16, heads: 2}", "task.exemplars=per_item", "task.shots=1",
]


def env(cache):
    return {**os.environ, "LATENTBRIDGE_CACHE_DIR": str(cache), "LATENTBRIDGE_DISABLE_PLUGIN_AUTOLOAD": "1",
            "OMP_NUM_THREADS": "1"}


def launch(recipe, run_dir, cache, *extra):
    return subprocess.run([sys.executable, "-m", "latentbridge", "run", str(recipe), f"run_dir={run_dir}", *extra],
                          env=env(cache), capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("translator", ["resampler", "dit"])
def test_two_processes_match_one(random_pair, tmp_path, translator):
    extra = [] if translator == "resampler" else [
        "translator={name: dit, k: 3, d_model: 16, heads: 2, sample_steps: 2}", "objectives.dit_flow.weight=0.1"]
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(random_pair, *OVERRIDES, *extra)))
    one = launch(recipe, tmp_path / "one", tmp_path / "cache1")
    assert one.returncode == 0, one.stderr
    two = launch(recipe, tmp_path / "two", tmp_path / "cache2", "--nproc", "2")
    assert two.returncode == 0, two.stderr
    a = load_file(str(tmp_path / "one" / "translator.safetensors"))
    b = load_file(str(tmp_path / "two" / "translator.safetensors"))
    assert a.keys() == b.keys()
    # Adam normalises each update, so a weight whose gradient is ~0 can move by up to lr per step on
    # float noise alone: weights are compared at lr-scale tolerance, the gradients themselves tightly
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-3)
    metrics = [[json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in ("one", "two")]
    for m1, m2 in zip(*metrics, strict=True):
        for key in ("loss", "loss/nll", "loss/contrastive_prompt", "grad_norm"):  # a mis-averaged gradient shows here
            assert m1[key] == pytest.approx(m2[key], rel=1e-4)
    speed = [json.loads(x) for x in (tmp_path / "two" / "speed.jsonl").read_text().splitlines()]
    assert {s["processes"] for s in speed} == {2}
    for step in (2, 4):
        two_records = (tmp_path / "two" / f"eval_samples_dev_step_{step}.jsonl").read_text().splitlines()
        assert [json.loads(r)["index"] for r in two_records] == list(range(6))  # each item once, in order
    # the same weights evaluated by 2 processes give the very file 1 process wrote
    sharded = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "latentbridge",
         "eval", str(tmp_path / "one"), "--step", "final"],
        env=env(tmp_path / "cache3"), capture_output=True, text=True, timeout=600,
    )
    assert sharded.returncode == 0, sharded.stderr
    assert (tmp_path / "one" / "eval_final" / "eval_samples_test_step_4.jsonl").read_text() == \
        (tmp_path / "one" / "eval_samples_test_step_4.jsonl").read_text()


def test_global_batch_must_split_evenly(random_pair, tmp_path):
    recipe = tmp_path / "odd.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(random_pair, *OVERRIDES, "train.batch_size=3")))
    result = launch(recipe, tmp_path / "odd", tmp_path / "cache", "--nproc", "2")
    assert result.returncode != 0
    assert "must be divisible by the number of processes (2)" in result.stderr


def test_nproc_without_run_dir_or_overrides_picks_one_folder_for_every_process(random_pair, tmp_path):
    """The folder is chosen once, before the relaunch; --resume finds the recipe's runs the same way."""
    recipe = tmp_path / "plain.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(random_pair, *OVERRIDES)))

    def cli(*extra):
        return subprocess.run([sys.executable, "-m", "latentbridge", "run", str(recipe), "--nproc", "2", *extra],
                              env=env(tmp_path / "cache"), capture_output=True, text=True, timeout=600, cwd=tmp_path)

    first = cli()
    assert first.returncode == 0, first.stderr
    (run_dir,) = (tmp_path / "runs").glob("tiny-*")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert (run_dir / "eval_samples_test_step_4.jsonl").is_file()
    again = cli("--resume")
    assert again.returncode == 2
    assert "nothing to resume: the runs of 'tiny' in runs/ are finished" in again.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_match_one_process(random_pair, tmp_path):
    """Two machines (two launchers on 127.0.0.1, one process each, torchrun's static rendezvous) train what
    one process trains with the same global batch, and write the same evaluation files."""
    recipe = tmp_path / "nodes.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(random_pair, *OVERRIDES)))
    one = launch(recipe, tmp_path / "one", tmp_path / "cache1")
    assert one.returncode == 0, one.stderr
    port = _free_port()
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "latentbridge", "run", str(recipe), f"run_dir={tmp_path / 'two'}", "--nnodes", "2",
         "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port)],
        env=env(tmp_path / f"cache-node{rank}"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    a = load_file(str(tmp_path / "one" / "translator.safetensors"))
    b = load_file(str(tmp_path / "two" / "translator.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-3)
    speed = [json.loads(x) for x in (tmp_path / "two" / "speed.jsonl").read_text().splitlines()]
    assert {s["processes"] for s in speed} == {2}
    assert (tmp_path / "one" / "eval_samples_test_step_4.jsonl").read_text() == \
        (tmp_path / "two" / "eval_samples_test_step_4.jsonl").read_text()


@pytest.mark.parametrize(("args", "line"), [
    (["--nnodes", "2", "--node-rank", "2", "--master-addr", "127.0.0.1"], "--node-rank 2 is out of range for --nnodes 2 (0..1)"),
    (["--nnodes", "2", "--node-rank", "-1", "--master-addr", "127.0.0.1"], "--node-rank -1 is out of range"),
    (["--nnodes", "2", "--node-rank", "1"], "give --master-addr"),
    (["--nnodes", "0"], "--nnodes must be at least 1"),
    (["--nnodes", "2", "--master-addr", "h", "--master-port", "70000"], "--master-port must be a port number"),
])
def test_bad_node_arguments_are_one_line_and_exit_2(random_pair, tmp_path, args, line):
    recipe = tmp_path / "nodes.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(random_pair, *OVERRIDES)))
    result = subprocess.run([sys.executable, "-m", "latentbridge", "run", str(recipe), f"run_dir={tmp_path / 'r'}",
                             *args], env=env(tmp_path / "cache"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert line in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()


def test_several_nodes_need_a_shared_run_dir(random_pair, tmp_path):
    recipe = tmp_path / "nodes.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(random_pair, *OVERRIDES)))
    result = subprocess.run([sys.executable, "-m", "latentbridge", "run", str(recipe), "--nnodes", "2",
                             "--master-addr", "127.0.0.1"], env=env(tmp_path / "cache"), capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "give run_dir=" in result.stderr
