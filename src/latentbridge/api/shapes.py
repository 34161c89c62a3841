"""Shape contracts in einops notation, checked at interface boundaries.

``check_shape(x, "b t d", d=512)`` verifies the number of dimensions and any sizes that are already
known, and returns every named size, so one call's result can constrain the next::

    dims = check_shape(h, "b t d_src", d_src=cfg.d_src)
    check_shape(mask, "b t", **dims)
"""

from __future__ import annotations

import einops
import torch

from latentbridge.errors import ShapeError


def check_shape(x: torch.Tensor, pattern: str, *, what: str = "tensor", **known: int) -> dict[str, int]:
    """Check ``x`` against an einops ``pattern`` and known sizes; return all named sizes.

    Names in ``known`` that the pattern does not use are ignored, so a dict of sizes collected from
    earlier checks can be passed along whole. Raises :class:`ShapeError` naming ``what``.
    """
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{what}: expected a tensor of shape ({pattern}), got {type(x).__name__}")
    try:
        sizes = einops.parse_shape(x, pattern)
    except (RuntimeError, einops.EinopsError) as exc:
        raise ShapeError(
            f"{what}: expected {len(pattern.split())} dims ({pattern}), got shape {tuple(x.shape)}"
        ) from exc
    wrong = {name: (size, known[name]) for name, size in sizes.items() if name in known and known[name] != size}
    if wrong:
        detail = ", ".join(f"{name}={got} (expected {want})" for name, (got, want) in wrong.items())
        raise ShapeError(f"{what}: shape {tuple(x.shape)} does not match ({pattern}): {detail}")
    return {**known, **sizes}
