"""Shared fixtures. Everything here is offline: no hub, no data-set server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GSM8K_SLICE_DIR = REPO / "tests" / "data" / "gsm8k"  # 64 train and 32 test lines, in the repository


def gsm8k_full_dir() -> Path | None:
    """Where the whole GSM8K is: ``$LATENTBRIDGE_GSM8K_DIR``, or None. Nothing outside the repository is
    read unless asked for: a clone carries what its tests need (the slice in tests/data/gsm8k)."""
    env = os.environ.get("LATENTBRIDGE_GSM8K_DIR", "").strip()
    return Path(env).expanduser() if env else None


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    """Each test sees a freshly loaded plugin registry (tests may add plugins or set env vars)."""
    from latentbridge import registry

    registry.reset_registry()
    yield
    registry.reset_registry()


@pytest.fixture
def gsm8k_slice() -> Path:
    """A folder of real GSM8K lines (train.jsonl, test.jsonl) for tests that need GSM8K-format data."""
    return GSM8K_SLICE_DIR


@pytest.fixture
def gsm8k_full() -> Path:
    """The whole GSM8K (7,473 train and 1,319 test lines); the test is skipped when it is not there."""
    folder = gsm8k_full_dir()
    if folder is None:
        pytest.skip("the whole GSM8K is not part of the repository: set LATENTBRIDGE_GSM8K_DIR to a folder with "
                    "train.jsonl and test.jsonl to run this test (tests/data/gsm8k holds only a slice)")
    missing = [name for name in ("train.jsonl", "test.jsonl") if not (folder / name).is_file()]
    if missing:
        pytest.skip(f"the whole GSM8K is not at {folder} (no {', '.join(missing)}); set LATENTBRIDGE_GSM8K_DIR "
                    "to a folder with train.jsonl and test.jsonl (tests/data/gsm8k holds only a slice)")
    return folder


@pytest.fixture(scope="session")
def random_pair(tmp_path_factory) -> dict[str, Path]:
    """Folders of a tiny random-init Llama and Mistral with their own tokenizers (see tiny_models.py)."""
    from .tiny_models import build_pair

    return build_pair(tmp_path_factory.mktemp("random_pair"))


@pytest.fixture(scope="session")
def families(tmp_path_factory):
    """Folders of tiny random models of every architecture family (see families.py), built once per
    session (about a second and a half); ``.seconds`` holds each build's time."""
    from .families import build_families

    return build_families(tmp_path_factory.mktemp("families"))
