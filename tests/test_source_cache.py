"""The source hidden-state cache: right values, deterministic, keyed, inspectable."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from latentbridge.bridge.source_cache import GROUP
from latentbridge.cli import app
from latentbridge.train.runner import Runner

from .helpers import make_experiment


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))


def test_cached_hidden_states_match_the_source(random_pair):
    exp = make_experiment(random_pair, "cache.source=true")
    bridge, task = exp.bridge, exp.task
    examples = task.examples("train")[3:7]
    prompts = [task.prompt(e) for e in examples]
    cached, mask = bridge.source_hidden(prompts, examples)
    direct, direct_mask = bridge.source_hidden(prompts)
    assert torch.equal(mask.sum(1), direct_mask.sum(1))
    for i in range(len(examples)):
        torch.testing.assert_close(cached[i][mask[i].bool()], direct[i][direct_mask[i].bool()], rtol=1e-4, atol=1e-5)
    cache = bridge.source_cache
    assert cache.misses == 1 and len(list(cache.dir.glob("train-*.safetensors"))) == 1  # one shard of GROUP
    bridge.source_hidden(prompts, examples)
    assert cache.hits == 4 + 3 and cache.misses == 1


def test_values_do_not_depend_on_who_asked_first(random_pair, tmp_path, monkeypatch):
    files = []
    for run, order in (("a", slice(0, 3)), ("b", slice(GROUP - 3, GROUP))):
        monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / run))
        exp = make_experiment(random_pair, "cache.source=true")
        examples = exp.task.examples("train")[order]
        exp.bridge.source_hidden([exp.task.prompt(e) for e in examples], examples)
        (shard,) = exp.bridge.source_cache.dir.glob("train-000000.safetensors")
        files.append(shard.read_bytes())
    assert files[0] == files[1]


def test_the_key_changes_with_layer_and_prompt_settings(random_pair):
    dirs = {make_experiment(random_pair, "cache.source=true", *extra).bridge.source_cache.dir
            for extra in ([], ["models.source_layer=1"], ["task.shots=1"], [])}
    assert len(dirs) == 3


def test_training_with_the_cache_is_deterministic_and_second_epoch_hits(random_pair, tmp_path):
    overrides = ["cache.source=true", "task.n_train=8", "train.steps=6", "eval.every=100", "eval.n=2",
                 "eval.systems=[bridged]"]
    weights = []
    for run in ("a", "b"):
        exp = make_experiment(random_pair, *overrides)
        Runner(exp, tmp_path / run).run()
        weights.append((tmp_path / run / "translator.safetensors").read_bytes())
    assert weights[0] == weights[1]
    cache = exp.bridge.source_cache
    assert cache.misses == 0  # run b found every shard run a wrote


def test_cache_info_and_clear(random_pair, tmp_path):
    exp = make_experiment(random_pair, "cache.source=true")
    examples = exp.task.examples("train")[:2]
    exp.bridge.source_hidden([exp.task.prompt(e) for e in examples], examples)
    cli = CliRunner()
    info = cli.invoke(app, ["cache", "info", "--json"])
    assert info.exit_code == 0, info.output
    rows = json.loads(info.stdout)["entries"]
    assert [r["kind"] for r in rows] == ["source"] and rows[0]["entries"] == 1 and rows[0]["bytes"] > 0
    cleared = cli.invoke(app, ["cache", "clear", "--kind", "source"])
    assert cleared.exit_code == 0
    assert json.loads(cli.invoke(app, ["cache", "info", "--json"]).stdout)["entries"] == []
    bad = cli.invoke(app, ["cache", "clear", "--kind", "weights"])
    assert bad.exit_code == 2 and "--kind must be 'source' or 'baselines'" in bad.stderr


def test_a_data_file_edited_in_place_changes_both_cache_keys(random_pair, gsm8k_slice, tmp_path):
    """Example ids of a JSONL task are line numbers: an edited question must not reuse stale rows."""
    from latentbridge.eval.harness import EvalSettings, Evaluator

    data = tmp_path / "data"
    data.mkdir()
    for name, lines in (("train.jsonl", 20), ("test.jsonl", 6)):
        (data / name).write_text("".join((gsm8k_slice / name).read_text().splitlines(keepends=True)[:lines]))

    def keys():
        exp = make_experiment(random_pair, "cache.source=true", "task={name: gsm8k, data_dir: " + str(data) + "}")
        ev = Evaluator(exp.bridge, exp.task, EvalSettings(n=6, batch_size=4, max_new_tokens=4, stop=[], systems=["target"]),
                       tmp_path / "ev")
        return exp.bridge.source_cache.dir, ev.baseline_key()

    before = keys()
    assert keys() == before  # the same data: the same keys
    lines = (data / "test.jsonl").read_text().splitlines(keepends=True)
    record = json.loads(lines[2])
    record["question"] = record["question"].replace("?", "? (edited)")
    lines[2] = json.dumps(record) + "\n"
    (data / "test.jsonl").write_text("".join(lines))
    after = keys()
    assert after[0] != before[0] and after[1]["items"] != before[1]["items"]
