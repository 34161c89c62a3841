"""The core's shape, checked from its source: sub-packages, import direction, no cycles, small modules.

Imports are read with ``ast`` from every module of ``src/latentbridge`` (imports inside functions count
too: a lazy import is still a dependency), so the rules hold whatever is imported at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "latentbridge"
PLUGINS = REPO / "plugins"
MAX_LINES = 400
SUBPACKAGES = ("api", "nn", "config", "registry", "runtime", "bridge", "train", "eval", "io", "report", "cli", "zoo")
# what each layer may import from latentbridge (besides itself); anything else is a violation
ALLOWED = {
    "api": {"latentbridge.errors", "latentbridge._version"},
    "nn": {"latentbridge.errors", "latentbridge.api"},
}


def module_name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def modules() -> dict[str, Path]:
    found = {module_name(p, SRC, "latentbridge"): p for p in SRC.rglob("*.py")}
    found.update({module_name(p, PLUGINS, "latentbridge.plugins"): p for p in PLUGINS.glob("*/*.py")})
    found["latentbridge.plugins"] = PLUGINS / "__init__.py"
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The latentbridge modules ``name`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import sub` imports the submodule; `from pkg import name` the package (its face)
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                out.add(target)
    return out


GRAPH = {name: imports_of(name, path, set(modules())) for name, path in modules().items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (found := visit(node)):
            return found
    return None


def test_the_core_has_no_import_cycle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH) or [])


def test_the_cycle_finder_finds_a_planted_cycle():
    planted = {k: set(v) for k, v in GRAPH.items()}
    planted["latentbridge.api.task"].add("latentbridge.registry.host")  # the cycle this layout removed
    assert find_cycle(planted) is not None


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_interface_layers_import_only_what_they_may(layer):
    prefix = f"latentbridge.{layer}"
    bad = []
    for name, deps in GRAPH.items():
        if name == prefix or name.startswith(prefix + "."):
            for dep in deps:
                inside = dep == prefix or dep.startswith(prefix + ".")
                allowed = any(dep == a or dep.startswith(a + ".") for a in ALLOWED[layer])
                if not (inside or allowed):
                    bad.append(f"{name} imports {dep}")
    assert not bad, "\n".join(bad)


# layers that must not import another (besides the interface rules above): (importer, imported, why)
FORBIDDEN = [
    ("latentbridge.bridge", "latentbridge.train", "the bridge is used by training and evaluation alike"),
    ("latentbridge.eval", "latentbridge.train", "evaluation runs without training (runtime helpers: latentbridge.runtime)"),
    ("latentbridge.config", "latentbridge.eval", "system names come from the registry"),
    ("latentbridge.runtime", "latentbridge.bridge", "runtime is below every layer"),
    ("latentbridge.runtime", "latentbridge.train", "runtime is below every layer"),
    ("latentbridge.runtime", "latentbridge.eval", "runtime is below every layer"),
]


def _inside(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{name} imports {dep} ({why})" for importer, imported, why in FORBIDDEN
            for name, deps in graph.items() if _inside(name, importer)
            for dep in sorted(deps) if _inside(dep, imported)]


def test_layers_import_nothing_they_must_not():
    bad = forbidden_imports(GRAPH)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(("importer", "imported"), [("latentbridge.eval.harness", "latentbridge.train.runner"),
                                                    ("latentbridge.bridge.core", "latentbridge.train.loss"),
                                                    ("latentbridge.config.sections", "latentbridge.eval.harness")])
def test_the_layer_rule_finds_a_planted_import(importer, imported):
    planted = {k: set(v) for k, v in GRAPH.items()}
    planted[importer].add(imported)
    assert any(line.startswith(f"{importer} imports {imported}") for line in forbidden_imports(planted))


def test_moved_modules_are_the_same_objects_under_their_old_names():
    import latentbridge.runtime.distributed as new_distributed
    import latentbridge.runtime.precision as new_precision
    import latentbridge.train.distributed as old_distributed
    import latentbridge.train.precision as old_precision

    assert old_distributed is new_distributed and old_precision is new_precision


def test_the_core_knows_no_concrete_plugin():
    bad = [f"{name} imports {dep}" for name, deps in GRAPH.items() if not name.startswith("latentbridge.plugins")
           for dep in deps if dep.startswith("latentbridge.plugins.")]
    assert not bad, "\n".join(bad)


def test_every_module_is_small():
    long = {str(p.relative_to(REPO)): n for p in [*SRC.rglob("*.py"), *PLUGINS.rglob("*.py")]
            if "build" not in p.parts and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_every_subpackage_says_what_it_is():
    found = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").is_file())
    assert found == sorted(SUBPACKAGES)
    for name in SUBPACKAGES:
        doc = ast.get_docstring(ast.parse((SRC / name / "__init__.py").read_text()))
        assert doc and doc.strip(), f"{name}/__init__.py has no docstring"


def test_the_readme_layout_names_every_subpackage():
    text = (REPO / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    for name in SUBPACKAGES:
        assert f"`src/latentbridge/{name}/`" in layout, name


def test_the_core_dispatches_on_no_message_kind():
    """Every message kind lays itself out (``Message.target_inputs``): ``Bridge.bridged_inputs`` asks no
    ``isinstance`` of the message."""
    tree = ast.parse((SRC / "bridge" / "core.py").read_text(encoding="utf-8"))
    method = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "bridged_inputs")
    checks = [n.lineno for n in ast.walk(method) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "isinstance"
              and isinstance(n.args[0], ast.Name) and n.args[0].id == "message"
              and not (isinstance(n.args[1], ast.Attribute) and n.args[1].attr == "Tensor")]
    assert not checks, f"bridge/core.py lines {checks}"


def test_the_example_package_uses_public_names_only():
    """An outside package written against the README imports ``latentbridge``, ``latentbridge.api`` and the
    built-in plugins it builds on (never the core's internals: ``latentbridge.bridge``, ``.train``, ...)."""
    example = PLUGINS / "examples" / "latentbridge-l2" / "latentbridge_l2.py"
    imported = set()
    for node in ast.walk(ast.parse(example.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("latentbridge"):
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names if a.name.startswith("latentbridge")}
    public = ("latentbridge.api", "latentbridge.plugins")
    assert imported and all(m == "latentbridge" or m.startswith(public) for m in imported), imported


def test_the_layout_helpers_are_public_in_the_api():
    from latentbridge.api import layout as public
    from latentbridge.bridge import layout as internal

    for name in ("left_pad", "positions_from_mask", "pad_hidden"):
        assert getattr(internal, name) is getattr(public, name)  # one function, its home the api
