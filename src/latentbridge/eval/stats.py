"""Small, exact statistics for evaluation reports (no SciPy needed).

Within one run the unit is the item (exact McNemar of two systems on the same items). Across runs
the unit is the seed: a configuration's runs are compared with another's run of the same seed, by
the exact sign-flip test and the paired Student t test over the per-seed differences
(:func:`sign_flip_test`, :func:`paired_t`), with the t interval over seeds (:func:`t_interval`: the items
held fixed) beside :func:`hierarchical_bootstrap`, which resamples seeds and items (other items too).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from functools import reduce

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
    """Exact two-sided paired randomization test on integer differences: under the null each
    difference is as likely negated. p = P(|sum s_i d_i| >= |sum d_i|) over independent fair signs
    s_i, computed exactly by counting the sums' sign patterns (zeros change nothing and are dropped).
    On per-item differences of one run pair (in {-1, 0, 1}) this is the exact McNemar test. Across
    seeds use :func:`sign_flip_test` on the per-seed differences: summing items over seeds and
    taking the items as the unit treats the trained models as fixed and ignores seed-to-seed variance.
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


# -- over seeds: the seed is the unit --------------------------------------------------------------

MAX_SIGN_FLIP_UNITS = 24  # 2^24 sign patterns at most


def sign_flip_test(differences: Sequence[float | Fraction]) -> float:
    """Exact two-sided sign-flip test over units (seeds): p is the share of the 2^n sign patterns
    whose |mean| is at least the observed |mean|. The differences are taken exactly as given
    (floats as their binary values; pass :class:`~fractions.Fraction` of counts, e.g.
    ``Fraction(correct, n)``, so that equal accuracies tie exactly). Never below
    :func:`smallest_sign_flip_p` ``(n)`` = 2/2^n; 1.0 with no differences."""
    if len(differences) > MAX_SIGN_FLIP_UNITS:
        raise ValueError(f"the exact sign-flip test enumerates 2^n patterns: at most {MAX_SIGN_FLIP_UNITS} units")
    exact = [Fraction(x) for x in differences]  # a nan or infinite difference raises ValueError here
    scale = reduce(math.lcm, (f.denominator for f in exact), 1)
    return sign_flip_exact([int(f * scale) for f in exact])


def smallest_sign_flip_p(n: int) -> float:
    """The smallest p the exact two-sided sign-flip test can give with ``n`` units: 2/2^n (1 for n <= 1)."""
    return min(1.0, 2 / 2**n) if n > 0 else 1.0


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz), for x < (a+1)/(a+b+2)."""
    tiny, eps = 1e-300, 1e-16
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """The regularized incomplete beta function I_x(a, b); ``y`` is 1 - x when known more precisely."""
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, y) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    if math.isnan(t) or df <= 0:
        return math.nan
    if math.isinf(t):
        return 0.0
    t2 = t * t
    return min(1.0, betainc(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2)))


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (``q`` in (0.5, 1)): the t with P(|T| >= t) = 2(1 - q), by bisection."""
    if not 0.5 < q < 1 or df <= 0:
        raise ValueError(f"t_quantile needs 0.5 < q < 1 and df > 0, got q={q}, df={df}")
    target = 2.0 * (1.0 - q)
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > target:
        low, high = high, 2.0 * high
    for _ in range(200):
        mid = (low + high) / 2.0
        if mid in (low, high):
            break
        low, high = (mid, high) if t_two_sided_p(mid, df) > target else (low, mid)
    return (low + high) / 2.0


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its Student-t interval over units (seeds): ``(mean, low, high)``; nan bounds with one value."""
    n = len(values)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    half = t_quantile(0.5 + level / 2.0, n - 1) * _standard_error(values, mean)
    return mean, mean - half, mean + half


def _standard_error(values: Sequence[float], mean: float) -> float:
    """sd / sqrt(n) over units; exactly 0 when every value is the same (not a rounding residue)."""
    if max(values) == min(values):
        return 0.0
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)) / math.sqrt(len(values))


def paired_t(differences: Sequence[float], level: float = 0.95) -> dict[str, float | int]:
    """Paired Student t test over units (seeds) of the per-unit differences: the mean difference, its
    t interval, t, degrees of freedom and the two-sided p. Undefined (nan) with fewer than two units;
    with no spread p is 0 (1 when every difference is 0) and the interval is the mean."""
    values = [float(d) for d in differences]
    n = len(values)
    if n == 0:
        raise ValueError("paired_t needs at least one difference")
    mean, low, high = t_interval(values, level)
    out: dict[str, float | int] = {"n": n, "mean": mean, "low": low, "high": high, "df": n - 1,
                                   "t": math.nan, "p_value": math.nan}
    if n < 2:
        return out
    se = _standard_error(values, mean)
    if se == 0.0:
        out.update(t=math.copysign(math.inf, mean) if mean else 0.0, p_value=0.0 if mean else 1.0)
    else:
        out.update(t=mean / se, p_value=t_two_sided_p(mean / se, n - 1))
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, linearly interpolated between order statistics."""
    position = q * (len(sorted_values) - 1)
    below = math.floor(position)
    above = min(below + 1, len(sorted_values) - 1)
    return sorted_values[below] + (sorted_values[above] - sorted_values[below]) * (position - below)


def hierarchical_bootstrap(
    groups: Sequence[Sequence[float]], resamples: int = 2000, level: float = 0.95, seed: int = 0,
    shared_items: bool = True,
) -> tuple[float, float, float]:
    """Mean over seeds of each seed's item mean, and its percentile interval when both the seeds and
    the items are resampled: ``(mean, low, high)``. ``groups``: per seed, the per-item values (0/1
    correctness, or per-item paired differences).

    Each replicate draws the seeds with replacement and the items with replacement. With
    ``shared_items`` (every seed was evaluated on the same items; ``groups[s][i]`` is item ``i`` for
    every ``s``) the item draw is made once per replicate and used for every drawn seed: the seeds
    and the items are crossed, not nested, so an easy item is easy for every seed, and drawing items
    afresh for each seed would average item difficulty out over the seeds and shrink the item part by
    about sqrt(n seeds). This is the two-way ("pigeonhole", Owen 2007) bootstrap of a crossed design;
    it is a little conservative (the seed-by-item interaction counts in both parts). Without
    ``shared_items`` (each seed read its own items) each drawn seed's items are drawn on their own.

    What the interval says: how much the mean would move with other seeds and another sample of
    items of the same kind; the t interval over seeds (:func:`t_interval`) holds the items fixed.
    With few seeds the bootstrap's seed part is too narrow (three seeds give ten distinct draws, and
    there is no t correction), so where seeds, not items, dominate it can be narrower than the t
    interval. Deterministic: the seeds and the items are drawn from two generators fixed by ``seed``,
    so the seed draws do not depend on how many items there are. Pure Python; 5 seeds x 200 items x
    2000 replicates take well under a second.
    """
    if not groups or any(not g for g in groups):
        raise ValueError("hierarchical_bootstrap needs at least one seed, each with at least one item")
    n_items = len(groups[0])
    if shared_items and any(len(g) != n_items for g in groups):
        raise ValueError("with shared_items every seed needs the same items (the same number, in the same order)")
    rows = [[float(v) for v in g] for g in groups]
    n_seeds = len(rows)
    mean = math.fsum(math.fsum(r) / len(r) for r in rows) / n_seeds
    seed_rng, item_rng = random.Random(f"{seed}:seeds"), random.Random(f"{seed}:items")
    seed_range, item_range = range(n_seeds), range(n_items)
    stats = []
    for _ in range(resamples):
        drawn = Counter(seed_rng.choices(seed_range, k=n_seeds))
        if shared_items:
            items = item_rng.choices(item_range, k=n_items)
            total = math.fsum(c * math.fsum(map(rows[s].__getitem__, items)) for s, c in drawn.items()) / n_items
        else:
            total = math.fsum(math.fsum(item_rng.choices(rows[s], k=len(rows[s]))) / len(rows[s])
                              for s in sorted(drawn.elements()))
        stats.append(total / n_seeds)
    stats.sort()
    tail = (1.0 - level) / 2.0
    return mean, percentile(stats, tail), percentile(stats, 1.0 - tail)


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
