"""Shared fixtures. Everything here is offline: no hub, no data-set server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GSM8K_DIR = Path(os.environ.get("LATENTBRIDGE_GSM8K_DIR", REPO.parent / "shared" / "data" / "gsm8k"))


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch):
    """Each test sees a freshly loaded plugin registry (tests may add plugins or set env vars)."""
    from latentbridge import registry

    registry.reset_registry()
    yield
    registry.reset_registry()


@pytest.fixture
def gsm8k_dir() -> Path:
    if not (GSM8K_DIR / "test.jsonl").is_file():
        pytest.fail(f"real GSM8K not found at {GSM8K_DIR}; set LATENTBRIDGE_GSM8K_DIR")
    return GSM8K_DIR


@pytest.fixture(scope="session")
def random_pair(tmp_path_factory) -> dict[str, Path]:
    """Folders of a tiny random-init Llama and Mistral with their own tokenizers (see tiny_models.py)."""
    from .tiny_models import build_pair

    return build_pair(tmp_path_factory.mktemp("random_pair"))
