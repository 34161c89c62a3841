from __future__ import annotations

import pytest

from latentbridge.config.overrides import apply_overrides
from latentbridge.config.recipe import load_recipe, read_recipe_data, validate_recipe
from latentbridge.config.yamlio import parse_yaml
from latentbridge.errors import ConfigError, LatentBridgeError

GOOD = """\
# A test recipe.
name: demo
models: {source: tiny-llama, target: tiny-mistral}
task: {name: gsm8k, data_dir: /data/gsm8k, shots: 2}
translator: {name: linear, k: 4}
injection: soft_plus_text
objectives:
  nll: {weight: 1.0}
train: {steps: 20, lr: 1.0e-3}
eval: {every: 10, n: 8}
"""


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_recipe_resolves_every_default(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD))
    data = recipe.to_dict()
    assert data["injection"] == {"name": "soft_plus_text"}
    assert data["translator"]["variant"] == "pooled"
    assert data["objectives"]["nll"] == {
        "weight": 1.0, "start_step": 0, "warmup_steps": 0, "scale_with": None, "reduction": "token"
    }
    assert data["train"]["schedule"] == "cosine"
    # the resolved recipe is itself a valid recipe that resolves to the same thing
    assert validate_recipe(parse_yaml(recipe.to_yaml())).to_dict() == data


def test_three_mistakes_are_all_reported(tmp_path):
    bad = GOOD.replace("weight: 1.0", 'weight: "abc"').replace("k: 4", "k: 0").replace("lr: 1.0e-3", "lr: 1.0e-3, lrr: 2")
    with pytest.raises(ConfigError) as info:
        load_recipe(write(tmp_path, bad))
    assert info.value.problems == [
        "train.lrr: unknown key (did you mean 'lr'?)",
        "translator.k: expected an integer > 0, got 0",
        'objectives.nll.weight: expected a number >= 0, got "abc"',
    ]


def test_unknown_plugin_names_suggest(tmp_path):
    bad = GOOD.replace("name: linear", "name: linaer").replace("nll:", "nl:").replace("soft_plus_text", "soft_plus")
    with pytest.raises(ConfigError) as info:
        load_recipe(write(tmp_path, bad))
    problems = info.value.problems
    assert any("translator: unknown translator 'linaer' (did you mean 'linear'?)" in p for p in problems)
    assert any("objectives.nl: unknown objective 'nl' (did you mean 'nll'?)" in p for p in problems)
    assert any("injection: unknown injection mode 'soft_plus' (did you mean 'soft_plus_text'?)" in p for p in problems)


def test_missing_sections_and_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_recipe(write(tmp_path, "name: x\nmodel: {}\n"))
    problems = info.value.problems
    assert "model: unknown key (did you mean 'models'?)" in problems
    for key in ("models", "task", "translator", "injection", "objectives"):
        assert f"{key}: required key is missing" in problems


def test_all_zero_weights_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="every weight is 0"):
        load_recipe(write(tmp_path, GOOD.replace("weight: 1.0", "weight: 0")))


def test_malformed_yaml_gives_line_number(tmp_path):
    path = write(tmp_path, "name: x\nmodels: {source: a\ntask: b\n")
    with pytest.raises(LatentBridgeError, match=r"recipe.yaml:3:\d+: malformed YAML"):
        load_recipe(path)


def test_duplicate_keys_are_refused(tmp_path):
    path = write(tmp_path, GOOD + "seed: 1\nseed: 2\n")
    with pytest.raises(LatentBridgeError, match=r"recipe.yaml:\d+:1: malformed YAML: duplicate key 'seed'"):
        load_recipe(path)


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, GOOD + "run_dir: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(LatentBridgeError, match="malformed YAML"):
        load_recipe(path)


def test_overrides_set_delete_and_shorthand(tmp_path):
    path = write(tmp_path, GOOD)
    recipe = load_recipe(path, ["train.steps=7", "objectives.nll.weight=0.5", "translator.variant=per_token",
                                "eval.systems=[bridged, target]", "~task.shots", "seed=3"])
    assert recipe.train.steps == 7
    assert recipe.objectives["nll"].weight == 0.5
    assert recipe.translator.config.variant == "per_token"
    assert recipe.eval.systems == ["bridged", "target"]
    assert recipe.task.config.shots == 0
    assert recipe.seed == 3


def test_override_errors():
    data = {"a": {"b": 1}, "injection": "soft_only"}
    with pytest.raises(LatentBridgeError, match="no key a.c"):
        apply_overrides(data, ["~a.c"])
    with pytest.raises(LatentBridgeError, match="a.b is not a mapping"):
        apply_overrides(data, ["a.b.c=1"])
    with pytest.raises(LatentBridgeError, match="expected key.path=value"):
        apply_overrides(data, ["novalue"])
    apply_overrides(data, ["injection.name=soft_plus_text"])
    assert data["injection"] == {"name": "soft_plus_text"}


def test_validation_errors_from_overrides_name_the_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_recipe(write(tmp_path, GOOD), ["eval.every=0", "objectives.nll.weight=-1"])
    assert info.value.problems == [
        "eval.every: expected an integer > 0, got 0",
        "objectives.nll.weight: expected a number >= 0, got -1",
    ]


def test_missing_recipe_file():
    with pytest.raises(LatentBridgeError, match="recipe file not found: nowhere/x.yaml"):
        load_recipe("nowhere/x.yaml")
    with pytest.raises(LatentBridgeError, match="neither a file nor a shipped recipe"):
        load_recipe("no_such_recipe")


def test_base_and_remove(tmp_path):
    write(tmp_path, GOOD.replace("  nll: {weight: 1.0}", "  nll: {weight: 1.0}\n  l2x: {weight: 0.5}"), "parent.yaml")
    child = write(tmp_path, "base: parent\nname: child\nremove: [objectives.l2x]\ntrain: {steps: 3}\n", "child.yaml")
    data, _ = read_recipe_data(child)
    assert data["name"] == "child" and data["train"] == {"steps": 3, "lr": 1.0e-3}
    assert "l2x" not in data["objectives"] and data["translator"] == {"name": "linear", "k": 4}
    recipe = load_recipe(child)
    assert recipe.train.steps == 3


def test_base_plugin_swap_replaces_the_block(tmp_path):
    write(tmp_path, GOOD.replace("{name: linear, k: 4}", "{name: linear, k: 4, variant: per_token}"), "parent.yaml")
    child = write(tmp_path, "base: parent\nname: child\ntranslator: {name: resampler}\n", "child.yaml")
    assert load_recipe(child).translator.as_dict()["k"] == 8  # resampler's own default, not the parent's k


def test_base_errors(tmp_path):
    write(tmp_path, "base: b\nname: a\n", "a.yaml")
    write(tmp_path, "base: a\nname: b\n", "b.yaml")
    with pytest.raises(LatentBridgeError, match="inherit in a circle"):
        load_recipe(tmp_path / "a.yaml")
    bad_remove = write(tmp_path, GOOD.replace("name: demo", "name: x") + "", "p.yaml")
    child = write(tmp_path, "base: p\nremove: [objectives.nope]\n", "c.yaml")
    with pytest.raises(LatentBridgeError, match="remove: objectives.nope is not a key"):
        load_recipe(child)
    assert bad_remove.is_file()
    with pytest.raises(LatentBridgeError, match="base: recipe 'missing' not found"):
        load_recipe(write(tmp_path, "base: missing\n", "d.yaml"))


def test_scale_with_must_name_another_objective(tmp_path):
    path = write(tmp_path, GOOD.replace("nll: {weight: 1.0}", "nll: {weight: 1.0, scale_with: nl}"))
    with pytest.raises(ConfigError, match="objectives.nll.scale_with: 'nl' is not another objective"):
        load_recipe(path)


def test_teacher_and_curriculum(tmp_path):
    recipe = load_recipe(write(tmp_path, GOOD), ["teacher=prompt", "curriculum.fade_start=2", "curriculum.fade_end=6"])
    assert recipe.teacher == "prompt"
    c = recipe.curriculum
    assert [c.text_fraction(s) for s in (0, 2, 3, 4, 6, 9)] == [1.0, 1.0, 0.75, 0.5, 0.0, 0.0]
    with pytest.raises(ConfigError) as info:
        load_recipe(write(tmp_path, GOOD), ["teacher=answr", "curriculum.fade_start=5", "curriculum.fade_end=5",
                                            "curriculum.text_injection=soft"])
    assert info.value.problems == [
        "teacher: expected one of 'answer', 'prompt', got \"answr\" (did you mean 'answer'?)",
        "curriculum.fade_end: must be > fade_start (5), got 5",
        "curriculum.text_injection: unknown injection mode 'soft' (did you mean 'soft_only'?); "
        "known: adapter, after_cache, fused_prompt, patched_prompt, soft_after_header, soft_only, soft_plus_text",
    ]


def test_new_options_at_their_defaults_leave_the_recipe_hash_alone():
    """A run folder made before an option existed must still resume: the resolved recipe of a recipe that
    does not use source.view or models.source_layers hashes as it did before they were added
    (4dfe893554160b13: the hash recorded by a format_scaled run made then, resumed since)."""
    from latentbridge.config.recipe import load_recipe
    from latentbridge.io.card import recipe_hash

    run = load_recipe("format_scaled", ["seed=1", "run_dir=runs/sweeps/format_penalty/format_scaled-seed1"])
    assert recipe_hash(run.to_dict()) == "4dfe893554160b13"
    assert "source" not in run.to_dict() and "source_layers" not in run.to_dict()["models"]
    assert "supervise" not in run.to_dict()["task"]
    used = load_recipe("latent_relay", ["models.source_layers=[0, 1]", "translator=kv_prefix"]).to_dict()
    assert used["source"]["view"] == "generation" and used["models"]["source_layers"] == [0, 1]
    assert load_recipe("arith_relay").to_dict()["task"]["supervise"] == "final_line"
