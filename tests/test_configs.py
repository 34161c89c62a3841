from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from latentbridge.api.options import option
from latentbridge.config.schema import config_fields, config_to_dict, parse_config
from latentbridge.errors import ConfigError


@dataclass
class Inner:
    depth: int = option(2, gt=0, help="layers")


@dataclass
class Demo:
    weight: float = option(1.0, ge=0, help="a weight")
    steps: int = option(10, gt=0, help="steps")
    mode: Literal["fast", "slow"] = option("fast", help="mode")
    flag: bool = option(False, help="a flag")
    maybe: int | None = option(None, ge=0, help="optional")
    names: list[str] = option(default_factory=list, help="names")
    inner: Inner = option(default_factory=Inner, help="nested")


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(Demo, data, "demo")
    return info.value.problems


def test_defaults_and_round_trip():
    cfg = parse_config(Demo, {})
    assert cfg == Demo()
    assert parse_config(Demo, config_to_dict(cfg)) == cfg


def test_exact_messages():
    assert problems_of({"weight": "abc"}) == ['demo.weight: expected a number >= 0, got "abc"']
    assert problems_of({"weight": -1}) == ["demo.weight: expected a number >= 0, got -1"]
    assert problems_of({"steps": 0}) == ["demo.steps: expected an integer > 0, got 0"]
    assert problems_of({"steps": 2.5}) == ["demo.steps: expected an integer > 0, got 2.5"]
    assert problems_of({"mode": "fsat"}) == [
        "demo.mode: expected one of 'fast', 'slow', got \"fsat\" (did you mean 'fast'?)"
    ]
    assert problems_of({"flag": "yes"}) == ['demo.flag: expected true or false, got "yes"']
    assert problems_of({"maybe": -3}) == ["demo.maybe: expected an integer >= 0 or null, got -3"]
    assert problems_of({"names": "a"}) == ['demo.names: expected a list of strings, got "a"']
    assert problems_of({"names": ["a", 3]}) == ["demo.names[1]: expected a string, got 3"]
    assert problems_of({"inner": {"depth": 0}}) == ["demo.inner.depth: expected an integer > 0, got 0"]
    assert problems_of({"wieght": 1}) == ["demo.wieght: unknown key (did you mean 'weight'?)"]


def test_every_problem_is_reported_at_once():
    found = problems_of({"weight": "x", "steps": -1, "bogus": 1, "inner": {"depht": 3}})
    assert len(found) == 4


def test_booleans_are_not_numbers_and_numeric_strings_are():
    assert problems_of({"weight": True}) == ["demo.weight: expected a number >= 0, got true"]
    assert parse_config(Demo, {"weight": "1e-3"}).weight == pytest.approx(1e-3)


def test_nan_fails_a_bound():
    assert problems_of({"weight": float("nan")}) == ["demo.weight: expected a number >= 0, got NaN"]


def test_required_key():
    @dataclass(kw_only=True)
    class Needs:
        path: str = option(help="where")

    with pytest.raises(ConfigError) as info:
        parse_config(Needs, {}, "x")
    assert info.value.problems == ["x.path: required key is missing"]


def test_config_fields_documents_defaults():
    rows = {name: (words, default, doc) for name, words, default, doc in config_fields(Demo)}
    assert rows["weight"] == ("a number >= 0", 1.0, "a weight")
    assert rows["names"][1] == []


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_bound_property(x):
    if x >= 0:
        assert parse_config(Demo, {"weight": x}).weight == x
    else:
        with pytest.raises(ConfigError):
            parse_config(Demo, {"weight": x})


@given(st.integers())
def test_int_bound_property(n):
    if n > 0:
        assert parse_config(Demo, {"steps": n}).steps == n
    else:
        with pytest.raises(ConfigError):
            parse_config(Demo, {"steps": n})
