"""Paired statistics for quality gates: is a candidate HELM suite worse than a baseline?

Each comparison pairs the per-instance values of one (model × run × metric) in both suites by
instance id. Continuous metrics use a paired percentile bootstrap of the mean difference, 0/1
metrics an exact McNemar test; `adjust_p_values` corrects a suite's p-values for multiple
comparisons (Holm or Benjamini–Hochberg). Pure numpy/scipy: no Dagster, no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Unpack

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

DEFAULT_RESAMPLES = 10_000
"""With this many resamples `paired_bootstrap_many` takes 0.35-0.7 s for 1,000 comparisons × 100
instances on 2 cores (0.17 s with 2,000)."""

DEFAULT_CONFIDENCE = 0.95
"""Confidence level of the intervals unless a caller gives another."""

_CHUNK_VALUES = 1 << 21
"""Bootstrap means held in memory at once by `paired_bootstrap_many` (16 MiB of float64)."""

FloatArray = NDArray[np.float64]
Batch = Sequence[ArrayLike] | NDArray[Any]
"""Many comparisons' values: a 2-D array (comparisons × instances) or a sequence of 1-D arrays."""


class BootstrapOptions(TypedDict, total=False):
    """Keyword options of `paired_bootstrap_many`, also taken by the functions that forward to it."""

    confidence: float
    resamples: int
    seed: int


@dataclass(frozen=True)
class PairedComparison:
    """Result of comparing a candidate with a baseline on the same instances."""

    n: int
    """Number of paired instances."""
    baseline_mean: float
    candidate_mean: float
    difference: float
    """Mean of the per-instance differences candidate - baseline (negative = drop)."""
    ci_low: float
    """Confidence interval of `difference`."""
    ci_high: float
    p_value: float
    """Two-sided p-value for "no difference"."""
    test: str
    """`"paired_bootstrap"` or `"mcnemar_exact"`."""
    discordant: tuple[int, int] | None = None
    """McNemar (b, c): (baseline right & candidate wrong, baseline wrong & candidate right);
    None for the bootstrap."""


def _as_vector(values: ArrayLike, name: str) -> FloatArray:
    """`values` as a finite, non-empty 1-D float array, or a ValueError naming the problem."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got an array of shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty: at least one paired instance is needed")
    if np.isnan(array).any():
        raise ValueError(f"{name} contains NaN at index {int(np.flatnonzero(np.isnan(array))[0])}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains an infinite value")
    return array


def _as_pair(baseline: ArrayLike, candidate: ArrayLike) -> tuple[FloatArray, FloatArray]:
    base = _as_vector(baseline, "baseline")
    cand = _as_vector(candidate, "candidate")
    if base.size != cand.size:
        raise ValueError(
            f"baseline and candidate must have equal lengths (paired by instance), got {base.size} and {cand.size}"
        )
    return base, cand


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def _check_resamples(resamples: int) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")


def is_binary(values: ArrayLike) -> bool:
    """True when every value is 0 or 1 (booleans count; NaN does not; vacuously true if empty)."""
    array = np.asarray(values, dtype=np.float64)
    return bool(np.all((array == 0.0) | (array == 1.0)))


def _resample_counts(n: int, resamples: int, seed: int) -> FloatArray:
    """How often each of `n` instances is drawn in each resample: shape (resamples, n).

    The draws are `np.random.default_rng(seed).integers(0, n, (resamples, n))`, which are the
    draws `scipy.stats.bootstrap(..., paired=True, rng=np.random.default_rng(seed))` makes.
    """
    indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    flat = (indices + np.arange(resamples, dtype=np.int64)[:, None] * n).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def _bootstrap_rows(
    differences: FloatArray, counts: FloatArray, confidence: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """CI bounds and p-values for each row of `differences` (rows × n) given shared resamples."""
    rows, n = differences.shape
    resamples = counts.shape[0]
    alpha = (1.0 - confidence) / 2.0
    low = np.empty(rows)
    high = np.empty(rows)
    p_values = np.empty(rows)
    # A bootstrap mean is a weighted sum of n differences; rounding moves it by at most about
    # n·eps·max|d|, so values that close to 0 count as 0 (on both sides): the p-value then does
    # not depend on the summation order of the matrix product.
    tolerance = 4.0 * n * np.finfo(np.float64).eps * np.abs(differences).max(axis=1)
    step = max(1, _CHUNK_VALUES // resamples)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        means = (differences[start:stop] @ counts.T) / n
        bounds = np.quantile(means, [alpha, 1.0 - alpha], axis=1)
        low[start:stop], high[start:stop] = bounds[0], bounds[1]
        tol = tolerance[start:stop, None]
        at_most_zero = np.count_nonzero(means <= tol, axis=1)
        at_least_zero = np.count_nonzero(means >= -tol, axis=1)
        p_values[start:stop] = np.minimum(1.0, 2.0 * np.minimum(at_most_zero, at_least_zero) / resamples)
    return low, high, p_values


def _as_rows(values: Batch, name: str) -> list[ArrayLike]:
    if isinstance(values, np.ndarray):
        if values.ndim != 2:
            raise ValueError(f"{name} must be 2-D (comparisons × instances), got {values.shape}")
        return list(values)
    return list(values)


def _comparisons(baseline: Batch, candidate: Batch) -> list[tuple[ArrayLike, ArrayLike]]:
    """The (baseline, candidate) rows of a batch, or a ValueError if their numbers differ."""
    base_rows = _as_rows(baseline, "baseline")
    cand_rows = _as_rows(candidate, "candidate")
    if len(base_rows) != len(cand_rows):
        raise ValueError(
            f"baseline and candidate must hold the same number of comparisons, "
            f"got {len(base_rows)} and {len(cand_rows)}"
        )
    return list(zip(base_rows, cand_rows, strict=True))


def _as_pairs(comparisons: Sequence[tuple[ArrayLike, ArrayLike]]) -> list[tuple[FloatArray, FloatArray]]:
    """Each comparison checked by `_as_pair`; a ValueError names the first bad one by index."""
    pairs: list[tuple[FloatArray, FloatArray]] = []
    for index, (base, cand) in enumerate(comparisons):
        try:
            pairs.append(_as_pair(base, cand))
        except ValueError as error:
            raise ValueError(f"comparison {index}: {error}") from None
    return pairs


def paired_bootstrap_many(
    baseline: Batch,
    candidate: Batch,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[PairedComparison]:
    """`paired_bootstrap` for many comparisons at once, one result per comparison, in order.

    `baseline` and `candidate` are 2-D arrays (comparisons × instances) or sequences of 1-D
    arrays whose lengths may vary between comparisons (but not within a pair). Comparisons with
    the same number of instances share one set of resampled indices, drawn from `seed` exactly as
    a single `paired_bootstrap(..., seed=seed)` call draws them, so each result equals that call's
    up to floating-point rounding of the means (~1e-16 relative). The bootstrap means are one
    matrix product per distinct length; the cost grows with the number of distinct lengths.
    """
    _check_confidence(confidence)
    _check_resamples(resamples)
    pairs = _as_pairs(_comparisons(baseline, candidate))

    by_length: dict[int, list[int]] = {}
    for index, (base, _) in enumerate(pairs):
        by_length.setdefault(base.size, []).append(index)

    results: list[PairedComparison | None] = [None] * len(pairs)
    for n, indices in by_length.items():
        differences = np.stack([pairs[i][1] - pairs[i][0] for i in indices])
        low, high, p_values = _bootstrap_rows(differences, _resample_counts(n, resamples, seed), confidence)
        for row, i in enumerate(indices):
            base, cand = pairs[i]
            results[i] = PairedComparison(
                n=n,
                baseline_mean=float(np.mean(base)),
                candidate_mean=float(np.mean(cand)),
                difference=float(np.mean(differences[row])),
                ci_low=float(low[row]),
                ci_high=float(high[row]),
                p_value=float(p_values[row]),
                test="paired_bootstrap",
            )
    return [result for result in results if result is not None]


def paired_bootstrap(
    baseline: ArrayLike, candidate: ArrayLike, **options: Unpack[BootstrapOptions]
) -> PairedComparison:
    """Paired percentile bootstrap of mean(candidate - baseline); `options` as for `paired_bootstrap_many`.

    Instances are resampled with replacement (`np.random.default_rng(seed)`, the same draws as
    `scipy.stats.bootstrap(paired=True, rng=np.random.default_rng(seed))`). The CI is the
    (1-confidence)/2 and (1+confidence)/2 quantiles (linear interpolation) of the bootstrap means.
    The p-value is the percentile-bootstrap two-sided p for H0 "difference = 0":
    p = min(1, 2·min(#{boot ≤ 0}, #{boot ≥ 0}) / resamples), so p < 1 - confidence exactly when
    0 lies outside the percentile CI (up to interpolation). It moves in steps of 2/resamples and is
    0 when no resample reaches 0 (true p below about 1/resamples). All differences 0 gives p = 1
    and CI [0, 0]. With very few instances (n < ~10) the percentile bootstrap is unreliable.
    """
    _as_pair(baseline, candidate)
    return paired_bootstrap_many([baseline], [candidate], **options)[0]


@functools.cache
def _two_sided_z(confidence: float) -> float:
    """The standard normal quantile at 1/2 + confidence/2 (computed once per confidence)."""
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def _agresti_min_interval(b: int, c: int, n: int, confidence: float) -> tuple[float, float]:
    """Agresti–Min (2005) CI of the paired difference in proportions (c - b)/n.

    Wald interval after adding 1/2 to each of the four cells of the 2×2 table: centre
    (c - b)/(n + 2), standard error sqrt((b + c + 1) - (c - b)²/(n + 2)) / (n + 2); clipped to
    [-1, 1].
    """
    z = _two_sided_z(confidence)
    centre = (c - b) / (n + 2)
    half_width = z * np.sqrt((b + c + 1) - (c - b) ** 2 / (n + 2)) / (n + 2)
    return max(-1.0, centre - half_width), min(1.0, centre + half_width)


def mcnemar_exact(
    baseline: ArrayLike, candidate: ArrayLike, *, confidence: float = DEFAULT_CONFIDENCE
) -> PairedComparison:
    """Exact McNemar test for paired 0/1 outcomes (1 = right).

    b = #(baseline 1, candidate 0), c = #(baseline 0, candidate 1); the p-value is the two-sided
    exact binomial test of b out of b + c with probability 1/2, i.e. min(1, 2·P(X ≤ min(b, c)))
    for X ~ Binomial(b + c, 1/2), and 1 when b + c = 0. The CI of the difference in proportions
    is the Agresti–Min interval (Wald after adding 1/2 to each cell; Stat. Med. 24:729, 2005),
    which, unlike the plain Wald interval, does not collapse to a point when b or c is 0. It is
    descriptive: significance comes from the exact p-value, which the CI need not agree with.
    """
    _check_confidence(confidence)
    base, cand = _as_pair(baseline, candidate)
    for name, values in (("baseline", base), ("candidate", cand)):
        if not is_binary(values):
            raise ValueError(f"{name} must contain only 0 and 1 for the McNemar test")
    b, c = _discordant(base, cand)
    return _mcnemar_result(base, cand, b, c, float(_mcnemar_p_values(np.array([b]), np.array([c]))[0]), confidence)


def _discordant(base: FloatArray, cand: FloatArray) -> tuple[int, int]:
    return int(np.count_nonzero((base == 1.0) & (cand == 0.0))), int(np.count_nonzero((base == 0.0) & (cand == 1.0)))


def _mcnemar_p_values(b: NDArray[Any], c: NDArray[Any]) -> FloatArray:
    """Exact two-sided McNemar p-values for many (b, c) at once (one scipy call)."""
    # binom.cdf(0, 0, 1/2) = 1, so b + c = 0 gives p = 1.
    p_values: FloatArray = np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(b, c), b + c, 0.5))
    return p_values


def _mcnemar_result(
    base: FloatArray, cand: FloatArray, b: int, c: int, p_value: float, confidence: float
) -> PairedComparison:
    low, high = _agresti_min_interval(b, c, base.size, confidence)
    return PairedComparison(
        n=base.size,
        baseline_mean=float(np.mean(base)),
        candidate_mean=float(np.mean(cand)),
        difference=float(np.mean(cand - base)),
        ci_low=low,
        ci_high=high,
        p_value=p_value,
        test="mcnemar_exact",
        discordant=(b, c),
    )


def compare_paired(baseline: ArrayLike, candidate: ArrayLike, **options: Unpack[BootstrapOptions]) -> PairedComparison:
    """`mcnemar_exact` when both sides are 0/1, else `paired_bootstrap`; `options` as for `paired_bootstrap_many`."""
    base, cand = _as_pair(baseline, candidate)
    if is_binary(base) and is_binary(cand):
        return mcnemar_exact(base, cand, confidence=options.get("confidence", DEFAULT_CONFIDENCE))
    return paired_bootstrap(base, cand, **options)


def compare_paired_many(
    baseline: Batch, candidate: Batch, **options: Unpack[BootstrapOptions]
) -> list[PairedComparison]:
    """`compare_paired` for each comparison, with the bootstrap ones batched as in
    `paired_bootstrap_many` (inputs and `options` as there); results in input order."""
    confidence = options.get("confidence", DEFAULT_CONFIDENCE)
    comparisons = _comparisons(baseline, candidate)
    _check_confidence(confidence)
    pairs = _as_pairs(comparisons)
    results: list[PairedComparison | None] = [None] * len(pairs)
    continuous: list[int] = []
    binary: list[tuple[int, int, int]] = []
    for index, (base, cand) in enumerate(pairs):
        if is_binary(base) and is_binary(cand):
            binary.append((index, *_discordant(base, cand)))
        else:
            continuous.append(index)
    if binary:
        indices, b, c = (np.array(column) for column in zip(*binary, strict=True))
        for index, b_i, c_i, p_value in zip(indices, b, c, _mcnemar_p_values(b, c), strict=True):
            base, cand = pairs[index]
            results[index] = _mcnemar_result(base, cand, int(b_i), int(c_i), float(p_value), confidence)
    boot = paired_bootstrap_many([pairs[i][0] for i in continuous], [pairs[i][1] for i in continuous], **options)
    for index, result in zip(continuous, boot, strict=True):
        results[index] = result
    return [result for result in results if result is not None]


def adjust_p_values(p_values: ArrayLike, method: Literal["holm", "bh"]) -> FloatArray:
    """Multiplicity-adjusted p-values, in input order, capped at 1.

    `"holm"`: Holm step-down (family-wise error rate), sorted ascending p₍ᵢ₎ (i = 1..m) become
    max_{j ≤ i} min(1, (m - j + 1)·p₍ⱼ₎). `"bh"`: Benjamini–Hochberg (false discovery rate),
    min_{j ≥ i} min(1, m/j·p₍ⱼ₎). Reject where the adjusted p-value ≤ alpha. Empty in, empty out.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got an array of shape {p.shape}")
    if np.isnan(p).any():
        raise ValueError("p_values contains NaN")
    if ((p < 0.0) | (p > 1.0)).any():
        raise ValueError("p_values must lie in [0, 1]")
    m = p.size
    if m == 0:
        return np.empty(0, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    rank = np.arange(1, m + 1, dtype=np.float64)
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - rank + 1.0) * ranked))
    elif method == "bh":
        adjusted = np.minimum.accumulate(np.minimum(1.0, m / rank * ranked)[::-1])[::-1]
    else:
        raise ValueError(f"method must be 'holm' or 'bh', got {method!r}")
    result = np.empty(m, dtype=np.float64)
    result[order] = adjusted
    return result
