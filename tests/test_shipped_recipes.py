"""The shipped recipes: each ablation differs from its parent in exactly the ablated terms."""

from __future__ import annotations

from typing import Any

import pytest

from latentbridge.config.catalog import shipped_recipes
from latentbridge.config.recipe import load_recipe
from latentbridge.config.yamlio import parse_yaml

SHIPPED = {r.name: r for r in shipped_recipes()}


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: data}


def differing_keys(child: str, parent: str) -> set[str]:
    a = flatten(load_recipe(child).to_dict())
    b = flatten(load_recipe(parent).to_dict())
    return {k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>")}


def under(keys: set[str], *prefixes: str) -> set[str]:
    return {k for k in keys if not any(k == p or k.startswith(p + ".") for p in prefixes)}


@pytest.mark.parametrize(
    "ablation, parent, ablated",
    [
        ("ablB_kl_only", "phase1_full", ["objectives.prompt_alignment", "objectives.rope_phase"]),
        ("ablC_kl_prompt_no_rope", "phase1_full", ["objectives.rope_phase"]),
        ("curriculum_softonly", "prompt_softonly_phase2_swap", ["curriculum"]),
        ("contrastive_softonly", "prompt_softonly_phase2_swap", ["objectives.contrastive_prompt"]),
        ("probe_softonly", "prompt_softonly_phase2_swap", ["objectives.probe_head"]),
        ("format_scaled", "prompt_softonly_phase2_swap", ["objectives.format_penalty"]),
        ("answer_softonly", "answer_softplus", ["injection", "train.steps", "train.warmup_steps", "eval.every"]),
    ],
)
def test_ablation_differs_in_exactly_the_ablated_terms(ablation, parent, ablated):
    diff = differing_keys(ablation, parent)
    assert under(diff, "name", *ablated) == set(), f"{ablation} also changes {sorted(under(diff, 'name', *ablated))}"
    for prefix in ablated:  # and each ablated term really differs
        assert any(k == prefix or k.startswith(prefix + ".") for k in diff), prefix


@pytest.mark.parametrize("name", sorted(n for n, r in SHIPPED.items() if "base:" in r.path.read_text()))
def test_a_child_changes_only_what_its_file_says(name):
    raw = parse_yaml(SHIPPED[name].path.read_text())
    parent = raw.pop("base")
    stated = set(flatten(raw)) - {"remove"} | set(raw.get("remove", []))
    stated = {k for k in stated if not k.startswith("remove")}
    # a block the parent lacks (absent or null) comes with its defaults: the block itself is what is stated
    parent_flat = flatten(load_recipe(parent).to_dict())

    def absent_in_parent(prefix: str) -> bool:
        values = [v for k, v in parent_flat.items() if k == prefix or k.startswith(prefix + ".")]
        return values in ([], [None])

    # a child that swaps a plugin (translator.name) states that whole block: the new plugin has its own fields
    stated |= {key.split(".")[0] for key in stated if key.endswith(".name") and key.count(".") == 1}
    for key in list(stated):
        parts = key.split(".")
        for depth in range(1, len(parts) + 1):
            if absent_in_parent(".".join(parts[:depth])):
                stated.add(".".join(parts[:depth]))
                break
    diff = differing_keys(name, parent)
    assert under(diff, *stated) == set(), f"{name} changes more than it states: {sorted(under(diff, *stated))}"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_opening_comment_says_what_and_how_to_run(name):
    text = SHIPPED[name].path.read_text()
    assert text.startswith("# ")
    assert f"latentbridge run {name}" in text or f"latentbridge run recipes/{name}.yaml" in text
    assert "models.source=" in text or "override line" in text  # the real-model override


def test_the_seed_table_is_shipped():
    assert {"phase1_full", "ablB_kl_only", "ablC_kl_prompt_no_rope", "phase2_swap", "prompt_softonly_phase2_swap",
            "answer_softplus", "answer_softonly", "curriculum_softonly", "contrastive_softonly", "probe_softonly",
            "format_scaled"} <= set(SHIPPED)


SHORT = ["train.steps=2", "train.warmup_steps=0", "train.batch_size=4", "eval.every=2", "eval.n=4", "eval.dev_n=4",
         "eval.max_new_tokens=8", "train.log_every=1"]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_recipe_runs_on_the_tiny_pair(name, tmp_path, monkeypatch):
    """Each recipe as shipped (built-in tiny pair, its translator, objectives, curriculum), with a
    short-step override: it trains, evaluates every system and finishes."""
    from latentbridge.bridge.build import Experiment
    from latentbridge.train.runner import Runner

    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    extra = []
    recipe = load_recipe(name, SHORT)
    if recipe.curriculum is not None:  # squeeze the fade into the two steps, so both modes are used
        extra = ["curriculum.fade_start=0", "curriculum.fade_end=2"]
    steps = 0 if load_recipe(name).train.steps == 0 else 2  # a training-free channel (ac, kvcomm) trains nothing
    state = Runner(Experiment.build(load_recipe(name, SHORT + extra + [f"train.steps={steps}"])), tmp_path / "run").run()
    assert state.step == steps and [e["step"] for e in state.evaluations] == [steps]
    assert all(state.evaluations[0]["systems"][s] is not None for s in ("source", "target", "bridged", "relay"))
