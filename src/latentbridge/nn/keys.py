"""Looking inside a frozen decoder: the queries, keys and values its own attention code computes.

:func:`capture_attention` runs the model's forward pass while a thin attention function, registered
with transformers' ``AttentionInterface``, records what each attention layer hands to its attention
kernel: queries and keys after the rotary embedding (and after any per-head norm, as Qwen3, OLMo-2 and
Gemma-3 apply; from fused projections, as Phi-3 has), and values. The kernel that computes the output
is the model's own (``sdpa`` or ``eager``), so the forward pass is unchanged and gradients flow through
the captured tensors. Nothing is re-implemented, so the keys equal the ones the model caches.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from latentbridge.api.segments import TargetInputs
from latentbridge.errors import LatentBridgeError

_PREFIX = "latentbridge_capture_"
_ACTIVE: list[dict[int, Captured]] = []  # the capture in progress (innermost last)


@dataclass
class Captured:
    """One attention layer: ``query b H L e``, ``key`` and ``value`` ``b KV L e`` (post-rotary), ``scaling``."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    scaling: float

    @property
    def groups(self) -> int:
        """Query heads per key/value head (grouped-query attention)."""
        return self.query.shape[1] // self.key.shape[1]


class _Enough(Exception):
    """Raised once the layers asked for have run: the rest of the forward pass is skipped."""


def kernel(original: str, module: Any):
    """The model's own attention kernel, ``sdpa`` or ``eager``."""
    if original == "sdpa":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise LatentBridgeError(f"{type(module).__name__}: no eager attention to capture around")
    return eager


def _capturing(original: str):
    def attention(module, query, key, value, attention_mask, **kwargs):
        layer = getattr(module, "layer_idx", None)
        out = kernel(original, module)(module, query, key, value, attention_mask, **kwargs)
        if _ACTIVE and layer is not None:
            captured = _ACTIVE[-1]
            captured[layer] = Captured(query, key, value, float(kwargs.get("scaling") or module.scaling))
            if len(captured) >= captured_limit[-1]:
                raise _Enough
        return out

    return attention


captured_limit: list[int] = []


def _register(original: str, prefix: str = _PREFIX, factory: Any = None) -> str:
    """Register (once) the attention function ``factory(original)`` (default: the capturing one) under
    ``prefix + original``, with the original's mask function; return its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    name = prefix + original
    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, (factory or _capturing)(original))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[original])
    return name


def _attention_configs(model: Any) -> list[Any]:
    """The config objects the attention layers read ``_attn_implementation`` from."""
    configs = {id(m.config): m.config for m in model.modules() if hasattr(m, "config") and hasattr(m.config, "_attn_implementation")}
    return list(configs.values())


@contextlib.contextmanager
def _implementation(model: Any, prefix: str = _PREFIX, factory: Any = None) -> Iterator[None]:
    """Within the block, ``model``'s attention layers call ``factory(original)`` (default: the capturing
    function), which wraps the model's own kernel (``sdpa`` or ``eager``)."""
    configs = _attention_configs(model)
    saved = [c._attn_implementation for c in configs]
    for config, original in zip(configs, saved, strict=True):
        if original not in ("sdpa", "eager"):
            raise LatentBridgeError(f"looking inside attention needs the 'sdpa' or 'eager' implementation, not {original!r}")
        config._attn_implementation = _register(original, prefix, factory)
    try:
        yield
    finally:
        for config, original in zip(configs, saved, strict=True):
            config._attn_implementation = original


def capture_attention(model: Any, inputs: TargetInputs, layers: int) -> list[Captured]:
    """Queries, keys and values of the first ``layers`` attention layers for ``inputs``, as the model's
    own attention computes them. The forward pass stops after the last layer needed."""
    total = int(model.config.get_text_config().num_hidden_layers)
    if not 0 < layers <= total:
        raise LatentBridgeError(f"capture_attention: layers must be in 1..{total}, got {layers}")
    captured: dict[int, Captured] = {}
    _ACTIVE.append(captured)
    captured_limit.append(layers)
    try:
        with _implementation(model):
            model(**inputs.model_kwargs(), use_cache=False)
    except _Enough:
        pass
    finally:
        _ACTIVE.pop()
        captured_limit.pop()
    missing = [i for i in range(layers) if i not in captured]
    if missing:
        raise LatentBridgeError(f"{type(model).__name__}: attention layers {missing} did not run through the "
                                "attention interface (an architecture latentbridge cannot look inside)")
    return [captured[i] for i in range(layers)]


def swapped_attention(model: Any, prefix: str, factory: Any) -> contextlib.AbstractContextManager[None]:
    """Within the block, every attention layer of ``model`` calls ``factory(original)(module, query, key,
    value, attention_mask, **kwargs)``, a function that wraps the model's own kernel (:func:`kernel`)."""
    return _implementation(model, prefix, factory)
