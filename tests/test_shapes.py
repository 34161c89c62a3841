from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from latentbridge.api.shapes import check_shape
from latentbridge.errors import ShapeError

dims = st.integers(min_value=1, max_value=6)


@given(b=dims, t=dims, d=dims)
def test_returns_named_sizes(b, t, d):
    assert check_shape(torch.zeros(b, t, d), "b t d") == {"b": b, "t": t, "d": d}


@given(b=dims, t=dims, d=dims, wrong=dims)
def test_known_sizes_are_enforced(b, t, d, wrong):
    x = torch.zeros(b, t, d)
    if wrong == d:
        assert check_shape(x, "b t d", d=wrong)["d"] == d
    else:
        with pytest.raises(ShapeError, match=f"d={d} \\(expected {wrong}\\)"):
            check_shape(x, "b t d", d=wrong)


@given(shape=st.lists(dims, min_size=0, max_size=5))
def test_rank_mismatch(shape):
    x = torch.zeros(tuple(shape))
    if len(shape) == 3:
        check_shape(x, "b t d")
    else:
        with pytest.raises(ShapeError, match="expected 3 dims"):
            check_shape(x, "b t d", what="h")


@given(b=dims, t=dims)
def test_sizes_chain_between_checks(b, t):
    found = check_shape(torch.zeros(b, t, 4), "b t d_src")
    check_shape(torch.ones(b, t), "b t", **found)
    with pytest.raises(ShapeError):
        check_shape(torch.ones(b, t + 1), "b t", **found)


def test_non_tensor():
    with pytest.raises(ShapeError, match="got list"):
        check_shape([1, 2], "b t")
