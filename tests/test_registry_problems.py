"""A broken or colliding third-party plugin is recorded, never fatal: fake entry points, in process."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from latentbridge import Objective, ObjectiveConfig, SoftTokenConfig, Translator, hookimpl
from latentbridge.cli import app
from latentbridge.config.recipe import validate_recipe
from latentbridge.config.yamlio import parse_yaml
from latentbridge.errors import ConfigError, PluginError
from latentbridge.registry.host import AUTOLOAD_ENV, DISABLE_ENV, Registry

from .test_recipe import GOOD

runner = CliRunner()


class FakeDist:
    def __init__(self, name: str, version: str):
        self.metadata = {"Name": name}
        self.version = version


class FakeEntryPoint:
    def __init__(self, name: str, dist: str, version: str, plugin=None, error: Exception | None = None):
        self.name, self.dist, self.module = name, FakeDist(dist, version), name
        self._plugin, self._error = plugin, error

    def load(self):
        if self._error is not None:
            raise self._error
        return self._plugin


@pytest.fixture
def entry_points(monkeypatch):
    """Install fake entry points: ``entry_points(ep, ...)``; the process-wide registry sees them."""
    monkeypatch.delenv(AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    import latentbridge.registry.loading as loading

    def install(*eps):
        monkeypatch.setattr(loading.md, "entry_points", lambda group: list(eps))

    return install


class EvilLinear(Translator):
    """A third-party translator that takes the built-in's name."""

    name = "linear"

    @dataclass
    class Config(SoftTokenConfig):
        evil_knob: int = 3


class L2A(Objective):
    """L2, one way."""

    name = "l2"
    Config = ObjectiveConfig

    def compute(self, step):
        return step.soft.sum()


class L2B(L2A):
    """L2, another way."""


def module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hookimpl(fn))
    return mod


def registering(*classes):
    def hook(register):
        for cls in classes:
            register(cls)

    return hook


def evil_entry_point() -> FakeEntryPoint:
    return FakeEntryPoint("evil", "evil-dist", "1.0", module("evil_mod", register_translators=registering(EvilLinear)))


def invoke(*args):
    return runner.invoke(app, list(args))


def recipe(translator: str) -> dict:
    return parse_yaml(GOOD.replace("translator: {name: linear, k: 4}", f"translator: {{name: {translator}, k: 4}}"))


def test_colliding_translator_leaves_list_plugins_working_and_lists_both(entry_points):
    entry_points(evil_entry_point())
    result = invoke("list-plugins", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    linear = [r for r in rows if (r["kind"], r["name"]) == ("translator", "linear")]
    assert [(r["distribution"], r["module"], r["status"]) for r in linear] == [
        ("latentbridge", "latentbridge.plugins.translators.linear", "ambiguous"),
        ("evil-dist", "evil_mod", "ambiguous"),
    ]
    assert {r["status"] for r in rows if r["kind"] != "problem" and r["name"] != "linear"} == {"ok"}
    [problem] = [r for r in rows if r["kind"] == "problem"]
    assert problem["problem"] == "ambiguous" and problem["plugin_kind"] == "translator"
    assert problem["distribution"] == "evil-dist"

    table = invoke("list-plugins")
    assert table.exit_code == 0, table.output
    assert "ambiguous: translator 'linear' is ambiguous: provided by latentbridge.plugins.translators.linear" in table.stdout
    assert "evil_mod (evil-dist 1.0); uninstall one or set LATENTBRIDGE_DISABLE_PLUGINS=evil-dist" in table.stdout
    assert table.stdout.count("ambiguous") >= 3  # both rows and the problem line


def test_recipe_using_the_ambiguous_name_fails_naming_both(entry_points):
    entry_points(evil_entry_point())
    with pytest.raises(ConfigError) as info:
        validate_recipe(recipe("linear"))
    from latentbridge import __version__

    assert info.value.problems == [
        f"translator: 'linear' is ambiguous: provided by latentbridge.plugins.translators.linear (latentbridge "
        f"{__version__}) and evil_mod (evil-dist 1.0); uninstall one or set LATENTBRIDGE_DISABLE_PLUGINS=evil-dist"
    ]


def test_recipe_validation_through_the_cli_names_both(entry_points, tmp_path):
    entry_points(evil_entry_point())
    path = tmp_path / "r.yaml"
    path.write_text(GOOD)
    result = invoke("validate", str(path))
    assert result.exit_code == 2
    assert "translator: 'linear' is ambiguous: provided by latentbridge.plugins.translators.linear" in result.stderr
    assert "evil_mod (evil-dist 1.0)" in result.stderr


def test_recipe_using_another_translator_validates(entry_points):
    entry_points(evil_entry_point())
    validated = validate_recipe(recipe("mlp"))
    assert validated.translator.name == "mlp"


def test_get_of_the_ambiguous_name_is_a_plugin_error(entry_points):
    entry_points(evil_entry_point())
    registry = Registry.load()
    with pytest.raises(PluginError, match="translator 'linear' is ambiguous: provided by .*linear .* and evil_mod"):
        registry.get("translator", "linear")
    assert "linear" not in registry.names("translator") and registry.ambiguous("translator") == ["linear"]
    assert registry.get("translator", "mlp").provider.distribution == "latentbridge"


@pytest.mark.parametrize("setting", ["evil-dist", "Evil_Dist", " other , EVIL.dist "])
def test_disabling_the_colliding_distribution_removes_the_ambiguity(entry_points, monkeypatch, setting):
    entry_points(evil_entry_point())
    monkeypatch.setenv(DISABLE_ENV, setting)
    registry = Registry.load()
    assert registry.problems == []
    assert registry.get("translator", "linear").provider.distribution == "latentbridge"
    assert [str(p) for p in registry.disabled] == ["evil (evil-dist 1.0)"]
    assert validate_recipe(recipe("linear")).translator.name == "linear"
    table = invoke("list-plugins")
    assert table.exit_code == 0 and "skipped by LATENTBRIDGE_DISABLE_PLUGINS: evil (evil-dist 1.0)" in table.stdout


def test_disabling_latentbridge_itself_is_ignored_with_a_warning(entry_points, monkeypatch, caplog):
    entry_points()
    monkeypatch.setenv(DISABLE_ENV, "LatentBridge")
    registry = Registry.load()
    assert caplog.messages == [
        "warning: LATENTBRIDGE_DISABLE_PLUGINS: 'latentbridge' is ignored: the built-in plugins always load "
        "(set LATENTBRIDGE_DISABLE_PLUGIN_AUTOLOAD=1 to turn off every third-party plugin instead)"
    ]
    assert "linear" in registry.names("translator")
    assert [p.problem for p in registry.problems] == ["bad-setting"]


def test_two_third_party_distributions_with_the_same_name(entry_points):
    entry_points(FakeEntryPoint("l2", "dist-a", "1.0", module("mod_a", register_objectives=registering(L2A))),
                 FakeEntryPoint("l2", "dist-b", "2.0", module("mod_b", register_objectives=registering(L2B))))
    registry = Registry.load()
    assert [e.provider.distribution for e in registry.providers("objective", "l2")] == ["dist-a", "dist-b"]
    with pytest.raises(PluginError) as info:
        registry.get("objective", "l2")
    assert str(info.value) == ("objective 'l2' is ambiguous: provided by mod_a (dist-a 1.0) and mod_b (dist-b 2.0); "
                               "uninstall one or set LATENTBRIDGE_DISABLE_PLUGINS to one of dist-a, dist-b")


def test_a_plugin_that_fails_to_import_is_a_problem_and_the_rest_works(entry_points):
    entry_points(FakeEntryPoint("broken", "broken-dist", "9.9", error=ImportError("no module named torch_extra")),
                 FakeEntryPoint("l2", "dist-a", "1.0", module("mod_a", register_objectives=registering(L2A))))
    result = invoke("list-plugins", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    [problem] = [r for r in rows if r["kind"] == "problem"]
    assert problem["problem"] == "import-error" and problem["name"] == "broken"
    assert problem["distribution"] == "broken-dist" and problem["version"] == "9.9"
    assert problem["message"] == (
        "plugin 'broken' (broken-dist 9.9) failed to load: ImportError: no module named torch_extra"
    )
    plugins = {(r["kind"], r["name"]): r for r in rows if r["kind"] != "problem"}
    assert plugins[("objective", "l2")]["distribution"] == "dist-a"
    assert plugins[("translator", "linear")]["status"] == "ok"

    table = invoke("list-plugins")
    assert table.exit_code == 0
    assert "1 plugin problem:" in table.stdout
    assert "import-error: plugin 'broken' (broken-dist 9.9) failed to load: ImportError" in table.stdout
    assert validate_recipe(recipe("linear")).translator.name == "linear"
    assert invoke("describe", "nll").exit_code == 0


def test_an_unknown_name_mentions_the_load_problems(entry_points):
    entry_points(FakeEntryPoint("broken", "broken-dist", "9.9", error=ImportError("nope")))
    registry = Registry.load()
    message = registry.unknown_message("objective", "l2", "objectives.l2")
    assert message.endswith("; 1 plugin problem while loading, see `latentbridge list-plugins`")


def test_an_unknown_hook_is_a_problem_with_a_did_you_mean(entry_points):
    typo = module("typo_mod", register_objective=registering(L2A))  # the hook is register_objectives
    entry_points(FakeEntryPoint("typo", "typo-dist", "0.1", typo))
    registry = Registry.load()
    [problem] = registry.problems
    assert problem.problem == "unknown-hook"
    assert problem.provider.distribution == "typo-dist"
    assert problem.message.startswith(
        "plugin typo_mod (typo-dist 0.1): unknown hook 'register_objective' (did you mean 'register_objectives'?); "
        "it is never called"
    )
    assert "l2" not in registry.names("objective") and "nll" in registry.names("objective")
    listed = invoke("list-plugins")
    assert listed.exit_code == 0
    assert "unknown-hook: plugin typo_mod (typo-dist 0.1): unknown hook 'register_objective'" in listed.stdout


def test_describe_an_ambiguous_name_shows_each_provider(entry_points):
    entry_points(evil_entry_point())
    result = invoke("describe", "linear")
    assert result.exit_code == 0, result.output
    assert "translator 'linear' is ambiguous: provided by" in result.stdout
    assert "from latentbridge.plugins.translators.linear (latentbridge" in result.stdout
    assert "from evil_mod (evil-dist 1.0)" in result.stdout
    assert "evil_knob" in result.stdout and "variant" in result.stdout
    one = invoke("describe", "linear", "--provider", "EVIL_DIST")
    assert one.exit_code == 0, one.output
    assert "evil_knob" in one.stdout and "variant" not in one.stdout and "ambiguous" not in one.stdout
    builtin = invoke("describe", "linear", "--provider", "latentbridge")
    assert builtin.exit_code == 0 and "variant" in builtin.stdout and "evil_knob" not in builtin.stdout
    wrong = invoke("describe", "linear", "--provider", "nobody")
    assert wrong.exit_code == 2
    assert "--provider: no translator 'linear' from 'nobody'; provided by" in wrong.stderr
    assert invoke("describe", "mlp").exit_code == 0


def test_a_hook_with_wrong_arguments_is_a_problem(entry_points):
    def register_objectives(reg):  # pluggy refuses it: the hook's argument is `register`
        reg(L2A)

    entry_points(FakeEntryPoint("wrong", "wrong-dist", "1.0", module("wrong_mod", register_objectives=register_objectives)))
    registry = Registry.load()
    [problem] = registry.problems
    assert (problem.problem, problem.name, problem.provider.distribution) == ("invalid-plugin", "wrong", "wrong-dist")
    assert problem.message.startswith("plugin wrong_mod (wrong-dist 1.0): Plugin 'wrong' for hook 'register_objectives'")
    assert "\n" not in problem.message
    assert "l2" not in registry.names("objective") and "nll" in registry.names("objective")
