"""Small, exact statistics for evaluation reports (no SciPy needed)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

Z95 = 1.959963984540054


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); ``(0, 1)`` when ``n`` is 0."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, float | int]:
    """Paired exact McNemar test of two systems on the same items (two-sided binomial on discordant pairs).

    ``a_only``: items only system a got right; ``b_only``: only b. p = P(X <= min | n, 1/2) * 2, capped at 1.
    """
    if len(a_correct) != len(b_correct):
        raise ValueError("McNemar needs the same items for both systems")
    a_only = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if y and not x)
    n = a_only + b_only
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_value": min(1.0, 2 * tail)}


def sign_flip_exact(differences: Sequence[int]) -> float:
    """Exact two-sided paired randomization test over items: under the null each item's difference
    (here: correct answers of configuration a minus b, summed over seeds) is as likely negated.

    p = P(|sum s_i d_i| >= |sum d_i|) over independent fair signs s_i, computed exactly by counting.
    With one seed (differences in {-1, 0, 1}) this is the exact McNemar test. Items, not (seed, item)
    pairs, are the unit, so results of several seeds on one item are never counted as independent.
    """
    d = [abs(int(x)) for x in differences if x]
    observed = abs(sum(int(x) for x in differences))
    if not d:
        return 1.0
    counts = {0: 1}  # number of sign patterns giving each sum so far (exact integers)
    for x in d:
        nxt: dict[int, int] = {}
        for total, c in counts.items():
            nxt[total + x] = nxt.get(total + x, 0) + c
            nxt[total - x] = nxt.get(total - x, 0) + c
        counts = nxt
    extreme = sum(c for total, c in counts.items() if abs(total) >= observed)
    return extreme / 2 ** len(d)


COLLAPSE_SHARE = 0.5
COLLAPSE_MIN_VALID = 10


def answer_spread(answers: Sequence[str | None]) -> dict[str, float | int | str | bool | None]:
    """Distinct answers, the most common one and its share of valid answers, and a collapse flag.

    Collapse: at least ``COLLAPSE_MIN_VALID`` valid answers and one value covers at least
    ``COLLAPSE_SHARE`` of them (like the seed's ``#### 10`` for every question). Gold answers of a
    real test set are far from that.
    """
    valid = [a for a in answers if a is not None]
    if not valid:
        return {"distinct": 0, "top_answer": None, "top_share": 0.0, "collapsed": False}
    top, count = Counter(valid).most_common(1)[0]
    share = count / len(valid)
    return {
        "distinct": len(set(valid)),
        "top_answer": top,
        "top_share": share,
        "collapsed": len(valid) >= COLLAPSE_MIN_VALID and share >= COLLAPSE_SHARE,
    }


def _words(text: str) -> list[str]:
    return "".join(ch.lower() if ch.isalnum() else " " for ch in text).split()


ECHO_NGRAM = 8


def echoes_question(output: str, question: str) -> bool:
    """True when ``output`` restates the question: it contains one of the question's 8-word runs
    (or the whole question when it is shorter), compared on lower-cased words."""
    q, o = _words(question), _words(output)
    n = min(ECHO_NGRAM, len(q))
    if n == 0 or len(o) < n:
        return False
    grams = {tuple(q[i : i + n]) for i in range(len(q) - n + 1)}
    return any(tuple(o[i : i + n]) in grams for i in range(len(o) - n + 1))
