"""Sliding-window attention measured in positions, whatever the padding inside a row.

transformers measures a sliding window in cache slots: a query at slot ``q`` sees the keys at slots
``q - window + 1 .. q``, and its sliding cache layers keep only the last ``window - 1`` slots. Where a row's
tokens are contiguous (plain left padding) slots and positions differ by a constant, and that is exact. The
bridge's key/value layouts put padding *inside* a row, between a cache and the text that reads it
(``[bos][virtual][pad][text]`` for a kv prefix, ``[pad][bos][prompt] | [pad][last][answer]`` for a fusion):
counted in slots, a shorter row's padding takes the place of real tokens in its window, and it reads
something else than it reads alone.

:func:`install_position_windows` puts a forward pre-hook on a model with sliding-window layers. For every
forward pass given a 2D attention mask it builds the 4D masks itself: a key is seen where it is a real
token, not after the query, and (for a sliding layer) less than ``window`` *positions* before it, the
positions counted over real tokens (:func:`~latentbridge.bridge.layout.positions_from_mask`, the bridge's
convention everywhere). A model whose layers are of one kind (Mistral) gets the sliding mask; one with
``layer_types`` (Gemma-2/3, Qwen-2 with its window on) a mask per layer type. A pass that would build its
own cache gets a plain one (every slot of every layer kept), so that the mask and the cache agree. A pass
handed a cache with sliding layers (transformers' own ``generate``) is left to transformers.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

from latentbridge.errors import LatentBridgeError

SUPPORTED = ("sdpa", "eager")


def allowed_keys(mask: torch.Tensor, q_len: int, window: int | None) -> torch.Tensor:
    """``b q kv`` booleans: which key each of the last ``q_len`` slots of ``mask`` (``b kv``, 1 on real
    tokens) attends to: real keys not after it and, with ``window``, less than ``window`` positions before
    it. A padding query attends to itself only (a row with no key at all would give NaN)."""
    real = mask.bool()
    kv = mask.shape[1]
    positions = real.long().cumsum(-1) - 1  # b kv: the position of each real token
    slots = torch.arange(kv, device=mask.device)
    q_slots = slots[kv - q_len :]
    seen = real[:, None, :] & (slots[None, None, :] <= q_slots[None, :, None])
    if window is not None:  # position(q) - position(k) < window, compared without a b x q x kv integer tensor
        seen = seen & (positions[:, None, :] > positions[:, kv - q_len :, None] - window)
    pad_query = ~real[:, kv - q_len :, None]
    own = slots[None, None, :] == q_slots[None, :, None]
    return (seen & ~pad_query) | (own & pad_query)


def _formatted(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """``b 1 q kv`` in the form the attention implementation adds or selects with."""
    allowed = allowed[:, None]
    if implementation == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def install_position_windows(model: Any, window: int, cache_argument: str) -> None:
    """Give ``model`` (with sliding layers of ``window``) masks that measure the window in positions."""
    config = model.config.get_text_config()
    layer_types = getattr(config, "layer_types", None)
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    if implementation not in SUPPORTED:
        raise LatentBridgeError(f"attention implementation '{implementation}' with a sliding window: latentbridge "
                                f"builds the window's masks itself, for {' or '.join(SUPPORTED)} attention only")

    def hook(module: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]] | None:
        if len(args) > 1:
            raise LatentBridgeError("a sliding-window model is called with its attention mask as a keyword "
                                    "(attention_mask=...): latentbridge builds the window's masks from it")
        if any(kwargs.get(k) is not None for k in ("pixel_values", "token_type_ids")):
            raise LatentBridgeError("image inputs with a sliding-window model: latentbridge's window masks cover "
                                    "text only")
        cache = kwargs.get(cache_argument)
        use_cache = kwargs.get("use_cache")
        if cache is None and (use_cache if use_cache is not None else getattr(config, "use_cache", False)):
            # a plain cache (every slot), also for a pass without a mask: one the model built from its
            # config would keep only the window's last slots, and a later padded pass could not read it
            cache = kwargs[cache_argument] = DynamicCache()
        mask = kwargs.get("attention_mask")
        if not isinstance(mask, torch.Tensor) or mask.ndim != 2:
            return (args, kwargs) if cache is not None else None
        inputs = kwargs.get("inputs_embeds")
        if inputs is None:
            inputs = kwargs.get("input_ids", args[0] if args else None)
        if inputs is None:
            return None
        if any(getattr(cache, "is_sliding", None) or ()):
            # a cache that drops slots (transformers' own generate): its own masks fit it where no row has
            # padding inside it; where one has, they would count the padding
            inner = (mask.long().diff(dim=1) < 0).any()
            if inner:
                raise LatentBridgeError("a sliding-window cache with padding inside a row: latentbridge needs a "
                                        "plain cache (DynamicCache()) to measure the window in positions")
            return None
        past = cache.get_seq_length() if cache is not None else 0
        q_len = inputs.shape[1]
        if past + q_len != mask.shape[1]:
            raise LatentBridgeError(f"attention mask of {mask.shape[1]} slots for {past} cached and {q_len} new "
                                    "tokens")
        dtype = inputs.dtype if inputs.is_floating_point() else model.dtype
        sliding = _formatted(allowed_keys(mask, q_len, window), implementation, dtype)
        if layer_types is None:
            kwargs["attention_mask"] = sliding
        else:
            full = _formatted(allowed_keys(mask, q_len, None), implementation, dtype)
            kwargs["attention_mask"] = {"full_attention": full, "sliding_attention": sliding}
        return args, kwargs

    model.register_forward_pre_hook(hook, with_kwargs=True)
