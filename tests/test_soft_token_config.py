"""The soft-token fields (``scale``, ``target_rms``) live in SoftTokenConfig, not in the base TranslatorConfig.

What the move must keep: soft-token translators scale as before; a translator sending another message has
no such fields (so ``describe`` and the run folder's recipe stop listing knobs that do nothing); recipes
and run folders written before still read, with a warning; a third-party soft-token translator written
against the old base keeps its behaviour, with a warning to its author.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass

import pytest
import torch

from latentbridge import SoftTokenConfig, Translator, TranslatorConfig
from latentbridge.config.recipe import load_recipe
from latentbridge.config.schema import ConfigError
from latentbridge.registry.host import get_registry

from .conftest import REPO

SOFT = ("linear", "mlp", "identity", "resampler", "dit")
NOT_SOFT = ("kv_prefix", "kv_translate", "c2c", "kvcomm", "ac")


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_the_base_config_has_no_soft_token_fields():
    assert _fields(TranslatorConfig) == {"k", "d_src", "d_tgt"}
    assert {"scale", "target_rms"} <= _fields(SoftTokenConfig)


@pytest.mark.parametrize("name", SOFT)
def test_soft_token_translators_keep_their_scale(name):
    assert issubclass(get_registry().get("translator", name).cls.Config, SoftTokenConfig)


@pytest.mark.parametrize("name", NOT_SOFT)
def test_other_translators_have_no_scale(name):
    config = get_registry().get("translator", name).cls.Config
    assert not issubclass(config, SoftTokenConfig)
    assert not {"scale", "target_rms"} & _fields(config)


def test_a_recipe_naming_the_old_fields_for_a_cache_translator_still_reads(caplog):
    registry = get_registry()
    with caplog.at_level(logging.WARNING, logger="latentbridge"):
        config = registry.config_for("translator", "kv_prefix", {"k": 4, "scale": "target_rms", "target_rms": 0.3})
    assert config.k == 4 and not hasattr(config, "scale")
    assert "scale and target_rms are ignored" in caplog.text
    with pytest.raises(ConfigError, match="scael"):  # a misspelt field is still an error
        registry.config_for("translator", "kv_prefix", {"scael": "none"})
    with pytest.raises(ConfigError, match="target_rms"):  # and a soft-token translator still checks its own
        registry.config_for("translator", "linear", {"target_rms": -1.0})


def test_a_committed_run_folder_of_a_cache_translator_still_loads(caplog):
    """Run folders written before the move name ``scale: target_rms, target_rms: null`` for kv_prefix (this
    recipe.yaml is a kept run's, as committed at 54bfbec under benchmarks/results/runs/communicate_arith_kv/)."""
    path = REPO / "tests/data/recipes_before/kv_prefix_run.yaml"
    assert "scale: target_rms" in path.read_text()
    with caplog.at_level(logging.WARNING, logger="latentbridge"):
        recipe = load_recipe(path)
    assert recipe.translator.name == "kv_prefix" and not hasattr(recipe.translator.config, "scale")
    assert "ignored" in caplog.text


def test_an_old_soft_token_plugin_keeps_its_behaviour_with_a_warning():
    with pytest.warns(DeprecationWarning, match="SoftTokenConfig"):

        class Old(Translator):
            name = "old_soft"

            @dataclass
            class Config(TranslatorConfig):
                knob: int = 2

            def translate(self, h, mask, *, seeds):
                return h[:, : self.k] * 5.0

    assert issubclass(Old.Config, SoftTokenConfig) and Old.Config.__name__ == "Config"
    config = Old.Config(k=2, d_src=4, d_tgt=4, target_rms=0.5)
    assert config.knob == 2 and config.scale == "target_rms"
    out = Old(config)(torch.randn(3, 5, 4), torch.ones(3, 5))
    rms = out.pow(2).mean(-1).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, 0.5))  # rescaled, as it was before the move


def test_a_current_plugin_gets_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class New(Translator):
            name = "new_soft"

            @dataclass
            class Config(SoftTokenConfig):
                knob: int = 2

        class Cache(Translator):  # not soft tokens: a plain TranslatorConfig is right
            name = "new_cache"
            emits = "kv_prefix"
            Config = TranslatorConfig

    assert Cache.Config is TranslatorConfig and New.Config.__dataclass_fields__["knob"]


def test_a_translator_without_scale_sends_its_output_as_computed():
    class Raw(Translator):
        name = "raw"
        emits = "raw"
        Config = TranslatorConfig

        def translate(self, h, mask, *, seeds):
            return h[:, : self.k]

    h = torch.randn(2, 3, 4) * 7
    out = Raw(TranslatorConfig(k=2, d_src=4, d_tgt=4))(h, torch.ones(2, 3))
    torch.testing.assert_close(out, h[:, :2])


@pytest.mark.parametrize("name", ["kv_prefix", "c2c", "ac", "linear"])
def test_a_run_started_before_the_move_resumes(name, caplog):
    """Recipes written by the code before SoftTokenConfig (and before c2c's include_response), with the
    hashes it gave them (tests/data/recipes_before, written at c887cf5): each hashes as it did, so its runs
    resume instead of being refused as another recipe's. c2c's at the behaviour it had then (special_tokens:
    own, as a run folder's recipe of that time reads); at today's default it hashes anew (it fuses more)."""
    import json

    from latentbridge.io.card import recipe_hash

    folder = REPO / "tests" / "data" / "recipes_before"
    before = json.loads((folder / "hashes.json").read_text())[name]
    then = ["translator.special_tokens=own"] if name == "c2c" else []
    with caplog.at_level(logging.WARNING, logger="latentbridge"):
        recipe = load_recipe(folder / f"{name}.yaml", then)
    assert recipe_hash(recipe.to_dict()) == before
    if name == "c2c":
        assert recipe_hash(load_recipe(folder / f"{name}.yaml").to_dict()) != before
    if name != "linear":
        changed = load_recipe(folder / f"{name}.yaml", ["translator.k=3"])
        assert recipe_hash(changed.to_dict()) != before  # the hash still sees a real change


def test_an_old_plugin_with_the_bare_base_config_gets_the_soft_token_config():
    with pytest.warns(DeprecationWarning, match="SoftTokenConfig"):

        class Bare(Translator):
            name = "bare_soft"
            Config = TranslatorConfig

    assert Bare.Config is SoftTokenConfig
