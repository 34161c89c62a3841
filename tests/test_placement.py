"""Placement: per-model devices and accelerate device maps take the same path as one device (on CPU:
an explicit per-layer map onto 'cpu' runs accelerate's dispatch and hooks, and must change nothing)."""

from __future__ import annotations

import json

import pytest

from latentbridge.train.runner import Runner

from .helpers import make_experiment

FAST = ("train.steps=2", "train.log_every=1", "eval.every=2", "eval.n=4", "eval.dev_n=4", "eval.max_new_tokens=4")


def layer_map(n_layers: int) -> str:
    modules = ["model.embed_tokens", *(f"model.layers.{i}" for i in range(n_layers)), "model.norm",
               "model.rotary_emb", "lm_head"]
    return "{" + ", ".join(f"{m}: cpu" for m in modules) + "}"


def layer_map_keys(n_layers: int) -> list[str]:
    return ["model.embed_tokens", *(f"model.layers.{i}" for i in range(n_layers)), "model.norm", "model.rotary_emb", "lm_head"]


def outputs(run_dir):
    files = ["metrics.jsonl", "eval_samples_dev_step_2.jsonl", "eval_samples_test_step_2.jsonl"]
    return {f: (run_dir / f).read_text() for f in files}


def test_device_maps_and_per_model_devices_change_nothing(random_pair, tmp_path, monkeypatch):
    pytest.importorskip("accelerate")
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    Runner(make_experiment(random_pair, *FAST), tmp_path / "plain").run()
    import transformers

    seen = []
    original = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, path, **kwargs):
        seen.append((str(path), kwargs.get("device_map")))
        return original(cls, path, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    placed = make_experiment(random_pair, *FAST, "models.source_device=cpu", "models.target_device=cpu",
                             f"models.device_map={{target: {layer_map(3)}, source: {layer_map(2)}}}")
    assert [(p, sorted(m)) for p, m in seen] == [
        (str(random_pair["llama"]), sorted(layer_map_keys(2))), (str(random_pair["mistral"]), sorted(layer_map_keys(3)))]
    Runner(placed, tmp_path / "placed").run()
    assert outputs(tmp_path / "placed") == outputs(tmp_path / "plain")
    recipe = json.loads(json.dumps(placed.recipe.to_dict()))
    assert recipe["models"]["device_map"]["target"]["lm_head"] == "cpu"


def test_a_bad_device_map_is_a_recipe_problem(random_pair):
    from latentbridge.errors import ConfigError

    with pytest.raises(ConfigError, match="models.device_map.middle: unknown model; use source or target"):
        make_experiment(random_pair, "models.device_map={middle: auto}")
    with pytest.raises(ConfigError, match="models.device_map.target: expected one of auto, balanced"):
        make_experiment(random_pair, "models.device_map={target: everywhere}")
