"""A translator sets a learning rate for its own parameter group (``Translator.param_groups``): the
optimizer uses it, the schedule scales it alike, and groups that miss or repeat a parameter are refused."""

from __future__ import annotations

import types

import pytest
import torch
from latentbridge.plugins.translators.linear import LinearTranslator

from latentbridge import hookimpl
from latentbridge.bridge.build import Experiment
from latentbridge.config.recipe import validate_recipe
from latentbridge.errors import LatentBridgeError
from latentbridge.registry.host import Registry

from .helpers import recipe_dict


class FastBias(LinearTranslator):
    """The built-in linear translator whose biases learn at a learning rate of their own."""

    name = "fast_bias"
    groups = "good"

    def param_groups(self):
        biases = [p for n, p in self.named_parameters() if n.endswith("bias")]
        rest = [p for n, p in self.named_parameters() if not n.endswith("bias")]
        if self.groups == "missing":
            return [{"params": rest}]
        if self.groups == "twice":
            return [{"params": rest + biases}, {"params": biases, "lr": 0.5}]
        if self.groups == "unknown":
            return [{"params": rest}, {"params": biases, "momentum": 0.5}]
        return [{"params": rest}, {"params": biases, "lr": 0.5}]


def experiment(pair, tmp_path, monkeypatch, groups="good"):
    monkeypatch.setenv("LATENTBRIDGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(FastBias, "groups", groups)
    plugin = types.SimpleNamespace(register_translators=hookimpl(lambda register: register(FastBias)))
    registry = Registry.load(autoload=True, extra=[plugin])
    data = recipe_dict(pair, "translator=fast_bias", "train.lr=0.001", "train.warmup_steps=2", "train.steps=4",
                       "train.schedule=linear")
    return Experiment.build(validate_recipe(data, registry), registry)


def test_a_group_of_its_own_learns_at_its_own_rate(random_pair, tmp_path, monkeypatch):
    from latentbridge.train.runner import Runner

    exp = experiment(random_pair, tmp_path, monkeypatch)
    runner = Runner(exp, tmp_path / "run")
    lrs = [g["lr"] for g in runner.optimizer.param_groups]
    assert len(lrs) == 2 and lrs[0] != lrs[1]
    runner.optimizer.step()  # no gradients yet: nothing moves
    runner.scheduler.step()  # the schedule scales every group by the same factor
    scaled = [g["lr"] for g in runner.optimizer.param_groups]
    assert scaled[1] / scaled[0] == pytest.approx(0.5 / 0.001)
    biases = {id(p) for n, p in exp.translator.named_parameters() if n.endswith("bias")}
    assert {id(p) for p in runner.optimizer.param_groups[1]["params"]} == biases


@pytest.mark.parametrize(("groups", "message"), [("missing", "exactly once"), ("twice", "exactly once"),
                                                 ("unknown", "not momentum")])
def test_groups_that_miss_or_repeat_a_parameter_are_refused(random_pair, tmp_path, monkeypatch, groups, message):
    exp = experiment(random_pair, tmp_path, monkeypatch, groups)
    with pytest.raises(LatentBridgeError, match=message):
        exp.param_groups()


def test_by_default_one_group_of_every_trainable_parameter(random_pair, tmp_path, monkeypatch):
    exp = experiment(random_pair, tmp_path, monkeypatch)
    plain = LinearTranslator.param_groups(exp.translator)
    assert len(plain) == 1 and len(plain[0]["params"]) == len(list(exp.translator.parameters()))
    assert "lr" not in plain[0] and torch.is_tensor(plain[0]["params"][0])


def test_geometry_reaches_a_config_through_the_mixin_and_a_hand_named_field_warns(random_pair):
    """A translator config inheriting KVGeometryConfig gets every geometry field from the models; one that
    names a field by hand (the old way) gets it too, with a deprecation warning."""
    from dataclasses import dataclass, fields

    from latentbridge import KVGeometryConfig, TranslatorConfig, option
    from latentbridge.bridge.build import cache_fields
    from latentbridge.bridge.models import load_frozen

    source, target = (load_frozen(str(random_pair[m]), device="cpu") for m in ("llama", "mistral"))

    @dataclass
    class Mixed(KVGeometryConfig):
        pass

    @dataclass
    class ByHand(TranslatorConfig):
        target_kv_heads: int | None = option(None, help="x")

    filled = cache_fields(Mixed(), source, target)
    geometry = {f.name for f in fields(KVGeometryConfig)} - {f.name for f in fields(TranslatorConfig)}
    assert set(filled) == geometry and filled["target_kv_heads"] == target.kv_geometry["kv_heads"]
    assert filled["source_layers"] == source.kv_geometry["layers"]
    with pytest.warns(DeprecationWarning, match="inherit latentbridge.KVGeometryConfig"):
        assert cache_fields(ByHand(), source, target) == {"target_kv_heads": target.kv_geometry["kv_heads"]}
