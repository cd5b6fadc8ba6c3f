"""Change points in metric time series: self-starting CUSUM, tabular CUSUM, Page–Hinkley, EWMA chart.

The default, `self_starting_cusum`, is the calibrated one: Hawkins' self-starting standard scores
(each value standardised by the mean and spread of the values before it, made exactly N(0, 1) for
normal in-control data) fed to a two-sided CUSUM whose decision interval gives the in-control
average run length the policy names (`cusum_decision_interval`, Siegmund's approximation, checked
by simulation in the tests). It needs no warm-up, and a lasting shift is reported once: after an
alarm it starts afresh, the new level becoming its baseline. The others below flag against a
baseline estimated from a short warm-up, which makes their false-alarm rate depend on it.

The `monitoring/trends` asset charts headline HELM metrics across evaluation suites and production
KPIs (mean latency, refusal rate…) across days, and flags where a series leaves its level. Pure
numpy/scipy, and matplotlib without pyplot for `plot_trend`: no Dagster, no I/O.

Baseline (CUSUM and EWMA): the in-control mean μ0 and standard deviation σ are `target` and `sigma`
when given; otherwise the mean and the sample standard deviation (``ddof=1``, no c4 correction) of
the first `warmup` observed values (default 20: Montgomery's 20–25 preliminary samples). With
`target` given and `sigma` not, σ is still the warm-up's standard deviation about its own mean. An
estimated σ is raised to at least ``max(1e-9·|μ0|, 1e-12)``: a constant warm-up then gives a
positive σ, a constant series never flags (its deviations are 0, or float rounding far below the
floor) and any later change of its level flags at once. The warm-up values are charted like the
others: the baseline only sets μ0 and σ.

Tabular CUSUM (Montgomery, *Introduction to Statistical Quality Control*, §9.1), with K = kσ and
H = hσ (k and h in units of σ)::

    C⁺ᵢ = max(0, xᵢ − (μ0 + K) + C⁺ᵢ₋₁)      C⁻ᵢ = max(0, (μ0 − K) − xᵢ + C⁻ᵢ₋₁)      C⁺₀ = C⁻₀ = 0

Point i is an alarm when C⁺ᵢ > H or C⁻ᵢ > H; both sums then restart at 0 for point i + 1 (as after
an assignable cause is removed), so a shift that persists fires again every few points. Each
stretch between restarts is computed at once with the Lindley identity Cᵢ = Sᵢ − min(0, min_{j≤i} Sⱼ)
over the partial sums S of the increments.

Page–Hinkley, as river's `river.drift.PageHinkley` (two-sided version with `mode`, source
`river/drift/page_hinkley.py`; parameters ``delta``, ``threshold``, ``alpha``, ``min_instances``,
``direction`` = river's ``mode``). Over the values since the last reset, x̄_T their running mean::

    m_T = α·m_{T−1} + (x_T − x̄_T − δ)      M_T = α·M_{T−1} + (x_T − x̄_T + δ)      m₀ = M₀ = 0

An increase fires when m_T − min_{t≤T} m_t > λ, a decrease when max_{t≤T} M_t − M_T > λ (river
starts the maximum at −1, which changes nothing: M₁ = δ ≥ 0), only once T ≥ `min_instances`. After
an alarm everything resets (mean, sums, extremes and the count) and the next value starts afresh.
δ and λ are in the data's units, unlike k and h. The default α = 1 is the classical test (river's
default is 0.9999). scikit-multiflow's `PageHinkley` is the one-sided increase test with the sum
clamped at 0 (for α = 1 the same as m_T − min(0, min m)) and fires at ≥ λ.

EWMA control chart (Montgomery §9.2)::

    zᵢ = λ·xᵢ + (1 − λ)·zᵢ₋₁,  z₀ = μ0       limits μ0 ± L·σ·√(λ/(2−λ)·(1 − (1−λ)^{2i}))

with the exact, time-varying limits. Every point whose zᵢ lies outside them is flagged; the chart
does not restart.

Result: one `ChangeDetection` per series, its arrays one entry per input value, and one rule for
all methods: a point is flagged when ``statistic > upper_limit`` or ``lower_statistic < lower_limit``.
For CUSUM and Page–Hinkley `statistic` is the increase statistic (C⁺, or m_T − min m) and
`lower_statistic` the decrease statistic negated (−C⁻, or −(max M − M_T)), as Montgomery's CUSUM
status chart draws C⁻ below the axis, with limits +H and −H (+λ and −λ). A side Page–Hinkley does
not test (``direction="up"`` or ``"down"``) has the limit +∞ or −∞. For EWMA both statistics are z,
between its lower and upper control limits. A change point is the first flagged point of each run
of consecutive flagged points (missing values do not break a run): for CUSUM and Page–Hinkley,
which restart, a run is one alarm unless the next points fire again straight away.

Missing values: NaN and ±inf are skipped. They keep their index; there the statistic and the limits
are NaN and the point is not flagged. The detectors run on the observed values only (the EWMA's i
counts observed values), and `warmup` and `min_instances` count observed values. A series with too
few observed values to estimate its baseline (or to reach `min_instances`) is not tested: nothing
is flagged, statistics and limits are NaN and `detail` says why. Invalid parameters raise ValueError naming the parameter.
"""

from __future__ import annotations

import inspect
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias, get_args

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray
from scipy import optimize, signal, stats

Method = Literal["self_starting_cusum", "cusum", "page_hinkley", "ewma"]
Direction = Literal["up", "down", "both"]
Data: TypeAlias = "NDArray[Any] | pd.Series[Any] | Sequence[float | None]"
"""A series: a 1-D numpy array, a pandas Series or a sequence of numbers (None for missing)."""
FloatArray: TypeAlias = "NDArray[np.float64]"
BoolArray: TypeAlias = "NDArray[np.bool_]"

METHODS: tuple[Method, ...] = get_args(Method)
DIRECTIONS: tuple[Direction, ...] = get_args(Direction)

DEFAULT_WARMUP = 20
"""Observed values that estimate μ0 and σ unless both are given."""
BASELINE_DDOF = 1
"""Delta degrees of freedom of the estimated σ (the sample standard deviation)."""
SIGMA_FLOOR_RELATIVE = 1e-9
"""An estimated σ is at least this times |μ0| …"""
SIGMA_FLOOR_ABSOLUTE = 1e-12
"""… and at least this."""
_FIRST_WINDOW = 64
"""Values first searched for the next alarm of a restarting detector (see `_restarting`)."""
SIEGMUND_CORRECTION = 1.166
"""Siegmund's correction of the decision interval for the overshoot of a normal random walk."""
MAX_STANDARD_SCORE = 37.0
"""|U| of the self-starting CUSUM is capped here (Φ⁻¹ of the smallest normal double tail)."""
MAX_TICK_LABELS = 25
"""`plot_trend` labels every n-th point so that at most this many labels show."""


@dataclass(frozen=True, eq=False)
class ChangeDetection:
    """A detector's run over one series; arrays have one read-only entry per input value."""

    method: Method
    values: FloatArray
    """The input, as floats (missing values as given: NaN or ±inf)."""
    statistic: FloatArray
    """EWMA: z. CUSUM: C⁺. Page–Hinkley: the increase test m_T − min m. NaN where not computed."""
    lower_statistic: FloatArray
    """CUSUM: −C⁻. Page–Hinkley: −(max M − M_T). EWMA: z again (one statistic, two limits)."""
    upper_limit: FloatArray
    """EWMA: upper control limit; CUSUM: H = hσ; Page–Hinkley: λ, or +∞ if increases are not tested."""
    lower_limit: FloatArray
    """EWMA: lower control limit; CUSUM: −H; Page–Hinkley: −λ, or −∞ if decreases are not tested."""
    flagged: BoolArray
    """Out of control (EWMA) or alarm (CUSUM, Page–Hinkley)."""
    change_points: list[int]
    """Index of the first flagged point of each run of flagged points."""
    baseline_mean: float
    """μ0; NaN for Page–Hinkley (it compares with a running mean) or when too few values estimate it."""
    baseline_std: float
    """σ as used (after the floor); NaN for Page–Hinkley or when too few values estimate it."""
    detail: str
    """What was computed and found, e.g. ``"… around μ0=10, σ=1 (given): change point at index 28"``."""


# --- input ---------------------------------------------------------------------------------------


def _series(values: Data) -> FloatArray:
    """`values` as a new read-only float array (None and pd.NA become NaN)."""
    if isinstance(values, pd.Series):
        array = values.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    else:
        array = np.array(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {array.shape}")
    array.setflags(write=False)
    return array


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _positive(name: str, value: object) -> float:
    number = _number(name, value)
    if number <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def _non_negative(name: str, value: object) -> float:
    number = _number(name, value)
    if number < 0:
        raise ValueError(f"{name} must be ≥ 0, got {value!r}")
    return number


def _fraction(name: str, value: object) -> float:
    """A number in (0, 1]."""
    number = _positive(name, value)
    if number > 1:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return number


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


# --- shared steps --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Baseline:
    mean: float
    std: float
    source: str
    """How μ0 and σ were obtained, for `detail`."""


def _baseline(observed: FloatArray, warmup: int, target: float | None, sigma: float | None) -> _Baseline | None:
    """μ0 and σ: given, or estimated from the first `warmup` observed values; None if too few."""
    if target is not None and sigma is not None:
        return _Baseline(target, sigma, "given")
    if observed.size < warmup:
        return None
    reference = observed[:warmup]
    mean = float(np.mean(reference)) if target is None else target
    if sigma is not None:
        return _Baseline(mean, sigma, f"μ0 from the first {warmup} values, σ given")
    estimate = float(np.std(reference, ddof=BASELINE_DDOF))
    floor = max(SIGMA_FLOOR_RELATIVE * abs(mean), SIGMA_FLOOR_ABSOLUTE)
    source = f"σ from the first {warmup} values" if target is not None else f"from the first {warmup} values"
    if estimate < floor:
        return _Baseline(mean, floor, f"{source}; their σ {estimate:.3g} raised to the floor {floor:.3g}")
    return _Baseline(mean, estimate, source)


def _restarting(
    observed: FloatArray, segment: Callable[[FloatArray], tuple[FloatArray, FloatArray, BoolArray]]
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Run a detector that restarts after each alarm: `segment` gives the upper and lower statistics
    and the alarms of a stretch of values as if it started afresh; the stretch ends at its first alarm.

    `segment` must be causal (its output up to t depends on its input up to t only), so a stretch is
    searched in windows that double until one holds an alarm or the end: O(size) work in all.
    """
    size = observed.size
    upper, lower, alarms = np.empty(size), np.empty(size), np.zeros(size, dtype=bool)
    start, window = 0, _FIRST_WINDOW
    while start < size:
        stop = min(size, start + window)
        segment_upper, segment_lower, fired = segment(observed[start:stop])
        hits = np.flatnonzero(fired)
        if not hits.size and stop < size:
            window *= 2
            continue
        length = int(hits[0]) + 1 if hits.size else stop - start
        upper[start : start + length] = segment_upper[:length]
        lower[start : start + length] = segment_lower[:length]
        alarms[start + length - 1] = bool(hits.size)
        start, window = start + length, _FIRST_WINDOW
    return upper, lower, alarms


def _scatter(observed_at: NDArray[np.intp], size: int, values: FloatArray) -> FloatArray:
    """`values` of the observed points put back at their indices, NaN elsewhere; read-only."""
    full = np.full(size, np.nan)
    full[observed_at] = values
    full.setflags(write=False)
    return full


def _change_points(observed_at: NDArray[np.intp], flagged: BoolArray) -> list[int]:
    """Index of the first flagged point of each run among the observed points."""
    starts = flagged.copy()
    starts[1:] &= ~flagged[:-1]
    return [int(i) for i in observed_at[starts]]


def _summary(change_points: list[int], flagged_count: int) -> str:
    if not change_points:
        return "no change point"
    noun = "change point at index" if len(change_points) == 1 else "change points at indices"
    where = change_points[0] if len(change_points) == 1 else change_points
    return f"{noun} {where} ({flagged_count} point{'s' if flagged_count != 1 else ''} flagged)"


def _missing_note(size: int, observed: int) -> str:
    missing = size - observed
    return f"; {missing} missing value{'s' if missing != 1 else ''} skipped" if missing else ""


def _result(
    method: Method,
    values: FloatArray,
    observed_at: NDArray[np.intp],
    statistic: FloatArray,
    lower_statistic: FloatArray,
    upper_limit: FloatArray,
    lower_limit: FloatArray,
    flagged: BoolArray,
    baseline: _Baseline | None,
    head: str,
) -> ChangeDetection:
    """Put the observed points' arrays back on the full index and describe the outcome."""
    size = values.size
    full_flagged = np.zeros(size, dtype=bool)
    full_flagged[observed_at] = flagged
    full_flagged.setflags(write=False)
    change_points = _change_points(observed_at, flagged)
    return ChangeDetection(
        method=method,
        values=values,
        statistic=_scatter(observed_at, size, statistic),
        lower_statistic=_scatter(observed_at, size, lower_statistic),
        upper_limit=_scatter(observed_at, size, upper_limit),
        lower_limit=_scatter(observed_at, size, lower_limit),
        flagged=full_flagged,
        change_points=change_points,
        baseline_mean=math.nan if baseline is None else baseline.mean,
        baseline_std=math.nan if baseline is None else baseline.std,
        detail=f"{head}: {_summary(change_points, int(flagged.sum()))}{_missing_note(size, observed_at.size)}",
    )


def _not_tested(
    method: Method, values: FloatArray, observed: int, needed: int, head: str, target: float | None = None
) -> ChangeDetection:
    """The result for a series with fewer observed values than a detector needs."""
    nothing = np.full(values.size, np.nan)
    nothing.setflags(write=False)
    flagged = np.zeros(values.size, dtype=bool)
    flagged.setflags(write=False)
    return ChangeDetection(
        method=method,
        values=values,
        statistic=nothing,
        lower_statistic=nothing,
        upper_limit=nothing,
        lower_limit=nothing,
        flagged=flagged,
        change_points=[],
        baseline_mean=math.nan if target is None else target,
        baseline_std=math.nan,
        detail=f"{head}: not tested, {observed} observed value{'s' if observed != 1 else ''}, fewer than the {needed} needed",
    )


def _observed(values: Data) -> tuple[FloatArray, NDArray[np.intp], FloatArray]:
    """The series as floats, the positions of its finite values, and those values."""
    series = _series(values)
    observed_at = np.flatnonzero(np.isfinite(series))
    return series, observed_at, series[observed_at]


def standardised(values: Data, warmup: int) -> FloatArray:
    """The series in units of its warm-up: minus the mean of the finite values among its first
    `warmup` points, divided by their standard deviation (ddof=1; by 1 when that is 0 or there
    are fewer than two). Lets one Page–Hinkley δ and λ, given in σ, serve series of any scale."""
    series = _series(values)
    warm = series[:warmup][np.isfinite(series[:warmup])]
    spread = float(warm.std(ddof=BASELINE_DDOF)) if warm.size > 1 else 0.0
    centred = series - (float(warm.mean()) if warm.size else 0.0)
    scaled: FloatArray = centred / (spread if spread > 0 else 1.0)
    return scaled


def _baseline_options(warmup: int, target: float | None, sigma: float | None) -> tuple[int, float | None, float | None]:
    """`warmup`, `target` and `sigma` validated (CUSUM and EWMA estimate μ0 and σ the same way)."""
    return (
        _count("warmup", warmup, 2),
        None if target is None else _number("target", target),
        None if sigma is None else _positive("sigma", sigma),
    )


# --- detectors -----------------------------------------------------------------------------------


def cusum(
    values: Data,
    *,
    k: float = 0.5,
    h: float = 5.0,
    warmup: int = DEFAULT_WARMUP,
    target: float | None = None,
    sigma: float | None = None,
) -> ChangeDetection:
    """Two-sided tabular CUSUM with reference value kσ and decision interval hσ, restarting after each alarm."""
    k, h = _non_negative("k", k), _positive("h", h)
    warmup, target, sigma = _baseline_options(warmup, target, sigma)
    series, observed_at, observed = _observed(values)
    head = f"tabular CUSUM k={k:g} h={h:g}"
    baseline = _baseline(observed, warmup, target, sigma)
    if baseline is None:
        return _not_tested("cusum", series, observed.size, warmup, head, target)

    above, below = baseline.mean + k * baseline.std, baseline.mean - k * baseline.std
    decision = h * baseline.std

    def segment(stretch: FloatArray) -> tuple[FloatArray, FloatArray, BoolArray]:
        upper_sums, lower_sums = np.cumsum(stretch - above), np.cumsum(below - stretch)
        upper = upper_sums - np.minimum(np.minimum.accumulate(upper_sums), 0.0)
        lower = lower_sums - np.minimum(np.minimum.accumulate(lower_sums), 0.0)
        return upper, lower, (upper > decision) | (lower > decision)

    upper, lower, alarms = _restarting(observed, segment)
    limit = np.full(observed.size, decision)
    return _result(
        "cusum",
        series,
        observed_at,
        upper,
        -lower,
        limit,
        -limit,
        alarms,
        baseline,
        f"{head} around μ0={baseline.mean:.6g}, σ={baseline.std:.6g} ({baseline.source})",
    )


def cusum_decision_interval(k: float, arl0: float) -> float:
    """The decision interval h (in σ) of a two-sided CUSUM with reference value k whose in-control
    average run length is `arl0`, by Siegmund's approximation: each side's run length is
    (e^{2kb} − 2kb − 1)/(2k²) with b = h + 1.166 (for k = 0 the limit b²), and the two sides
    together 1/(1/ARL⁺ + 1/ARL⁻), so each side needs 2·`arl0`. k = 0.5, arl0 = 370 gives h ≈ 4.77,
    the textbook pair."""
    k, arl0 = _non_negative("k", k), _positive("arl0", arl0)
    if arl0 <= 1:
        raise ValueError(f"arl0 must be > 1, got {arl0!r}")

    def one_side(h: float) -> float:
        b = h + SIEGMUND_CORRECTION
        return b * b if k == 0 else (math.expm1(2 * k * b) - 2 * k * b) / (2 * k * k)

    if one_side(0.0) >= 2 * arl0:
        raise ValueError(f"arl0 {arl0:g} is too short for k={k:g}: even h = 0 runs longer")
    high = 1.0
    while one_side(high) < 2 * arl0:
        high *= 2
    return float(optimize.brentq(lambda h: one_side(h) - 2 * arl0, 0.0, high))


def self_starting_scores(values: Data) -> FloatArray:
    """Hawkins' (1987) self-starting standard scores of a series: U₁ = U₂ = NaN and, for i ≥ 3,

        Tᵢ = (xᵢ − x̄ᵢ₋₁) / sᵢ₋₁ · √((i−1)/i)      Uᵢ = Φ⁻¹(F_{t, i−2}(Tᵢ))

    with x̄ᵢ₋₁, sᵢ₋₁ the mean and sample standard deviation (ddof=1) of the values before i. For
    independent normal values of any mean and spread, U₃, U₄ … are independent N(0, 1). A spread
    of 0 so far is raised to `SIGMA_FLOOR_*`: a constant series scores 0, a step after it far out
    (an alarm at once); |U| is capped at 37."""
    x = _series(values)
    if not np.isfinite(x).all():
        raise ValueError("self_starting_scores needs finite values (drop the missing ones first)")
    n = x.size
    scores = np.full(n, np.nan)
    if n < 3:
        return scores
    i = np.arange(3, n + 1)  # 1-based index of the scored value
    before = i - 1
    centre = x[0]  # sums about the first value keep the variance exact for large levels
    sums = np.cumsum(x - centre)
    squares = np.cumsum((x - centre) ** 2)
    mean = sums[before - 1] / before + centre
    variance = np.maximum((squares[before - 1] - sums[before - 1] ** 2 / before) / (before - 1), 0.0)
    floor = np.maximum(SIGMA_FLOOR_RELATIVE * np.abs(mean), SIGMA_FLOOR_ABSOLUTE)
    spread = np.maximum(np.sqrt(variance), floor)
    t = (x[2:] - mean) / spread * np.sqrt(before / i)
    t = np.where(np.abs(x[2:] - mean) <= floor, 0.0, t)
    df = i - 2
    upper = stats.norm.isf(stats.t.sf(np.abs(t), df))  # from the tail: exact far from the centre
    scores[2:] = np.clip(np.sign(t) * upper, -MAX_STANDARD_SCORE, MAX_STANDARD_SCORE)
    return scores


def self_starting_cusum(values: Data, *, k: float = 0.5, arl0: float = 370.0) -> ChangeDetection:
    """Two-sided CUSUM of Hawkins' self-starting scores (see `self_starting_scores`), with
    reference value k and the decision interval h whose in-control average run length is `arl0`
    (`cusum_decision_interval`): no warm-up, no estimated baseline, the same false-alarm rate from
    the third point on as a CUSUM with known mean and spread.

    After an alarm the procedure starts afresh on the values after it, so a lasting shift becomes
    the new level and is reported once. A change point is where the alarmed sum last left 0 (the
    estimated onset of the change), not the alarm; `flagged` marks the alarms."""
    k = _non_negative("k", k)
    h = cusum_decision_interval(k, arl0)
    series, observed_at, observed = _observed(values)
    head = f"self-starting CUSUM k={k:g} h={h:.4g} (in-control ARL {arl0:g})"
    if observed.size < 3:
        return _not_tested("self_starting_cusum", series, observed.size, 3, head)

    def segment(stretch: FloatArray) -> tuple[FloatArray, FloatArray, BoolArray]:
        scores = np.nan_to_num(self_starting_scores(stretch), nan=0.0)
        upper_sums, lower_sums = np.cumsum(scores - k), np.cumsum(-k - scores)
        upper = upper_sums - np.minimum(np.minimum.accumulate(upper_sums), 0.0)
        lower = lower_sums - np.minimum(np.minimum.accumulate(lower_sums), 0.0)
        return upper, lower, (upper > h) | (lower > h)

    upper, lower, alarms = _restarting(observed, segment)
    limit = np.full(observed.size, h)
    result = _result("self_starting_cusum", series, observed_at, upper, -lower, limit, -limit, alarms, None, head)
    onsets = [int(observed_at[_onset(upper, lower, int(a))]) for a in np.flatnonzero(alarms)]
    summary = _summary(onsets, int(alarms.sum())).replace("points flagged", "alarms").replace("point flagged", "alarm")
    return replace(result, change_points=onsets, detail=f"{head}: {summary}{_missing_note(series.size, observed.size)}")


def _onset(upper: FloatArray, lower: FloatArray, alarm: int) -> int:
    """The first point of the run of positive sums that ends in the alarm at `alarm`."""
    side = upper if upper[alarm] > lower[alarm] else lower
    zeros = np.flatnonzero(side[:alarm] <= 0)
    return int(zeros[-1]) + 1 if zeros.size else 0


def page_hinkley(
    values: Data,
    *,
    delta: float = 0.005,
    threshold: float = 50.0,
    alpha: float = 1.0,
    direction: Direction = "both",
    min_instances: int = 30,
) -> ChangeDetection:
    """Page–Hinkley test as river computes it (`delta` δ and `threshold` λ in the data's units),
    resetting after each alarm; `direction` chooses the increase test, the decrease test or both."""
    delta, threshold = _non_negative("delta", delta), _positive("threshold", threshold)
    alpha = _fraction("alpha", alpha)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    min_instances = _count("min_instances", min_instances, 1)
    series, observed_at, observed = _observed(values)
    head = f"Page–Hinkley δ={delta:g} λ={threshold:g} α={alpha:g} {direction}"
    if observed.size < min_instances:
        return _not_tested("page_hinkley", series, observed.size, min_instances, head)
    test_up, test_down = direction != "down", direction != "up"

    def segment(stretch: FloatArray) -> tuple[FloatArray, FloatArray, BoolArray]:
        deviation = stretch - np.cumsum(stretch) / np.arange(1, stretch.size + 1)
        increase_sums = _fading_sum(deviation - delta, alpha)
        decrease_sums = _fading_sum(deviation + delta, alpha)
        increase = increase_sums - np.minimum.accumulate(increase_sums)
        decrease = np.maximum.accumulate(decrease_sums) - decrease_sums
        fired = ((increase > threshold) & test_up) | ((decrease > threshold) & test_down)
        fired[: min_instances - 1] = False
        return increase, decrease, fired

    increase, decrease, alarms = _restarting(observed, segment)
    limit = np.full(observed.size, threshold)
    return _result(
        "page_hinkley",
        series,
        observed_at,
        increase,
        -decrease,
        limit if test_up else np.full(observed.size, math.inf),
        -limit if test_down else np.full(observed.size, -math.inf),
        alarms,
        None,
        f"{head}, min_instances={min_instances}",
    )


def _fading_sum(increments: FloatArray, alpha: float) -> FloatArray:
    """sₜ = α·sₜ₋₁ + incrementsₜ with s₀ = 0."""
    return np.asarray(signal.lfilter([1.0], [1.0, -alpha], increments), dtype=np.float64)


def ewma_chart(
    values: Data,
    *,
    lam: float = 0.2,
    L: float = 3.0,
    warmup: int = DEFAULT_WARMUP,
    target: float | None = None,
    sigma: float | None = None,
) -> ChangeDetection:
    """EWMA control chart with smoothing `lam` (λ) and exact time-varying limits μ0 ± L·σ_z(i)."""
    lam, L = _fraction("lam", lam), _positive("L", L)
    warmup, target, sigma = _baseline_options(warmup, target, sigma)
    series, observed_at, observed = _observed(values)
    head = f"EWMA λ={lam:g} L={L:g}"
    baseline = _baseline(observed, warmup, target, sigma)
    if baseline is None:
        return _not_tested("ewma", series, observed.size, warmup, head, target)

    z = np.asarray(
        signal.lfilter([lam], [1.0, lam - 1.0], observed, zi=[(1.0 - lam) * baseline.mean])[0], dtype=np.float64
    )
    i = np.arange(1, observed.size + 1)
    half_width = L * baseline.std * np.sqrt(lam / (2.0 - lam) * (1.0 - (1.0 - lam) ** (2 * i)))
    upper, lower = baseline.mean + half_width, baseline.mean - half_width
    return _result(
        "ewma",
        series,
        observed_at,
        z,
        z,
        upper,
        lower,
        (z > upper) | (z < lower),
        baseline,
        f"{head} around μ0={baseline.mean:.6g}, σ={baseline.std:.6g} ({baseline.source})",
    )


_DETECTORS: dict[Method, Callable[..., ChangeDetection]] = {
    "self_starting_cusum": self_starting_cusum,
    "cusum": cusum,
    "page_hinkley": page_hinkley,
    "ewma": ewma_chart,
}


def detect(method: Method, values: Data, **params: Any) -> ChangeDetection:
    """Run the detector `method` ("cusum", "page_hinkley" or "ewma") with its keyword `params`."""
    if method not in _DETECTORS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    detector = _DETECTORS[method]
    accepted = [name for name, p in inspect.signature(detector).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for method {method!r}; it takes {accepted}")
    return detector(values, **params)


# --- chart ---------------------------------------------------------------------------------------

_STATISTIC_LABELS: dict[Method, str] = {
    "self_starting_cusum": "self-starting CUSUM",
    "cusum": "CUSUM",
    "page_hinkley": "Page–Hinkley",
    "ewma": "EWMA z",
}


def plot_trend(title: str, labels: Sequence[str], detection: ChangeDetection) -> bytes:
    """PNG (800×450 px) of the series with its baseline above and the detector's statistic with its
    limits below; flagged points in red, change points as red vertical lines, x ticks from `labels`."""
    size = detection.values.size
    if len(labels) != size:
        raise ValueError(f"labels has {len(labels)} entries for {size} values")
    figure = Figure(figsize=(8.0, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    series_axes, statistic_axes = figure.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    x = np.arange(size)
    flagged = detection.flagged
    values = np.where(np.isfinite(detection.values), detection.values, np.nan)

    series_axes.plot(x, values, color="tab:blue", linewidth=1, marker="o", markersize=3, label="value")
    if math.isfinite(detection.baseline_mean):
        series_axes.axhline(detection.baseline_mean, color="0.4", linewidth=0.8, linestyle="--", label="baseline μ0")
    if flagged.any():
        series_axes.scatter(x[flagged], values[flagged], color="tab:red", s=20, zorder=3, label="flagged")
    series_axes.set_title(title, fontsize=10)
    series_axes.legend(fontsize=7, loc="upper left")

    statistic_axes.plot(x, detection.statistic, color="tab:blue", linewidth=1)
    if detection.method != "ewma":
        statistic_axes.plot(x, detection.lower_statistic, color="tab:orange", linewidth=1)
    for limit in (detection.upper_limit, detection.lower_limit):
        if np.isfinite(limit).any():
            statistic_axes.plot(x, limit, color="0.4", linewidth=0.8, linestyle="--")
    if detection.method == "ewma" and math.isfinite(detection.baseline_mean):
        statistic_axes.axhline(detection.baseline_mean, color="0.4", linewidth=0.6, linestyle=":")
    statistic_axes.set_ylabel(_STATISTIC_LABELS[detection.method], fontsize=8)
    if not np.isfinite(detection.statistic).any():
        statistic_axes.text(0.5, 0.5, detection.detail, transform=statistic_axes.transAxes, ha="center", fontsize=8)

    for axes in (series_axes, statistic_axes):
        for index in detection.change_points:
            axes.axvline(index, color="tab:red", linewidth=0.8, alpha=0.6)
        axes.tick_params(labelsize=7)

    ticks = x[:: max(1, math.ceil(size / MAX_TICK_LABELS))]
    shown = [labels[i] for i in ticks]
    longest = max((len(label) for label in shown), default=0)
    rotate = len(shown) > 6 or longest > 10
    statistic_axes.set_xticks(
        ticks, shown, rotation=45 if rotate else 0, ha="right" if rotate else "center", rotation_mode="anchor"
    )
    bottom = min(0.4, 0.05 + 0.0075 * longest) if rotate else 0.1  # room for the rotated labels
    figure.subplots_adjust(left=0.1, right=0.98, top=0.93, bottom=bottom, hspace=0.08)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
