from __future__ import annotations

import json
import re
import types
from dataclasses import dataclass

import pytest
import torch

from latentbridge import Objective, ObjectiveConfig, hookimpl
from latentbridge.errors import PluginError
from latentbridge.registry.host import AUTOLOAD_ENV, Registry, autoload_enabled


def make_objective(name: str):
    class _Obj(Objective):
        """A test objective."""

        def compute(self, step):
            return step.soft.sum()

    _Obj.name = name
    return _Obj


def plugin_module(module_name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(module_name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def registers(*classes):
    def register_objectives(register):
        for cls in classes:
            register(cls)

    return register_objectives


def test_builtins_are_registered():
    registry = Registry.load(autoload=False)
    assert "nll" in registry.names("objective")
    assert {"soft_only", "soft_plus_text"} <= set(registry.names("injection"))
    info = registry.get("translator", "linear")
    assert info.provider.distribution == "latentbridge"
    assert info.provider.module == "latentbridge.plugins.translators.linear"


def test_extra_plugin_is_registered_with_its_module():
    extra = plugin_module("my_plugin", register_objectives=registers(make_objective("mine")))
    registry = Registry.load(autoload=False, extra=[extra])
    info = registry.get("objective", "mine")
    assert info.provider.module == "my_plugin"
    assert info.description == "A test objective."


def only_problem(registry: Registry):
    [problem] = registry.problems
    return problem


def test_duplicate_name_is_ambiguous_and_names_both_providers():
    extra = plugin_module("dup_plugin", register_objectives=registers(make_objective("nll")))
    registry = Registry.load(autoload=False, extra=[extra])  # a third party's collision is not fatal
    entries = [p for p in registry.all() if p.name == "nll"]
    assert [(p.provider.module, p.status) for p in entries] == [
        ("latentbridge.plugins.objectives.nll", "ambiguous"), ("dup_plugin", "ambiguous")
    ]
    with pytest.raises(PluginError) as info:
        registry.get("objective", "nll")
    message = str(info.value)
    assert message.startswith("objective 'nll' is ambiguous: provided by latentbridge.plugins.objectives.nll (latentbridge ")
    assert message.endswith(" and dup_plugin ((not installed) -); remove one of them")
    assert only_problem(registry).problem == "ambiguous" and only_problem(registry).message == message
    assert registry.get("objective", "kl").status == "ok"


def test_a_builtin_duplicate_still_raises():
    extra = plugin_module("latentbridge.plugins.objectives.again", register_objectives=registers(make_objective("nll")))
    with pytest.raises(PluginError) as info:
        Registry.load(autoload=False, extra=[extra])
    message = str(info.value)
    assert "objective 'nll' is registered twice" in message
    assert "latentbridge.plugins.objectives.nll (latentbridge " in message
    assert "latentbridge.plugins.objectives.again (latentbridge " in message


def test_duplicate_within_one_plugin():
    cls = make_objective("twice")
    extra = plugin_module("twice_plugin", register_objectives=registers(cls, cls))
    registry = Registry.load(autoload=False, extra=[extra])
    assert only_problem(registry).problem == "invalid-class"
    assert re.search("registered twice: by twice_plugin .* and by twice_plugin .*; the second registration is ignored",
                     only_problem(registry).message)
    assert registry.get("objective", "twice").cls is cls


def register_objectivs(register):  # typo: no such hook
    pass


def test_unknown_hook_is_a_problem_with_a_suggestion():
    extra = plugin_module("typo_plugin", register_objectivs=register_objectivs)
    registry = Registry.load(autoload=False, extra=[extra])
    problem = only_problem(registry)
    assert (problem.problem, problem.name, problem.provider.module) == ("unknown-hook", "typo_plugin", "typo_plugin")
    assert problem.message == ("plugin typo_plugin ((not installed) -): unknown hook 'register_objectivs' "
                               "(did you mean 'register_objectives'?); it is never called")
    assert "nll" in registry.names("objective")


def test_unknown_hook_in_a_builtin_fails_loudly():
    extra = plugin_module("latentbridge.plugins.typo", register_objectivs=register_objectivs)
    with pytest.raises(PluginError) as info:
        Registry.load(autoload=False, extra=[extra])
    message = str(info.value)
    assert "latentbridge.plugins.typo" in message
    assert "register_objectivs" in message
    assert "did you mean 'register_objectives'" in message


def test_registering_something_else_is_refused():
    registry = Registry.load(autoload=False, extra=[plugin_module("bad_plugin", register_objectives=registers(torch.nn.Linear))])
    assert only_problem(registry).problem == "invalid-class"
    assert re.search("bad_plugin.*register_objectives got .*not a subclass of Objective", only_problem(registry).message)
    with pytest.raises(PluginError, match="latentbridge.bad.*not a subclass of Objective"):
        Registry.load(autoload=False, extra=[plugin_module("latentbridge.bad", register_objectives=registers(torch.nn.Linear))])


def test_plugin_without_valid_name_or_config():
    nameless = make_objective("Bad Name")

    class NoConfig(make_objective("noconf")):
        @dataclass
        class Config:  # not an ObjectiveConfig
            x: int = 1

    registry = Registry.load(autoload=False, extra=[plugin_module("p1", register_objectives=registers(nameless)),
                                                    plugin_module("p2", register_objectives=registers(NoConfig))])
    first, second = registry.problems
    assert (first.problem, first.name, first.provider.module) == ("invalid-class", "Bad Name", "p1")
    assert "needs a class attribute `name`" in first.message
    assert (second.problem, second.name, second.kind) == ("invalid-class", "noconf", "objective")
    assert "p2" in second.message and "needs `Config`" in second.message
    assert "noconf" not in registry.names("objective")
    with pytest.raises(PluginError, match="needs `Config`"):
        Registry.load(autoload=False, extra=[plugin_module("latentbridge.p2", register_objectives=registers(NoConfig))])


def raising_hook(register):
    raise RuntimeError("boom")


def test_a_plugin_that_raises_is_named():
    registry = Registry.load(autoload=False, extra=[plugin_module("raising_plugin", register_objectives=raising_hook)])
    assert only_problem(registry).problem == "hook-error"
    assert re.search("raising_plugin .* raised in register_objectives: RuntimeError: boom", only_problem(registry).message)
    assert "nll" in registry.names("objective")
    with pytest.raises(PluginError, match="latentbridge.raising .* raised in register_objectives: RuntimeError: boom"):
        Registry.load(autoload=False, extra=[plugin_module("latentbridge.raising", register_objectives=raising_hook)])


def test_unknown_name_suggests():
    registry = Registry.load(autoload=False)
    with pytest.raises(PluginError, match="unknown objective 'nl' \\(did you mean 'nll'\\?\\)"):
        registry.get("objective", "nl")


@pytest.mark.parametrize("value, enabled", [("1", False), ("true", False), ("0", True), ("", True)])
def test_autoload_switch(monkeypatch, value, enabled):
    monkeypatch.setenv(AUTOLOAD_ENV, value)
    assert autoload_enabled() is enabled


def test_autoload_off_skips_entry_points_but_keeps_builtins(monkeypatch):
    calls = []
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    monkeypatch.setattr(Registry, "add_entry_points", lambda self: calls.append(self))
    registry = Registry.load()
    assert calls == []
    assert "nll" in registry.names("objective")
    monkeypatch.setenv(AUTOLOAD_ENV, "0")
    Registry.load()
    assert len(calls) == 1


def test_entry_point_that_fails_to_import_is_named(monkeypatch):
    class FakeDist:
        metadata = {"Name": "broken-dist"}
        version = "9.9"

    class FakeEntryPoint:
        name = "broken"
        dist = FakeDist()

        def load(self):
            raise ImportError("no module named torch_extra")

    import latentbridge.registry.host as reg

    monkeypatch.setattr(reg.md, "entry_points", lambda group: [FakeEntryPoint()])
    registry = Registry.load(autoload=True)  # the rest of the registry loads
    problem = only_problem(registry)
    assert (problem.problem, problem.name, problem.provider.distribution) == ("import-error", "broken", "broken-dist")
    assert problem.message == "plugin 'broken' (broken-dist 9.9) failed to load: ImportError: no module named torch_extra"
    assert "nll" in registry.names("objective")


def test_json_listing_has_required_keys():
    registry = Registry.load(autoload=False)
    rows = [p.as_json() for p in registry.all()]
    json.dumps(rows)
    assert {r["kind"] for r in rows} == {"objective", "translator", "injection", "task", "logger", "system"}
    for row in rows:
        assert {"kind", "name", "status", "distribution", "version", "description"} <= row.keys()
        assert row["status"] == "ok"
        assert row["description"], row


def test_objective_config_weight_schedule():
    cfg = ObjectiveConfig(weight=2.0, start_step=10, warmup_steps=4)
    assert [cfg.weight_at(s) for s in (0, 9, 10, 11, 13, 100)] == [0.0, 0.0, 0.5, 1.0, 2.0, 2.0]
    from_the_start = ObjectiveConfig(weight=2.0, warmup_steps=4)  # training steps count from 1
    assert [from_the_start.weight_at(s) for s in (1, 2, 3, 4, 5)] == [0.5, 1.0, 1.5, 2.0, 2.0]
