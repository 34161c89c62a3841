"""Errors a user can cause: one clear line (one per problem for a recipe), exit code 2, nothing damaged.

Each test is a row of the README's bad-input table.
"""

from __future__ import annotations

import json
import shutil
import types

import pytest
import yaml
from typer.testing import CliRunner

from latentbridge import Objective, hookimpl
from latentbridge.cli import app
from latentbridge.registry import host as registry

from .helpers import recipe_dict

cli = CliRunner()
FAST = ["train.steps=2", "eval.every=2", "eval.n=2", "eval.max_new_tokens=2", "train.log_every=1"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))


def write_recipe(tmp_path, data, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def run_cli(*args):
    return cli.invoke(app, [str(a) for a in args])


def assert_user_error(result, *lines):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    err = result.stderr.strip().splitlines()
    assert err[0].startswith("error: "), err
    for line in lines:
        assert line in result.stderr, result.stderr


def test_malformed_yaml_names_the_line(tmp_path):
    path = write_recipe(tmp_path, "name: x\ntrain:\n  steps: 3\n   lr: 2\n")
    assert_user_error(run_cli("run", path), f"error: {path}:4:6: malformed YAML")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stepz=3", "train.stepz: unknown key (did you mean 'steps'?)"),
        ("translator.name=linaer", "translator: unknown translator 'linaer' (did you mean 'linear'?)"),
        ("objectives.nll.weight=-1", "objectives.nll.weight: expected a number >= 0, got -1"),
        ("objectives.nll.weight=abc", 'objectives.nll.weight: expected a number >= 0, got "abc"'),
        ("translator.k=0", "translator.k: expected an integer > 0, got 0"),
        ("eval.every=0", "eval.every: expected an integer > 0, got 0"),
        ("train.batch_size=two", 'train.batch_size: expected an integer > 0, got "two"'),
    ],
)
def test_recipe_mistakes(random_pair, tmp_path, override, message):
    path = write_recipe(tmp_path, recipe_dict(random_pair))
    result = run_cli("run", path, override)
    assert_user_error(result, message)
    assert len(result.stderr.strip().splitlines()) == 2  # the header and the one problem


def test_missing_model_folder(random_pair, tmp_path):
    path = write_recipe(tmp_path, recipe_dict(random_pair, "models.source=/no/such/model"))
    assert_user_error(run_cli("run", path, f"run_dir={tmp_path / 'run'}"),
                      "error: model not found: '/no/such/model' is neither a built-in model")
    assert not (tmp_path / "run").exists()


def test_a_folder_that_is_not_a_model(random_pair, tmp_path):
    (tmp_path / "empty").mkdir()
    path = write_recipe(tmp_path, recipe_dict(random_pair, f"models.target={tmp_path / 'empty'}"))
    assert_user_error(run_cli("run", path), "has no config.json (not a Hugging Face model folder)")


def test_tokenizer_without_pad_token_is_handled(random_pair, tmp_path):
    folder = tmp_path / "nopad"
    shutil.copytree(random_pair["mistral"], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("pad_token")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    path = write_recipe(tmp_path, recipe_dict(random_pair, f"models.target={folder}", *FAST))
    result = run_cli("run", path, f"run_dir={tmp_path / 'run'}")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "finished"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "data file not found: {dir}/test.jsonl"),
        ("", "{dir}/test.jsonl: no examples (the file is empty)"),
        ('{"question": "q", "answer": "#### 1"}\n{"question": oops}\n', "{dir}/test.jsonl:2: not valid JSON"),
    ],
    ids=["missing", "empty", "malformed-line"],
)
def test_bad_data_files(random_pair, tmp_path, gsm8k_slice, content, message):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(gsm8k_slice / "train.jsonl", data / "train.jsonl")
    if content is not None:
        (data / "test.jsonl").write_text(content)
    path = write_recipe(tmp_path, recipe_dict(random_pair, "task={name: gsm8k}", f"task.data_dir={data}"))
    assert_user_error(run_cli("run", path, f"run_dir={tmp_path / 'run'}"), message.format(dir=data))
    assert not (tmp_path / "run").exists()


def test_an_id_that_repeats_within_a_data_file(random_pair, tmp_path, gsm8k_slice):
    """Ids may repeat between train and test (each split has its own), never within one file."""
    data = tmp_path / "data"
    data.mkdir()
    lines = (gsm8k_slice / "train.jsonl").read_text().splitlines()[:20]
    ids = [str(i) for i in range(20)]
    ids[11] = "7"  # line 12 repeats the id of line 8
    records = [json.dumps({**json.loads(x), "id": i}) + "\n" for x, i in zip(lines, ids, strict=True)]
    (data / "train.jsonl").write_text("".join(records))
    shutil.copy(gsm8k_slice / "test.jsonl", data / "test.jsonl")
    path = write_recipe(tmp_path, recipe_dict(random_pair, "task={name: gsm8k}", f"task.data_dir={data}"))
    result = run_cli("run", path, f"run_dir={tmp_path / 'run'}")
    assert_user_error(result, f"error: {data}/train.jsonl:12: id '7' repeats line 8")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_translator_widths_that_do_not_match(random_pair, tmp_path):
    path = write_recipe(tmp_path, recipe_dict(random_pair, "translator.d_tgt=100"))
    assert_user_error(run_cli("run", path), "translator.d_tgt: is 100 but")
    assert_user_error(run_cli("validate", path), "translator.d_tgt: is 100 but")  # found from config.json alone


def test_a_translator_from_another_model_pair(random_pair, tmp_path):
    path = write_recipe(tmp_path, recipe_dict(random_pair, *FAST))
    run_dir = tmp_path / "run"
    assert run_cli("run", path, f"run_dir={run_dir}").exit_code == 0
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    result = run_cli("eval", run_dir, "--step", "final", f"models.target={random_pair['llama']}",
                     "models.source=" + str(random_pair["mistral"]))
    assert_user_error(result, "was trained for", "source.hidden_size 32 -> 24")
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert before == after


def test_a_run_folder_that_holds_another_run(random_pair, tmp_path):
    path = write_recipe(tmp_path, recipe_dict(random_pair, *FAST))
    run_dir = tmp_path / "run"
    assert run_cli("run", path, f"run_dir={run_dir}").exit_code == 0
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert_user_error(run_cli("run", path, f"run_dir={run_dir}"), "already holds a run; add --resume")
    assert_user_error(run_cli("run", path, f"run_dir={run_dir}", "train.lr=0.5", "--resume"),
                      "holds a run of another recipe")
    assert before == {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_nothing_to_resume(random_pair, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, recipe_dict(random_pair, *FAST))
    assert_user_error(run_cli("run", path, "--resume"), "nothing to resume: no run of 'tiny' in runs/")


class Boom(Objective):
    """An objective that crashes."""

    name = "boom"

    def compute(self, step):
        raise RuntimeError("kaboom")


def test_a_plugin_that_raises_is_named(random_pair, tmp_path, monkeypatch):
    plugin = types.ModuleType("boom_plugin")
    plugin.register_objectives = hookimpl(lambda register: register(Boom))
    monkeypatch.setattr(registry, "_REGISTRY", registry.Registry.load(autoload=False, extra=[plugin]))
    path = write_recipe(tmp_path, recipe_dict(random_pair, *FAST, "objectives.boom.weight=1"))
    run_dir = tmp_path / "run"
    result = run_cli("run", path, f"run_dir={run_dir}")
    assert_user_error(result, "error: objective 'boom' from boom_plugin ((not installed) -) raised RuntimeError: kaboom")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert (run_dir / "checkpoints" / "step_0" / "checkpoint.json").is_file()  # the checkpoint is intact


def test_source_layer_out_of_range(random_pair, tmp_path):
    path = write_recipe(tmp_path, recipe_dict(random_pair, "models.source_layer=-9"))
    assert_user_error(run_cli("run", path), "models.source_layer: -9 is out of range")


# -- rough edges a new user met (issue: a newcomer's first hour) -------------------------------------------

def test_describe_takes_a_kind_in_the_plural_and_names_a_wrong_one():
    result = run_cli("describe", "linear", "--kind", "translators")
    assert result.exit_code == 0, result.output
    assert "translator linear" in result.output
    assert_user_error(run_cli("describe", "linear", "--kind", "objective"),
                      "unknown objective 'linear' ('linear' is a translator: --kind translator)")
    assert_user_error(run_cli("describe", "linear", "--kind", "transltr"), "--kind 'transltr': not a kind")


def test_runs_of_a_folder_that_is_not_there_is_an_error(tmp_path):
    assert_user_error(run_cli("runs", tmp_path / "no-such-root"), "is not a folder")


def test_damaged_translator_weights_are_one_line(random_pair, tmp_path):
    path = write_recipe(tmp_path, recipe_dict(random_pair))
    run_dir = tmp_path / "run"
    assert run_cli("run", path, f"run_dir={run_dir}").exit_code == 0
    weights = run_dir / "best" / "translator.safetensors"
    good = (run_dir / "translator.safetensors").read_bytes()
    weights.write_bytes(good[:100])
    result = run_cli("eval", run_dir)
    assert_user_error(result, f"{weights}: not a readable safetensors file")
    assert (run_dir / "translator.safetensors").read_bytes() == good  # nothing else touched


def test_a_data_file_that_is_not_utf8_names_its_line(random_pair, tmp_path, gsm8k_slice):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(gsm8k_slice / "train.jsonl", data / "train.jsonl")
    (data / "test.jsonl").write_bytes(b'{"question": "q", "answer": "#### 1"}\n{"question": "caf\xe9", "answer": "#### 2"}\n')
    path = write_recipe(tmp_path, recipe_dict(random_pair, "task={name: gsm8k}", f"task.data_dir={data}"))
    assert_user_error(run_cli("run", path, f"run_dir={tmp_path / 'run'}"),
                      f"{data}/test.jsonl:2: not UTF-8 (byte 0xe9 at column 18)")
    assert not (tmp_path / "run").exists()


def test_a_folder_that_is_no_model_is_refused_by_validate(random_pair, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "config.json").write_text('{"foo": 1}')
    path = write_recipe(tmp_path, recipe_dict(random_pair, f"models.source={fake}"))
    assert_user_error(run_cli("validate", path), "models.source:", "names no model_type")
    notokenizer = tmp_path / "no-tokenizer"
    shutil.copytree(random_pair["llama"], notokenizer)
    for f in notokenizer.glob("tokenizer*"):
        f.unlink()
    path = write_recipe(tmp_path, recipe_dict(random_pair, f"models.target={notokenizer}"), name="r2.yaml")
    assert_user_error(run_cli("validate", path), "models.target: the tokenizer in", "does not load")


def test_a_message_longer_than_the_targets_context_is_refused(random_pair, tmp_path):
    path = write_recipe(tmp_path, recipe_dict(random_pair, "translator.k=100000000"))
    assert_user_error(run_cli("validate", path), "translator.k: 100000000 message positions do not fit")


def test_a_run_dir_holding_foreign_files_is_refused_unless_forced(random_pair, tmp_path):
    path = write_recipe(tmp_path, recipe_dict(random_pair))
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("my notes")
    assert_user_error(run_cli("run", path, f"run_dir={run_dir}"), f"run_dir {run_dir} holds files that are not a run's (notes.txt)")
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]  # nothing written
    forced = run_cli("run", path, f"run_dir={run_dir}", "--force")
    assert forced.exit_code == 0, forced.output
    assert (run_dir / "notes.txt").read_text() == "my notes" and (run_dir / "run.json").is_file()
    (tmp_path / "empty").mkdir()  # an empty folder is fine without --force
    assert run_cli("run", path, f"run_dir={tmp_path / 'empty'}").exit_code == 0


def test_limit_shortens_every_evaluation(random_pair, tmp_path):
    path = write_recipe(tmp_path, recipe_dict(random_pair, "eval.n=6", "eval.dev_n=6"))
    run_dir = tmp_path / "run"
    result = run_cli("run", path, f"run_dir={run_dir}", "--limit", "2")
    assert result.exit_code == 0, result.output
    for name in ("eval_samples_dev_step_2.jsonl", "eval_samples_test_step_4.jsonl"):
        assert len((run_dir / name).read_text().splitlines()) == 2
    again = run_cli("eval", run_dir, "--step", "final", "--limit", "1")
    assert again.exit_code == 0, again.output
    assert len((run_dir / "eval_final" / "eval_samples_test_step_4.jsonl").read_text().splitlines()) == 1
    assert_user_error(run_cli("run", path, f"run_dir={tmp_path / 'r2'}", "--limit", "0"), "--limit must be at least 1")


def test_force_never_writes_over_a_runs_own_files(random_pair, tmp_path):
    path = write_recipe(tmp_path, recipe_dict(random_pair))
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text("my own recipe")
    assert_user_error(run_cli("run", path, f"run_dir={run_dir}", "--force"), "holds recipe.yaml, which a run writes")
    assert (run_dir / "recipe.yaml").read_text() == "my own recipe"
