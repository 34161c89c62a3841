"""The source hidden-state cache: right values, deterministic, keyed, inspectable."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from latentbridge.api.task import Example, Prompt
from latentbridge.bridge.source_cache import GROUP, SourceCache, rows_digest
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


def write_data_with_ids(src, data, train_ids, test_ids):
    """GSM8K-format train/test files whose records carry the given ``id`` fields."""
    data.mkdir()
    for name, ids in (("train.jsonl", train_ids), ("test.jsonl", test_ids)):
        lines = (src / name).read_text().splitlines()[: len(ids)]
        records = [json.dumps({**json.loads(line), "id": i}) + "\n" for line, i in zip(lines, ids, strict=True)]
        (data / name).write_text("".join(records))


def test_ids_repeated_between_splits_never_share_hidden_states(random_pair, gsm8k_slice, tmp_path):
    """The issue's case: ids 0-19 in train and 0-9 in test. Every example of every split must get the
    hidden states of its own prompt, never those of the test example with the same id."""
    data = tmp_path / "data"
    write_data_with_ids(gsm8k_slice, data, range(20), range(10))
    exp = make_experiment(random_pair, "cache.source=true", "task={name: gsm8k, data_dir: " + str(data) + "}")
    bridge, task = exp.bridge, exp.task
    ids = {split: {e.id for e in task.examples(split)} for split in ("train", "dev", "test")}
    assert ids["train"] & ids["test"] and ids["dev"] & ids["test"]  # the ids do repeat between splits
    for split in ("train", "dev", "test"):
        examples = task.examples(split)
        prompts = [task.prompt(e) for e in examples]
        cached, mask = bridge.source_hidden(prompts, examples)
        direct, direct_mask = bridge.source_hidden(prompts)
        assert torch.equal(mask.sum(1), direct_mask.sum(1)), split
        for i in range(len(examples)):
            torch.testing.assert_close(cached[i][mask[i].bool()], direct[i][direct_mask[i].bool()], rtol=1e-4, atol=1e-5)
    shards = sorted(p.name for p in bridge.source_cache.dir.glob("*.safetensors"))
    assert shards == ["dev-000000.safetensors", "test-000000.safetensors", "train-000000.safetensors"]


def fake_cache(tmp_path, splits, computed=None):
    """A cache over ``splits`` whose 'source' reads a prompt's characters and returns them as its hidden states."""
    def rows(prompts):
        return [[ord(c) for c in p.text] for p in prompts]

    def compute(prompts):
        if computed is not None:
            computed.extend(p.text for p in prompts)
        return [torch.tensor(r, dtype=torch.float32)[:, None] for r in rows(prompts)]

    def prompt(e):
        return Prompt(header="", question=e.question, cue="?", answer=e.answer)

    return SourceCache(tmp_path / "cache", {"fake": 1}, splits, prompt, rows, compute)


def text_of(h):
    return "".join(chr(int(v)) for v in h[:, 0])


def test_entries_are_keyed_by_split_and_what_the_source_reads_never_by_id(tmp_path):
    train = [Example("7", "train seven", "a"), Example("8", "train eight", "b"), Example("7", "other seven", "c")]
    test = [Example("7", "test seven", "d"), Example("8", "train eight", "b2")]
    cache = fake_cache(tmp_path, {"train": train, "dev": [], "test": test})
    asked = [test[0], train[0], train[2], test[1], train[1]]
    assert [text_of(h) for h in cache.get(asked)] == [e.question + "?" for e in asked]
    # a second process that asks in another order reads the same entries from disk
    again = fake_cache(tmp_path, {"train": train, "dev": [], "test": test})
    assert [text_of(h) for h in again.get(asked[::-1])] == [e.question + "?" for e in asked[::-1]]
    assert again.misses == 0
    # each split has its own shard; entries are named by a digest of the rows, and equal rows
    # within a split (none here) would be one entry
    from safetensors import safe_open

    for split, examples in (("train", train), ("test", test)):
        with safe_open(str(cache.shard_path(split, 0)), framework="pt") as shard:
            names = set(shard.keys())
        assert names == {rows_digest([ord(c) for c in e.question + "?"]) for e in examples}
        assert not names & {e.id for e in examples}
    assert cache.entry(train[1]) == ("train", rows_digest([ord(c) for c in "train eight?"]))
    assert cache.entry(test[1])[0] == "test"
    # an example in no split is computed, not stored
    (h,) = cache.get([Example("7", "nowhere", "x")])
    assert text_of(h) == "nowhere?"


def test_a_shard_written_from_other_prompts_is_recomputed(tmp_path):
    before = [Example("0", "old question", "a")]
    fake_cache(tmp_path, {"train": before}).get(before)
    after = [Example("0", "new question", "a")]
    computed = []
    cache = fake_cache(tmp_path, {"train": after}, computed)  # the same key (a stale folder): the digest differs
    assert [text_of(h) for h in cache.get(after)] == ["new question?"]
    assert computed == ["new question?"]


def test_supervise_leaves_both_cache_keys_alone(random_pair, tmp_path):
    """What training supervises (task.supervise) changes neither what the source reads nor the baselines:
    runs that differ only in it share both caches; a setting the models do read still changes them."""
    from latentbridge.eval.harness import EvalSettings, Evaluator

    def keys(*extra):
        exp = make_experiment(random_pair, "cache.source=true", *extra)
        ev = Evaluator(exp.bridge, exp.task, EvalSettings(n=4, batch_size=4, max_new_tokens=4, stop=[], systems=["target"]),
                       tmp_path / "ev")
        return exp.bridge.source_cache.dir, json.dumps(ev.baseline_key(), sort_keys=True)

    solution = keys()
    assert keys("task.supervise=final_line") == solution
    assert "supervise" not in solution[1]
    other = keys("task.shots=1")
    assert other[0] != solution[0] and other[1] != solution[1]
