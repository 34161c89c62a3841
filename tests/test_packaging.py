"""The wheel ships the core, every built-in plugin and every recipe (what `pip install` users get)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

from .conftest import REPO


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(out), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = out.glob("latentbridge-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def expected_files() -> set[str]:
    files = {f"latentbridge/{p.relative_to(REPO / 'src/latentbridge')}" for p in (REPO / "src/latentbridge").rglob("*.py")}
    files |= {
        f"latentbridge/plugins/{p.relative_to(REPO / 'plugins')}"
        for p in (REPO / "plugins").rglob("*.py")
        if "examples" not in p.parts
    }
    files |= {f"latentbridge/recipes/{p.name}" for p in (REPO / "recipes").glob("*.yaml")}
    models = REPO / "src/latentbridge/zoo/models"
    files |= {f"latentbridge/zoo/models/{p.relative_to(models)}" for p in models.rglob("*") if p.is_file()}
    return files


def test_wheel_contains_core_plugins_and_recipes(wheel_names):
    missing = expected_files() - wheel_names
    assert not missing, f"not in the wheel (add the package to pyproject.toml): {sorted(missing)}"
    assert "latentbridge/recipes/answer_softplus.yaml" in wheel_names
    assert "latentbridge/zoo/models/tiny-llama/model.safetensors" in wheel_names


def test_wheel_leaves_out_the_example_plugin(wheel_names):
    assert not any("latentbridge_l2" in name for name in wheel_names)
