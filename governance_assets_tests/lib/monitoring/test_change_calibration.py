"""The self-starting CUSUM's false-alarm behaviour, shown by simulation: in-control false-alarm
rates over 20 and 200 points against the run-length the policy names, the delay to detect 1σ and
2σ shifts, and a lasting shift reported once. The scores are checked against a plain loop over
`statistics` and scipy's t and normal distributions; the decision interval against the textbook
pair (k = 0.5, h = 4.77 for an in-control ARL of 370, Montgomery §9.1) and a simulation."""

import math
import statistics

import numpy as np
import pytest
from scipy import stats

from governance_assets.lib.core.policy import TrendSettings
from governance_assets.lib.monitoring import trends as tr
from governance_assets.lib.monitoring.series import headline_means, latest_values, run_detection, series_rows

SERIES = 2000
"""Simulated series per rate: a rate's standard error is at most 1.1 points."""


def first_alarm(detection: tr.ChangeDetection) -> int | None:
    alarms = np.flatnonzero(detection.flagged)
    return int(alarms[0]) if alarms.size else None


def in_control_false_alarm_rate(points: int, arl0: float = 370.0, seed: int = 0) -> float:
    """Share of in-control series (normal, arbitrary mean and spread) with an alarm within `points`."""
    rng = np.random.default_rng(seed)
    alarmed = 0
    for _ in range(SERIES):
        values = rng.normal(rng.uniform(-1e3, 1e3), rng.uniform(0.01, 100), points)
        alarmed += first_alarm(tr.self_starting_cusum(values, arl0=arl0)) is not None
    return alarmed / SERIES


def geometric_rate(points: int, arl0: float) -> float:
    """The chance of a false alarm within `points` for a run length geometric with mean `arl0`
    (scores start at the third point)."""
    return 1 - (1 - 1 / arl0) ** (points - 2)


def test_decision_interval_is_the_textbook_one_and_gives_the_named_run_length() -> None:
    assert tr.cusum_decision_interval(0.5, 370) == pytest.approx(4.77, abs=0.01)
    h = tr.cusum_decision_interval(0.5, 370)
    rng = np.random.default_rng(1)
    run_lengths = []
    for _ in range(400):  # the plain two-sided recursion with known μ0 = 0, σ = 1
        upper = lower = 0.0
        n = 0
        while upper <= h and lower <= h:
            x = rng.normal()
            upper, lower, n = max(0.0, upper + x - 0.5), max(0.0, lower - x - 0.5), n + 1
        run_lengths.append(n)
    assert statistics.fmean(run_lengths) == pytest.approx(370, rel=0.15)
    assert tr.cusum_decision_interval(0.5, 1000) > h
    with pytest.raises(ValueError, match="arl0"):
        tr.cusum_decision_interval(0.5, 1)


def test_self_starting_scores_match_a_plain_loop_and_are_standard_normal() -> None:
    values = list(np.random.default_rng(3).normal(250.0, 40.0, 30))
    expected = [math.nan, math.nan]
    for i in range(3, len(values) + 1):
        before = values[: i - 1]
        t = (values[i - 1] - statistics.fmean(before)) / statistics.stdev(before) * math.sqrt((i - 1) / i)
        expected.append(float(stats.norm.ppf(stats.t.cdf(t, i - 2))))
    np.testing.assert_allclose(tr.self_starting_scores(values), expected, rtol=1e-9, atol=1e-9)

    rng = np.random.default_rng(4)
    pooled = np.concatenate([tr.self_starting_scores(rng.normal(1e4, 3.0, 12))[2:] for _ in range(500)])
    assert stats.kstest(pooled, "norm").pvalue > 0.01  # N(0, 1) whatever the level and spread
    assert tr.self_starting_scores([5.0] * 6)[2:].tolist() == [0.0] * 4
    assert tr.self_starting_scores([5.0, 5.0, 5.0, 6.0])[3] > tr.cusum_decision_interval(0.5, 370) + 0.5
    assert first_alarm(tr.self_starting_cusum([5.0, 5.0, 5.0, 6.0])) == 3  # a step after a constant: at once


def test_found_a_seven_point_warm_up_made_cusum_alarm_in_a_quarter_of_short_series() -> None:
    """The finding, reproduced: the policy's tabular CUSUM (baseline from 7 points, h = 5) alarms
    within 20 in-control points far more often than its nominal run length implies."""
    rng = np.random.default_rng(5)
    alarmed = sum(first_alarm(tr.cusum(rng.normal(size=20), k=0.5, h=5.0, warmup=7)) is not None for _ in range(SERIES))
    assert alarmed / SERIES > 0.15


@pytest.mark.parametrize("points", [20, 200])
def test_in_control_false_alarm_rate_is_what_the_run_length_implies(points: int) -> None:
    """Over 20 points about 4.5 %, over 200 about 41 % (an in-control ARL of 370); never more than
    the geometric rate plus three standard errors."""
    rate = in_control_false_alarm_rate(points)
    nominal = geometric_rate(points, 370)
    margin = 3 * math.sqrt(nominal * (1 - nominal) / SERIES)
    print(f"in control, {points} points: false-alarm rate {rate:.3f} (nominal {nominal:.3f})")
    assert rate <= nominal + margin
    assert rate >= nominal - 3 * margin  # calibrated, not merely silent


@pytest.mark.parametrize(("shift", "median_delay", "detected"), [(1.0, 15, 0.8), (2.0, 6, 0.99)])
def test_delay_to_detect_a_shift_after_twenty_in_control_points(
    shift: float, median_delay: int, detected: float
) -> None:
    """Shift of `shift` σ after 20 in-control points; delay = points from the shift to the alarm
    (1 = the first shifted point), among series without a false alarm before it."""
    rng = np.random.default_rng(6)
    delays, missed = [], 0
    for _ in range(1000):
        values = rng.normal(0.0, 1.0, 220)
        values[20:] += shift
        alarm = first_alarm(tr.self_starting_cusum(values))
        if alarm is not None and alarm < 20:
            continue
        if alarm is None:
            missed += 1
        else:
            delays.append(alarm - 20 + 1)
    share = len(delays) / (len(delays) + missed)
    print(
        f"{shift:g}σ shift after 20 points: median delay {statistics.median(delays):g}, "
        f"mean {statistics.fmean(delays):.1f}, detected within 200 points {share:.1%}"
    )
    assert statistics.median(delays) <= median_delay and share >= detected


def test_a_lasting_shift_is_reported_once() -> None:
    """Found: the tabular CUSUM restarted after each alarm and re-alarmed every few points while the
    shift lasted. The self-starting CUSUM takes the new level as its baseline: after the first
    alarm, a second one within 20 points is no likelier than a false alarm in control."""
    rng = np.random.default_rng(7)
    again = old_again = 0
    runs = 1000
    for _ in range(runs):
        values = rng.normal(0.0, 1.0, 120)
        values[40:] += 2.0
        detection = tr.self_starting_cusum(values)
        alarms = np.flatnonzero(detection.flagged)
        after = alarms[alarms >= 40]
        again += bool(after.size > 1 and after[1] - after[0] <= 20)
        old = np.flatnonzero(tr.cusum(values, k=0.5, h=5.0, target=0.0, sigma=1.0).flagged)
        old_after = old[old >= 40]
        old_again += bool(old_after.size > 1 and old_after[1] - old_after[0] <= 20)
    assert old_again / runs > 0.9  # the finding
    assert again / runs <= geometric_rate(22, 370) + 3 * math.sqrt(0.05 * 0.95 / runs)


def test_the_change_point_is_the_onset_and_the_alarm_is_flagged() -> None:
    values = [10.0, 10.4, 9.7, 10.1, 9.9, 10.2, 9.8, 10.0, 10.3, 9.6, *([14.0] * 5)]
    detection = tr.self_starting_cusum(values)
    assert detection.change_points == [10] and np.flatnonzero(detection.flagged).tolist() == [10]
    assert "change point at index 10" in detection.detail
    assert tr.self_starting_cusum([1.0, 2.0]).detail.endswith("fewer than the 3 needed")


def test_run_detection_uses_the_policy_and_rows_describe_each_point() -> None:
    values = [10.0, 10.4, 9.7, 10.1, 9.9, 10.2, 9.8, 10.0, 10.3, 9.6, 14.0, 14.1]
    detection = run_detection(values, TrendSettings())
    assert detection.method == "self_starting_cusum" and detection.change_points == [10]
    assert "ARL 370" in detection.detail
    assert run_detection(values, TrendSettings(arl0=1000)).upper_limit[5] > detection.upper_limit[5]
    rows = series_rows("kpi:x", [f"d{i}" for i in range(len(values))], detection)
    assert [r["label"] for r in rows if r["change_point"]] == ["d10"]
    assert [r["label"] for r in rows if r["flagged"]] == ["d10"]
    assert rows[-1]["value"] == 14.1
    assert latest_values({"a": (["x", "y", "z"], [1.0, 2.0, math.nan]), "b": (["x"], [math.nan])}) == {"a": 2.0}


def test_headline_means_average_the_runs_test_split_unperturbed_means() -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "metric": ["exact_match"] * 5 + ["f1"],
            "model": ["m", "m", "m", "m", "n", "m"],
            "split": ["test", "test", "valid", "test", "test", "test"],
            "perturbation": [None, None, None, "typo", None, None],
            "count": [10, 0, 10, 10, 5, 3],
            "mean": [0.5, math.nan, 0.9, 0.1, 0.25, 0.7],
        }
    )
    frame.loc[len(frame)] = ["exact_match", "m", "test", None, 4, 0.7]
    assert headline_means(frame, ["exact_match"]) == {
        ("exact_match", "m"): pytest.approx(0.6),
        ("exact_match", "n"): 0.25,
    }
