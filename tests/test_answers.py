"""Answer extraction and scoring (GSM8K, lm-evaluation-harness style), with property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from latentbridge.eval import extract_answer, is_correct, normalize_number

numbers = st.integers(min_value=-10**7, max_value=10**7)
chatter = st.text(alphabet=st.sampled_from("abc xyz.!?\n"), max_size=30)


def with_commas(n: int) -> str:
    return f"{n:,}"


@given(n=numbers, before=chatter, after=chatter)
def test_strict_finds_the_number_after_hashes(n, before, after):
    text = f"{before}\n#### {with_commas(n)}\n{after}"
    assert extract_answer(text, "strict") == str(n)


@given(n=numbers, dollar=st.booleans(), period=st.booleans(), commas=st.booleans())
def test_normalisation(n, dollar, period, commas):
    written = ("$" if dollar else "") + (with_commas(n) if commas else str(n)) + ("." if period else "")
    assert normalize_number(written) == str(n).replace("$", "")
    assert is_correct(f"So it is {written}", f"work\n#### {n}", mode="flexible")


@given(text=chatter)
def test_no_number_is_invalid(text):
    assert extract_answer(text, "strict") is None
    assert extract_answer(text, "flexible") is None


@given(first=numbers, last=numbers)
def test_flexible_takes_the_last_number_strict_the_first_hashes(first, last):
    text = f"#### {first}\nthen {last} apples"
    assert extract_answer(text, "strict") == str(first)
    assert extract_answer(text, "flexible") == str(last)


def test_examples():
    assert extract_answer("She makes 9 * 2 = $18 every day.\n#### 18") == "18"
    assert extract_answer("#### $1,200.") == "1200"
    assert extract_answer("#### 10\n\n###### Explanation:") == "10"
    assert extract_answer("the answer is 7.", "flexible") == "7"
    assert extract_answer("costs 3.50 total", "flexible") == "3.50"
    assert extract_answer("####18") is None  # strict needs the space, as in lm-eval
    assert extract_answer("ends with ..", "flexible") is None
    assert extract_answer("5 then ..", "flexible") == "5"


def test_is_correct():
    gold = "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n#### 18"
    assert is_correct("blah\n#### 18", gold)
    assert not is_correct("blah\n#### 19", gold)
    assert not is_correct("the answer is 18", gold)  # strict needs ####
    assert is_correct("the answer is 18", gold, mode="flexible")
    with pytest.raises(ValueError, match="no '#### <number>'"):
        is_correct("#### 1", "no hashes here")
    with pytest.raises(ValueError, match="unknown extraction mode"):
        extract_answer("#### 1", "loose")
