"""Experiment loggers, read back with each library's own reader, offline.

TensorBoard: its event accumulator. MLflow: its client on the local file store. W&B: the offline run
file (``run-<id>.wandb``: records in LevelDB log framing, each a protobuf ``Record`` from
``wandb.proto``), parsed with W&B's own protobuf classes; that is the file ``wandb sync`` uploads.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latentbridge.cli import app
from latentbridge.train.runner import Runner

from .helpers import make_experiment, recipe_dict

OVERRIDES = ("train.steps=4", "train.log_every=2", "eval.every=2", "eval.n=4")


def run_with(random_pair, tmp_path: Path, loggers) -> Path:
    run_dir = tmp_path / "run"
    Runner(make_experiment(random_pair, *OVERRIDES, f"loggers={json.dumps(loggers)}"), run_dir).run()
    return run_dir


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def evaluations(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "summary.json").read_text())["evaluations"]


def test_tensorboard_holds_every_term_and_every_accuracy(random_pair, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = run_with(random_pair, tmp_path, ["tensorboard"])
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for line in metrics(run_dir):
        for key in ("loss", "loss/nll", "lr", "grad_norm", "weight/nll"):
            (event,) = [e for e in acc.Scalars(key) if e.step == line["step"]]
            assert event.value == pytest.approx(line[key], rel=1e-6), key
    assert "speed/examples_per_s" in tags
    summary = json.loads((run_dir / "summary.json").read_text())
    written = [("dev", e) for e in evaluations(run_dir)] + [("test", summary["test"]["final"])]
    if summary["test"].get("best") is not None:
        written.append(("test_best", summary["test"]["best"]))
    for prefix, evaluation in written:  # each evaluation under its own name, at its own step
        step = evaluation["step"]
        for system, s in evaluation["systems"].items():
            if s is None:
                continue
            (event,) = [e for e in acc.Scalars(f"{prefix}/{system}/accuracy") if e.step == step]
            assert event.value == pytest.approx(s["accuracy"])
            (low,) = [e for e in acc.Scalars(f"{prefix}/{system}/ci_low") if e.step == step]
            assert low.value == pytest.approx(s["ci95"][0])
    # the final and the dev-chosen weights' test evaluations never share a name: no tag has two points at
    # one step (they did when best_step was the last step), and the best one is under test_best/
    for tag in tags:
        steps = [e.step for e in acc.Scalars(tag)]
        assert len(steps) == len(set(steps)), tag
    assert summary["test"].get("best") is None or acc.Scalars("test_best/bridged/accuracy")


def test_mlflow_local_store_holds_params_metrics_and_the_bridge_card(random_pair, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_dir = run_with(random_pair, tmp_path, ["mlflow"])
    client = MlflowClient((run_dir / "mlruns").resolve().as_uri())
    run = client.get_run((run_dir / "mlflow_run_id").read_text().strip())
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.01"
    assert run.data.params["translator.name"] == "linear"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss.nll")}
    assert history == {line["step"]: pytest.approx(line["loss/nll"]) for line in metrics(run_dir)}
    final = evaluations(run_dir)[-1]
    bridged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "test.bridged.accuracy")}
    assert bridged[final["step"]] == pytest.approx(final["systems"]["bridged"]["accuracy"])
    assert "bridge_card.json" in [a.path for a in client.list_artifacts(run.info.run_id)]


def wandb_records(path: Path) -> list:
    """Every protobuf ``Record`` of a W&B offline run file (LevelDB log framing, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # a block's tail too short for a header is padding
            pos += room
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_holds_config_and_metrics(random_pair, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    run_dir = run_with(random_pair, tmp_path, ["wandb"])
    (run_file,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    # wandb's service process writes the offline file on its own schedule: on a loaded machine its records
    # (the run record with the config among them) can land after wandb.finish() returns; wait for the
    # closing `exit` record (at most a minute)
    deadline = time.monotonic() + 60
    records = wandb_records(run_file)
    while not any(r.WhichOneof("record_type") == "exit" for r in records) and time.monotonic() < deadline:
        time.sleep(0.5)
        records = wandb_records(run_file)
    history: dict[int, dict] = {}
    config: dict = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            history.setdefault(items["_step"], {}).update(items)
        elif kind in ("run", "config"):  # the config comes with the run record, or in config records
            items = record.run.config.update if kind == "run" else record.config.update
            config.update({i.key: json.loads(i.value_json) for i in items})
    config = {k: v["value"] if isinstance(v, dict) and set(v) == {"value"} else v for k, v in config.items()}
    assert config["train"]["lr"] == 0.01 and config["translator"]["name"] == "linear"
    for line in metrics(run_dir):
        assert history[line["step"]]["loss/nll"] == pytest.approx(line["loss/nll"])
    final = evaluations(run_dir)[-1]
    assert history[final["step"]]["test/bridged/accuracy"] == pytest.approx(final["systems"]["bridged"]["accuracy"])


def test_extra_loggers_leave_metrics_jsonl_unchanged(random_pair, tmp_path):
    pytest.importorskip("tensorboard")
    plain = run_with(random_pair, tmp_path / "a", [])
    logged = run_with(random_pair, tmp_path / "b", ["tensorboard"])
    assert (plain / "metrics.jsonl").read_bytes() == (logged / "metrics.jsonl").read_bytes()
    assert not (plain / "tensorboard").exists()


def test_a_logger_that_is_not_installed_is_a_recipe_problem_naming_the_extra(random_pair, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(recipe_dict(random_pair, "loggers=[wandb]")))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2
    assert 'loggers.wandb: needs wandb, which is not installed: pip install "latentbridge[wandb]"' in result.output


def test_an_unknown_logger_has_a_did_you_mean(random_pair, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(recipe_dict(random_pair, "loggers=[tensorbord]")))
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2
    assert "did you mean 'tensorboard'" in result.output


def test_progress_lines_when_stdout_is_not_a_terminal(random_pair, tmp_path):
    """CliRunner's output is not a terminal, like a SLURM log: plain lines while it trains."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(recipe_dict(random_pair, *OVERRIDES, f"run_dir={tmp_path / 'run'}")))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("step 2/4 loss=") for line in lines)
    assert any(line.startswith("step 4/4 loss=") for line in lines)
    assert sum(line.startswith("step 2 (test): ") for line in lines) == 1
    assert lines.index(next(x for x in lines if x.startswith("step 2/4"))) < lines.index(
        next(x for x in lines if x.startswith("step 4/4")))


def test_a_run_that_fails_before_it_starts_names_no_run_folder(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps({**recipe_dict({"llama": tmp_path, "mistral": tmp_path}),
                                  "models": {"source": str(tmp_path / "missing"), "target": "tiny-mistral"},
                                  "run_dir": str(tmp_path / "run")}))
    result = CliRunner().invoke(app, ["run", str(recipe)])
    assert result.exit_code == 2
    assert "run folder" not in result.output
    assert not (tmp_path / "run").exists()
