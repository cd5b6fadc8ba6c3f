"""Is a candidate's drop against a baseline within a tolerance? Two one-sided tests on paired
instances, and the sample size that would decide.

For paired instances the drop of instance i is d_i = baseline_i - candidate_i (for a metric where
higher is better; the sign flips otherwise), and the drop is D = mean(d). With tolerance δ:

- `p_exceeds` tests H0: D ≤ δ against H1: D > δ (a regression beyond tolerance);
- `p_within` tests H0: D ≥ δ against H1: D < δ (non-inferiority: the drop is within tolerance).

A gate passes when `p_within` < alpha, fails when `p_exceeds` (corrected for the suite's
comparisons) < alpha, and is inconclusive otherwise. The two tests:

- paired 0/1 outcomes (one trial per instance): Tango's score test for the difference of paired
  proportions (Tango, Stat. Med. 17:891–908, 1998; Nam, Biometrics 53:1422, 1997), whose
  variance uses the maximum-likelihood discordance under H0, so zero discordant pairs are handled;
- anything else (continuous metrics; 0/1 metrics averaged over train trials per instance): the
  paired one-sample t-test of d_i - δ (Student, with n - 1 degrees of freedom).

Pure numpy/scipy: no Dagster, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, stats

Test = Literal["tango_score", "paired_t"]
MAX_INSTANCES = 10_000_000
"""Needed sample sizes above this are reported as unreachable (None)."""


@dataclass(frozen=True)
class MarginTest:
    """One paired comparison of a drop against a tolerance."""

    test: Test
    n: int
    """Paired instances."""
    baseline_mean: float
    candidate_mean: float
    drop: float
    """Mean per-instance drop (positive = the candidate is worse)."""
    lower: float
    """One-sided lower confidence bound of the drop at the level used (1 - alpha)."""
    upper: float
    """One-sided upper confidence bound of the drop at the level used (1 - alpha)."""
    p_exceeds: float
    """p-value of H1: drop > tolerance."""
    p_within: float
    """p-value of H1: drop < tolerance."""
    spread: float
    """The per-instance spread the sample size is computed from: the standard deviation of d
    (paired t), or the discordant share b/n + c/n (Tango)."""


def _vector(values: ArrayLike, name: str) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains a non-finite value")
    return array


def _paired_drops(
    baseline: ArrayLike, candidate: ArrayLike, higher_is_better: bool
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    base, cand = _vector(baseline, "baseline"), _vector(candidate, "candidate")
    if base.size != cand.size:
        raise ValueError(f"baseline and candidate must pair instance by instance: {base.size} and {cand.size} values")
    return base, cand, (base - cand) if higher_is_better else (cand - base)


def tango_restricted_discordance(b: float, c: float, n: float, delta: float) -> float:
    """The maximum-likelihood P(baseline wrong, candidate right) under H0: drop = delta, where the
    drop is P(baseline right, candidate wrong) - P(baseline wrong, candidate right): the root of
    2n·q² + (-(b + c) + (2n - b + c)·delta)·q - c·delta·(1 - delta) = 0 (Tango 1998, eq. 4).
    Counts may be shares (n = 1)."""
    a2 = 2.0 * n
    b2 = -b - c + (2.0 * n - b + c) * delta
    c2 = -c * delta * (1.0 - delta)
    return float((-b2 + math.sqrt(max(0.0, b2 * b2 - 4.0 * a2 * c2))) / (2.0 * a2))


def tango_statistic(b: int, c: int, n: int, delta: float) -> float:
    """Tango's score statistic for H0: drop = delta, with b = #(baseline right, candidate wrong)
    and c = #(baseline wrong, candidate right) among n pairs; NaN when its variance is 0."""
    q = tango_restricted_discordance(b, c, n, delta)
    variance = n * (2.0 * q + delta * (1.0 - delta))
    return (b - c - n * delta) / math.sqrt(variance) if variance > 0 else math.nan


def _tango_bound(b: int, c: int, n: int, z: float) -> float:
    """The drop at which Tango's statistic equals z (it decreases in the drop): a confidence
    bound found by inverting the test; clipped to [-1, 1]."""

    def excess(delta: float) -> float:
        statistic = tango_statistic(b, c, n, delta)
        return (0.0 if math.isnan(statistic) else statistic) - z

    low, high = -1.0 + 1e-12, 1.0 - 1e-12
    if excess(low) <= 0:
        return -1.0
    if excess(high) >= 0:
        return 1.0
    return float(optimize.brentq(excess, low, high, xtol=1e-12))


def tango_test(
    baseline: ArrayLike, candidate: ArrayLike, tolerance: float, alpha: float, higher_is_better: bool = True
) -> MarginTest:
    """Tango's score tests of the drop in paired 0/1 outcomes against `tolerance`."""
    base, cand, drops = _paired_drops(baseline, candidate, higher_is_better)
    n = base.size
    worse, better = int(np.count_nonzero(drops > 0)), int(np.count_nonzero(drops < 0))
    statistic = tango_statistic(worse, better, n, tolerance)
    z = float(stats.norm.ppf(1.0 - alpha))
    return MarginTest(
        test="tango_score",
        n=n,
        baseline_mean=float(base.mean()),
        candidate_mean=float(cand.mean()),
        drop=(worse - better) / n,
        lower=_tango_bound(worse, better, n, z),
        upper=_tango_bound(worse, better, n, -z),
        p_exceeds=1.0 if math.isnan(statistic) else float(stats.norm.sf(statistic)),
        p_within=1.0 if math.isnan(statistic) else float(stats.norm.cdf(statistic)),
        spread=(worse + better) / n,
    )


def paired_t_test(
    baseline: ArrayLike, candidate: ArrayLike, tolerance: float, alpha: float, higher_is_better: bool = True
) -> MarginTest:
    """One-sided paired t-tests of the mean drop against `tolerance`. With no variation in the
    drops (all equal) there is no evidence either way: both p-values are 1 and the bounds are
    infinite."""
    base, cand, drops = _paired_drops(baseline, candidate, higher_is_better)
    n = drops.size
    mean = float(drops.mean())
    sd = float(drops.std(ddof=1)) if n > 1 else 0.0
    if sd == 0.0 or n < 2:
        lower, upper, p_exceeds, p_within = -math.inf, math.inf, 1.0, 1.0
    else:
        se = sd / math.sqrt(n)
        t = (mean - tolerance) / se
        quantile = float(stats.t.ppf(1.0 - alpha, n - 1))
        lower, upper = mean - quantile * se, mean + quantile * se
        p_exceeds, p_within = float(stats.t.sf(t, n - 1)), float(stats.t.cdf(t, n - 1))
    return MarginTest(
        test="paired_t",
        n=n,
        baseline_mean=float(base.mean()),
        candidate_mean=float(cand.mean()),
        drop=mean,
        lower=lower,
        upper=upper,
        p_exceeds=p_exceeds,
        p_within=p_within,
        spread=sd,
    )


def margin_test(
    baseline: ArrayLike,
    candidate: ArrayLike,
    tolerance: float,
    alpha: float,
    higher_is_better: bool = True,
    binary: bool | None = None,
) -> MarginTest:
    """Tango's test for paired 0/1 outcomes, else the paired t-test. `binary` None: decided from
    the values (every value 0 or 1 on both sides)."""
    if binary is None:
        values = np.concatenate([np.asarray(baseline, dtype=np.float64), np.asarray(candidate, dtype=np.float64)])
        binary = bool(np.all((values == 0.0) | (values == 1.0)))
    test = tango_test if binary else paired_t_test
    return test(baseline, candidate, tolerance, alpha, higher_is_better)


def t_test_power(n: int, effect: float, alpha: float) -> float:
    """Power of the one-sided one-sample t-test at level alpha with n observations, when the true
    mean exceeds the null by `effect` standard deviations (noncentral t)."""
    if n < 2:
        return 0.0
    critical = stats.t.ppf(1.0 - alpha, n - 1)
    return float(stats.nct.sf(critical, n - 1, effect * math.sqrt(n)))


def instances_to_decide(result: MarginTest, tolerance: float, alpha: float, power: float) -> int | None:
    """Paired instances the same test needs to decide (pass or fail) with probability `power` if
    the true drop is the observed one; None when that cannot be computed (the observed drop sits
    on the tolerance, or a paired t-test's drops show no variation) or exceeds MAX_INSTANCES.

    Paired t: the smallest n whose noncentral-t power reaches `power` (the quantity
    statsmodels' `TTestPower.solve_power` computes). Tango: the normal approximation
    n = (z₁₋ₐ·√V₀ + z_power·√V₁)² / (δ - D)², with V₁ = b/n + c/n - D² (the observed variance
    of d) and V₀ = 2q + δ(1 - δ) from the restricted discordance q under H0 (Nam 1997)."""
    gap = abs(tolerance - result.drop)
    if gap == 0.0 or (result.test == "paired_t" and result.spread == 0.0):
        return None
    if result.test == "paired_t":
        effect = gap / result.spread
        if t_test_power(MAX_INSTANCES, effect, alpha) < power:
            return None
        low, high = 2, MAX_INSTANCES
        while low < high:  # power grows with n: the smallest n that reaches it
            middle = (low + high) // 2
            if t_test_power(middle, effect, alpha) >= power:
                high = middle
            else:
                low = middle + 1
        return low
    discordant = result.spread
    worse_share = (discordant + result.drop) / 2.0
    better_share = discordant - worse_share
    q = tango_restricted_discordance(worse_share, better_share, 1.0, tolerance)
    v0 = 2.0 * q + tolerance * (1.0 - tolerance)
    v1 = discordant - result.drop**2
    needed = (stats.norm.ppf(1.0 - alpha) * math.sqrt(v0) + stats.norm.ppf(power) * math.sqrt(max(v1, 0.0))) ** 2
    n = math.ceil(needed / gap**2)
    return n if n <= MAX_INSTANCES else None
