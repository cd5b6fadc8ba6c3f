"""Change detection, checked against pandas, numpy, published textbook values and reference loops written
out here on the same data; never against values taken from the module's own output."""

import io
import math
import random
import statistics
import struct
from collections.abc import Callable
from typing import Any

import matplotlib
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from governance_assets.lib.monitoring import trends as tr


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def shifted(seed: int, at: int, shift: float, size: int = 200) -> np.ndarray:
    """N(0, 1) noise with `shift` added from index `at` on."""
    values = rng(seed).normal(size=size)
    values[at:] += shift
    return values


STATIONARY_SEED = 2
"""A realisation with no false alarm at the defaults. False alarms do happen: with μ0 and σ known the
tabular CUSUM's in-control ARL is 465 (see `test_cusum_run_lengths_match_montgomery_table_9_3`), so
about 1 − exp(−200/465) ≈ 35 % of 200-point stationary series raise one, more with an estimated
baseline."""

# Montgomery, Introduction to Statistical Quality Control, Example 9.1 (Table 9.1): 20 values from
# N(10, 1), then 10 from N(11, 1); tabular CUSUM with μ0 = 10, σ = 1, k = 1/2, h = 5 (Table 9.2).
MONTGOMERY_9_1 = [
    *[9.45, 7.99, 9.29, 11.66, 12.16, 10.18, 8.04, 11.46, 9.20, 10.34],
    *[9.03, 11.47, 10.51, 9.40, 10.08, 9.37, 10.62, 10.31, 8.52, 10.84],
    *[10.90, 9.33, 12.29, 11.50, 10.60, 11.08, 10.38, 11.62, 11.31, 10.52],
]
MONTGOMERY_9_1_UPPER = [
    *[0.00, 0.00, 0.00, 1.16, 2.82, 2.50, 0.04, 1.00, 0.00, 0.00],
    *[0.00, 0.97, 0.98, 0.00, 0.00, 0.00, 0.12, 0.00, 0.00, 0.34],
    *[0.74, 0.00, 1.79, 2.79, 2.89, 3.47, 3.35, 4.47, 5.28],
]
"""C⁺ of periods 1–29 as printed; the book goes on to C⁺₃₀ = 5.30 without restarting."""


# --- reference implementations, written as plain loops -------------------------------------------


def reference_cusum(
    values: list[float], mu0: float, sigma: float, k: float, h: float
) -> tuple[list[float], list[float], list[bool]]:
    """C⁺, C⁻ and alarms by the textbook recursion, both sums set back to 0 after an alarm."""
    upper, lower, alarms = [], [], []
    c_plus = c_minus = 0.0
    for x in values:
        c_plus = max(0.0, x - (mu0 + k * sigma) + c_plus)
        c_minus = max(0.0, (mu0 - k * sigma) - x + c_minus)
        upper.append(c_plus)
        lower.append(c_minus)
        alarm = c_plus > h * sigma or c_minus > h * sigma
        alarms.append(alarm)
        if alarm:
            c_plus = c_minus = 0.0
    return upper, lower, alarms


class RiverPageHinkley:
    """The state machine of river's `drift.PageHinkley.update`, one value at a time."""

    def __init__(self, min_instances: int, delta: float, threshold: float, alpha: float, mode: str) -> None:
        self.min_instances, self.delta, self.threshold, self.alpha, self.mode = (
            min_instances,
            delta,
            threshold,
            alpha,
            mode,
        )
        self.drift_detected = False
        self.reset()

    def reset(self) -> None:
        self.n, self.mean = 0, 0.0
        self.sum_increase = self.sum_decrease = 0.0
        self.min_increase, self.max_decrease = math.inf, -1.0
        self.drift_detected = False

    def update(self, x: float) -> tuple[float, float]:
        if self.drift_detected:
            self.reset()
        self.n += 1
        self.mean += (x - self.mean) / self.n
        deviation = x - self.mean
        self.sum_increase = self.alpha * self.sum_increase + deviation - self.delta
        self.sum_decrease = self.alpha * self.sum_decrease + deviation + self.delta
        self.min_increase = min(self.min_increase, self.sum_increase)
        self.max_decrease = max(self.max_decrease, self.sum_decrease)
        test_increase = self.sum_increase - self.min_increase
        test_decrease = self.max_decrease - self.sum_decrease
        if self.n >= self.min_instances:
            up = test_increase > self.threshold and self.mode in ("up", "both")
            down = test_decrease > self.threshold and self.mode in ("down", "both")
            self.drift_detected = up or down
        return test_increase, test_decrease


def reference_ewma_limits(
    mu0: float, sigma: float, lam: float, width: float, size: int
) -> tuple[list[float], list[float]]:
    upper, lower = [], []
    for i in range(1, size + 1):
        half = width * sigma * math.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * i)))
        upper.append(mu0 + half)
        lower.append(mu0 - half)
    return upper, lower


def run_starts(flags: list[bool]) -> list[int]:
    return [i for i, flag in enumerate(flags) if flag and (i == 0 or not flags[i - 1])]


# --- baseline ----------------------------------------------------------------------------------


@pytest.mark.parametrize("detector", [tr.cusum, tr.ewma_chart])
def test_baseline_is_mean_and_sample_std_of_the_warmup(detector: Callable[..., tr.ChangeDetection]) -> None:
    values = rng(1).normal(50.0, 4.0, size=80)
    result = detector(values, warmup=25)
    assert result.baseline_mean == pytest.approx(statistics.fmean(values[:25]), rel=1e-12)
    assert result.baseline_std == pytest.approx(statistics.stdev(values[:25]), rel=1e-12)
    assert result.baseline_std == pytest.approx(np.std(values[:25], ddof=1), rel=1e-12)

    with_target = detector(values, warmup=25, target=49.0)
    assert with_target.baseline_mean == 49.0
    assert with_target.baseline_std == pytest.approx(statistics.stdev(values[:25]), rel=1e-12)

    with_sigma = detector(values, warmup=25, sigma=3.0)
    assert (with_sigma.baseline_mean, with_sigma.baseline_std) == (pytest.approx(statistics.fmean(values[:25])), 3.0)


# --- EWMA --------------------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [0.05, 0.2, 0.5, 1.0])
def test_ewma_statistic_matches_pandas_and_limits_the_formula(lam: float) -> None:
    values = shifted(3, 60, 1.5, size=120) * 2.0 + 10.0
    result = tr.ewma_chart(values, lam=lam, L=2.7, warmup=30)
    mu0, sigma = float(np.mean(values[:30])), float(np.std(values[:30], ddof=1))

    expected_z = pd.Series([mu0, *values]).ewm(alpha=lam, adjust=False).mean().to_numpy()[1:]
    np.testing.assert_allclose(result.statistic, expected_z, rtol=1e-12)
    upper, lower = reference_ewma_limits(mu0, sigma, lam, 2.7, values.size)
    np.testing.assert_allclose(result.upper_limit, upper, rtol=1e-12)
    np.testing.assert_allclose(result.lower_limit, lower, rtol=1e-12)
    np.testing.assert_array_equal(result.lower_statistic, result.statistic)  # one statistic, two limits

    flags = [z > hi or z < lo for z, hi, lo in zip(expected_z, upper, lower, strict=True)]
    assert result.flagged.tolist() == flags
    assert result.change_points == run_starts(flags)
    assert any(flags)


def test_ewma_with_lambda_one_is_the_shewhart_individuals_chart() -> None:
    values = rng(4).normal(size=50)
    result = tr.ewma_chart(values, lam=1.0, L=3.0, target=0.0, sigma=1.0)
    np.testing.assert_array_equal(result.statistic, values)
    np.testing.assert_allclose(result.upper_limit, 3.0)


# --- CUSUM -------------------------------------------------------------------------------------


def test_cusum_reproduces_montgomery_example_9_1() -> None:
    result = tr.cusum(MONTGOMERY_9_1, k=0.5, h=5.0, target=10.0, sigma=1.0)
    np.testing.assert_allclose(result.statistic[:29], MONTGOMERY_9_1_UPPER, atol=1e-9)
    assert result.change_points == [28]  # period 29, the first with C⁺ > H = 5
    assert np.flatnonzero(result.flagged).tolist() == [28]
    assert result.statistic[29] == pytest.approx(10.52 - 10.5)  # restarted: 0 + x₃₀ − (μ0 + K)

    expected_upper, expected_lower, _ = reference_cusum(MONTGOMERY_9_1, 10.0, 1.0, 0.5, 5.0)
    np.testing.assert_allclose(result.statistic, expected_upper, atol=1e-12)
    np.testing.assert_allclose(-result.lower_statistic, expected_lower, atol=1e-12)
    np.testing.assert_array_equal(result.upper_limit, np.full(30, 5.0))
    np.testing.assert_array_equal(result.lower_limit, np.full(30, -5.0))
    assert "change point at index 28" in result.detail


@pytest.mark.parametrize(("k", "h"), [(0.5, 5.0), (0.25, 8.0), (1.0, 2.5), (0.0, 4.0)])
def test_cusum_matches_the_textbook_recursion(k: float, h: float) -> None:
    values = np.concatenate([rng(5).normal(3.0, 0.5, 150), rng(6).normal(3.6, 0.5, 100), rng(7).normal(2.4, 0.5, 150)])
    result = tr.cusum(values, k=k, h=h, warmup=40)
    mu0, sigma = float(np.mean(values[:40])), float(np.std(values[:40], ddof=1))
    upper, lower, alarms = reference_cusum(values.tolist(), mu0, sigma, k, h)

    np.testing.assert_allclose(result.statistic, upper, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(-result.lower_statistic, lower, rtol=1e-9, atol=1e-12)
    assert result.flagged.tolist() == alarms
    assert result.change_points == run_starts(alarms)
    assert sum(alarms) > 3  # both shifts fire, several times after restarts
    np.testing.assert_allclose(result.upper_limit, h * sigma)


@pytest.mark.parametrize(
    ("shift", "size", "published", "last_digit"),
    [(0.0, 400_000, 465.0, 1.0), (1.0, 40_000, 10.4, 0.1), (2.0, 20_000, 4.01, 0.01)],
)
def test_cusum_run_lengths_match_montgomery_table_9_3(
    shift: float, size: int, published: float, last_digit: float
) -> None:
    """Average run length of the tabular CUSUM with k = 1/2, h = 5 after a shift of `shift` σ
    (Montgomery, Table 9.3). The restart makes successive run lengths independent, so their mean
    estimates the ARL: it must lie within 4 standard errors (plus the table's rounding)."""
    result = tr.cusum(rng(8).normal(shift, 1.0, size), target=0.0, sigma=1.0)
    run_lengths = np.diff(np.concatenate([[-1], np.flatnonzero(result.flagged)]))
    standard_error = run_lengths.std(ddof=1) / math.sqrt(run_lengths.size)
    assert abs(run_lengths.mean() - published) <= 4 * standard_error + last_digit / 2


# --- Page–Hinkley ------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [1.0, 0.9999, 0.95])
@pytest.mark.parametrize("direction", ["up", "down", "both"])
def test_page_hinkley_matches_rivers_update_loop(alpha: float, direction: str) -> None:
    values = np.concatenate([rng(9).normal(0.0, 1.0, 300), rng(10).normal(1.5, 1.0, 300), rng(11).normal(-1.0, 1, 300)])
    result = tr.page_hinkley(values, delta=0.01, threshold=15.0, alpha=alpha, direction=direction, min_instances=20)
    detector = RiverPageHinkley(20, 0.01, 15.0, alpha, direction)
    increase, decrease, alarms = [], [], []
    for x in values:
        up, down = detector.update(float(x))
        increase.append(up)
        decrease.append(down)
        alarms.append(detector.drift_detected)

    np.testing.assert_allclose(result.statistic, increase, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(-result.lower_statistic, decrease, rtol=1e-9, atol=1e-9)
    assert result.flagged.tolist() == alarms
    assert any(alarms)
    np.testing.assert_array_equal(result.upper_limit, 15.0 if direction != "down" else math.inf)
    np.testing.assert_array_equal(result.lower_limit, -15.0 if direction != "up" else -math.inf)


def test_page_hinkley_reproduces_the_river_docstring_example() -> None:
    """river's `drift.PageHinkley` docstring: defaults (α = 0.9999) on this stream detect at index 1006."""
    stream = random.Random(12345)
    data = stream.choices([0, 1], k=1000) + stream.choices(range(4, 8), k=1000)
    result = tr.page_hinkley(data, alpha=0.9999)
    assert result.change_points[0] == 1006
    assert math.isnan(result.baseline_mean)
    assert math.isnan(result.baseline_std)


# --- behaviour on synthetic series --------------------------------------------------------------

DETECTORS_FOR_SHIFTS: list[tuple[tr.Method, dict[str, Any]]] = [
    ("cusum", {}),
    ("ewma", {}),
    ("page_hinkley", {"threshold": 10.0}),  # δ and λ are in data units: λ = 10σ here
]


@pytest.mark.parametrize(("method", "params"), DETECTORS_FOR_SHIFTS)
@pytest.mark.parametrize("shift", [2.0, -2.0])
def test_a_two_sigma_shift_is_flagged_soon_after_it_and_never_before(
    method: tr.Method, params: dict[str, Any], shift: float
) -> None:
    values = shifted(STATIONARY_SEED, 100, shift)
    result = tr.detect(method, values, **params)
    assert not result.flagged[:100].any()
    assert 100 <= result.change_points[0] <= 110


@pytest.mark.parametrize("method", tr.METHODS)
def test_a_stationary_series_raises_no_alarm_at_the_defaults(method: tr.Method) -> None:
    result = tr.detect(method, rng(STATIONARY_SEED).normal(size=200))
    assert not result.flagged.any()
    assert result.change_points == []
    assert result.detail.endswith("no change point")


@pytest.mark.parametrize("level", [0.0, 0.3, -7e-5, 1234.5])
@pytest.mark.parametrize("detector", [tr.cusum, tr.ewma_chart])
def test_constant_series_never_flags_and_any_step_after_it_does(
    detector: Callable[..., tr.ChangeDetection], level: float
) -> None:
    constant = detector(np.full(300, level))
    assert not constant.flagged.any()
    assert constant.baseline_std == max(1e-9 * abs(constant.baseline_mean), 1e-12)
    assert "floor" in constant.detail

    step = 1e-6 * max(abs(level), 1.0)
    stepped = detector(np.concatenate([np.full(40, level), np.full(10, level + step)]))
    assert stepped.change_points == [40]
    assert not stepped.flagged[:40].any()


@pytest.mark.parametrize("delta", [0.005, 0.0])
def test_page_hinkley_on_a_constant_series(delta: float) -> None:
    assert not tr.page_hinkley(np.full(500, 0.7), delta=delta, threshold=1e-6).flagged.any()
    stepped = tr.page_hinkley(np.concatenate([np.zeros(40), np.ones(20)]), delta=delta, threshold=5.0)
    assert not stepped.flagged[:40].any()
    assert 40 <= stepped.change_points[0] <= 50


# --- missing values ----------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "params"), DETECTORS_FOR_SHIFTS)
def test_missing_values_are_skipped_in_place(method: tr.Method, params: dict[str, Any]) -> None:
    clean = shifted(12, 90, 2.5, size=160)
    missing_at = [0, 5, 33, 95, 96, 150]
    with_gaps = np.insert(clean, np.array(missing_at) - np.arange(len(missing_at)), np.nan)
    with_gaps[[33, 150]] = [np.inf, -np.inf]
    observed = np.setdiff1d(np.arange(with_gaps.size), missing_at)
    np.testing.assert_array_equal(with_gaps[observed], clean)

    gappy, reference = tr.detect(method, with_gaps, **params), tr.detect(method, clean, **params)
    for ours, theirs in [
        (gappy.statistic, reference.statistic),
        (gappy.lower_statistic, reference.lower_statistic),
        (gappy.upper_limit, reference.upper_limit),
        (gappy.lower_limit, reference.lower_limit),
    ]:
        np.testing.assert_array_equal(ours[observed], theirs)
        assert np.isnan(ours[missing_at]).all()
    np.testing.assert_array_equal(gappy.values, with_gaps)
    assert not gappy.flagged[missing_at].any()
    np.testing.assert_array_equal(gappy.flagged[observed], reference.flagged)
    assert gappy.change_points == [int(observed[i]) for i in reference.change_points]
    assert "6 missing values skipped" in gappy.detail


def test_a_missing_value_does_not_split_a_run_of_flagged_points() -> None:
    values = np.concatenate([np.zeros(30), np.full(10, 10.0)])
    values[35] = np.nan
    result = tr.ewma_chart(values, target=0.0, sigma=1.0)
    assert result.flagged[30:].sum() == 9
    assert result.change_points == [30]


def test_series_given_as_a_nullable_series_or_a_list_with_none() -> None:
    as_list: list[float | None] = [*rng(13).normal(size=30).tolist(), None, 5.0]
    from_list = tr.cusum(as_list)
    from_series = tr.cusum(pd.Series(as_list, dtype="Float64"))
    assert math.isnan(from_list.values[30])
    np.testing.assert_array_equal(from_list.statistic, from_series.statistic)


# --- too little data ---------------------------------------------------------------------------


@pytest.mark.parametrize("detector", [tr.cusum, tr.ewma_chart])
def test_fewer_values_than_the_warmup_are_not_tested(detector: Callable[..., tr.ChangeDetection]) -> None:
    values = [1.0, 2.0, np.nan, 50.0, 80.0]
    result = detector(values, warmup=5)
    assert not result.flagged.any()
    assert result.change_points == []
    assert np.isnan(result.statistic).all()
    assert math.isnan(result.baseline_mean)
    assert "not tested, 4 observed values, fewer than the 5 needed" in result.detail

    known = detector(values, warmup=5, target=1.5, sigma=0.5)
    assert known.change_points == [3]


def test_page_hinkley_needs_min_instances_values() -> None:
    result = tr.page_hinkley([0.0] * 10 + [100.0] * 9, threshold=1.0, min_instances=20, direction="down")
    assert not result.flagged.any()
    assert "fewer than the 20 needed" in result.detail
    assert np.isnan(result.upper_limit).all()


def test_empty_series() -> None:
    assert tr.cusum([], target=0.0, sigma=1.0).change_points == []
    assert tr.ewma_chart([np.nan, np.nan], target=0.0, sigma=1.0).change_points == []
    assert "not tested" in tr.page_hinkley([]).detail


# --- parameters --------------------------------------------------------------------------------

INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("cusum", {"k": -0.1}, "k"),
    ("cusum", {"h": 0}, "h"),
    ("cusum", {"h": math.inf}, "h"),
    ("cusum", {"warmup": 1}, "warmup"),
    ("cusum", {"warmup": 2.5}, "warmup"),
    ("cusum", {"warmup": True}, "warmup"),
    ("cusum", {"target": math.nan}, "target"),
    ("cusum", {"sigma": 0.0}, "sigma"),
    ("cusum", {"k": "0.5"}, "k"),
    ("ewma", {"lam": 0.0}, "lam"),
    ("ewma", {"lam": 1.5}, "lam"),
    ("ewma", {"L": -3.0}, "L"),
    ("ewma", {"sigma": -1.0}, "sigma"),
    ("page_hinkley", {"delta": -0.005}, "delta"),
    ("page_hinkley", {"threshold": 0.0}, "threshold"),
    ("page_hinkley", {"alpha": 0.0}, "alpha"),
    ("page_hinkley", {"alpha": 1.01}, "alpha"),
    ("page_hinkley", {"direction": "sideways"}, "direction"),
    ("page_hinkley", {"min_instances": 0}, "min_instances"),
    ("ewma", {"k": 0.5}, "unknown parameter"),
]


@pytest.mark.parametrize(("method", "params", "name"), INVALID)
def test_invalid_parameters_raise_value_error_naming_them(method: tr.Method, params: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        tr.detect(method, np.zeros(50), **params)


def test_invalid_method_and_values() -> None:
    with pytest.raises(ValueError, match=r"^method"):
        tr.detect("shewhart", [1.0, 2.0])
    with pytest.raises(ValueError, match=r"^values must be 1-D"):
        tr.cusum(np.zeros((3, 3)))


@pytest.mark.parametrize(("method", "params"), DETECTORS_FOR_SHIFTS)
def test_detect_dispatches_to_the_detector(method: tr.Method, params: dict[str, Any]) -> None:
    values = shifted(14, 50, 3.0, size=90)
    functions = {"cusum": tr.cusum, "ewma": tr.ewma_chart, "page_hinkley": tr.page_hinkley}
    direct = functions[method](values, **params)
    via_detect = tr.detect(method, values, **params)
    assert via_detect.method == method
    np.testing.assert_array_equal(via_detect.statistic, direct.statistic)
    assert (via_detect.change_points, via_detect.detail) == (direct.change_points, direct.detail)


def test_results_are_read_only() -> None:
    result = tr.cusum(shifted(15, 50, 3.0, size=90))
    for array in (result.values, result.statistic, result.lower_statistic, result.flagged, result.upper_limit):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1
    source = np.zeros(30)
    tr.cusum(source)
    source[0] = 1.0  # the caller's array stays writable: the result holds a copy


# --- chart -------------------------------------------------------------------------------------

TAB_RED = np.array([0xD6, 0x27, 0x28]) / 255


def red_pixels(png: bytes) -> int:
    image = matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]
    return int((np.abs(image - TAB_RED).max(axis=-1) < 0.05).sum())


@pytest.mark.parametrize(
    ("detection", "labels"),
    [
        (tr.cusum(shifted(16, 30, 2.5, size=45)), [f"suite_v{i}" for i in range(45)]),
        (
            tr.ewma_chart(shifted(17, 200, 1.5, size=365)),
            [str(d.date()) for d in pd.date_range("2025-01-01", periods=365)],
        ),
        (tr.page_hinkley(shifted(18, 40, 3.0, size=60), threshold=8.0, direction="up"), [str(i) for i in range(60)]),
        (tr.cusum([0.5, np.nan, 0.7]), ["a", "b", "c"]),
        (tr.ewma_chart([]), []),
    ],
)
def test_plot_trend_returns_a_png_without_touching_pyplot_or_rcparams(
    detection: tr.ChangeDetection, labels: list[str]
) -> None:
    figures, settings = plt.get_fignums(), dict(matplotlib.rcParams)
    png = tr.plot_trend("mean latency (ms)", labels, detection)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (800, 450)  # IHDR width and height
    assert plt.get_fignums() == figures
    assert dict(matplotlib.rcParams) == settings
    assert (red_pixels(png) > 0) == bool(detection.change_points)


def test_plot_trend_needs_one_label_per_value() -> None:
    with pytest.raises(ValueError, match="labels has 2 entries for 3 values"):
        tr.plot_trend("x", ["a", "b"], tr.cusum([1.0, 2.0, 3.0]))


def test_standardised_uses_the_warm_up_mean_and_sample_deviation() -> None:
    values = [2.0, float("nan"), 4.0, 9.0, 1.0, 7.0]
    warm = [2.0, 4.0, 9.0]  # the finite values among the first four points
    expected = [(v - statistics.fmean(warm)) / statistics.stdev(warm) for v in values]
    np.testing.assert_allclose(tr.standardised(values, 4), expected, equal_nan=True)
    np.testing.assert_array_equal(tr.standardised([3.0, 3.0, 5.0], 2), [0.0, 0.0, 2.0])  # no spread: not scaled
