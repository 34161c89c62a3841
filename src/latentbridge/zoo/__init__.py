"""latentbridge.zoo: a pretrained tiny source/target LLM pair and the synthetic ``arith`` and ``facts`` tasks.

Self-contained (no dependency on the rest of latentbridge). Main entry points:

* :func:`latentbridge.zoo.build.build_pair` - build ``tiny-llama``/``tiny-mistral``
  and the arith splits into a folder, with a ``zoo.json`` summary;
* :func:`latentbridge.zoo.evaluate.evaluate_accuracy` - batched greedy GSM8K-style scoring;
* :func:`latentbridge.zoo.arith.generate_splits` / ``write_jsonl`` - the task itself.

Submodules are imported lazily so that ``import latentbridge.zoo.arith`` stays
light (no torch import).
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_pair", "evaluate_accuracy", "generate_splits", "write_jsonl", "read_jsonl"]


def __getattr__(name: str) -> Any:
    if name == "build_pair":
        from latentbridge.zoo.build import build_pair

        return build_pair
    if name == "evaluate_accuracy":
        from latentbridge.zoo.evaluate import evaluate_accuracy

        return evaluate_accuracy
    if name in ("generate_splits", "write_jsonl", "read_jsonl"):
        from latentbridge.zoo import arith

        return getattr(arith, name)
    raise AttributeError(name)
