"""Two one-sided tests of a drop against a tolerance, checked against scipy, statsmodels, a
numerical maximum-likelihood fit, and simulation (calibration and power)."""

import math

import numpy as np
import pytest
from scipy import optimize, stats
from statsmodels.stats.power import TTestPower

from governance_assets.lib.core import noninferiority as ni

ALPHA = 0.05


def test_paired_t_matches_scipy_one_sided_t_tests() -> None:
    rng = np.random.default_rng(3)
    baseline = rng.random(40)
    candidate = baseline - 0.05 + rng.normal(0, 0.1, 40)
    result = ni.paired_t_test(baseline, candidate, tolerance=0.02, alpha=ALPHA)
    drops = baseline - candidate
    assert result.p_exceeds == pytest.approx(stats.ttest_1samp(drops - 0.02, 0, alternative="greater").pvalue)
    assert result.p_within == pytest.approx(stats.ttest_1samp(drops - 0.02, 0, alternative="less").pvalue)
    interval = stats.ttest_1samp(drops, 0).confidence_interval(confidence_level=1 - 2 * ALPHA)
    assert (result.lower, result.upper) == pytest.approx((interval.low, interval.high))
    lower_is_better = ni.paired_t_test(baseline, candidate, 0.02, ALPHA, higher_is_better=False)
    assert lower_is_better.drop == pytest.approx(-result.drop)


def test_paired_t_without_variation_decides_nothing() -> None:
    same = np.full(30, 0.7)
    result = ni.paired_t_test(same, same, tolerance=0.02, alpha=ALPHA)
    assert result.p_exceeds == result.p_within == 1.0 and math.isinf(result.upper)
    assert ni.instances_to_decide(result, 0.02, ALPHA, 0.8) is None


@pytest.mark.parametrize(
    ("b", "c", "n", "delta"), [(7, 2, 40, 0.05), (0, 0, 20, 0.02), (3, 9, 50, -0.1), (12, 1, 17, 0.3)]
)
def test_tango_restricted_discordance_is_the_maximum_likelihood_under_h0(b: int, c: int, n: int, delta: float) -> None:
    """The closed form against a numerical maximisation of the multinomial likelihood with
    P(b cell) = q + delta."""
    a_plus_d = n - b - c

    def negative_log_likelihood(q: float) -> float:
        rest = 1.0 - 2.0 * q - delta
        return (
            -(b * math.log(q + delta) + c * math.log(q) + a_plus_d * math.log(rest))
            if min(q, q + delta, rest) > 0
            else math.inf
        )

    low, high = max(0.0, -delta) + 1e-12, (1.0 - delta) / 2.0 - 1e-12
    numeric = optimize.minimize_scalar(
        negative_log_likelihood, bounds=(low, high), method="bounded", options={"xatol": 1e-12}
    )
    assert ni.tango_restricted_discordance(b, c, n, delta) == pytest.approx(numeric.x, abs=1e-6)


def test_tango_at_zero_tolerance_is_mcnemars_score_statistic() -> None:
    """With delta = 0 Tango's statistic is (b - c)/sqrt(b + c), McNemar's (uncorrected) score."""
    assert ni.tango_statistic(9, 3, 50, 0.0) == pytest.approx((9 - 3) / math.sqrt(12))
    baseline = np.r_[np.ones(9), np.zeros(3), np.ones(20), np.zeros(18)]
    candidate = np.r_[np.zeros(9), np.ones(3), np.ones(20), np.zeros(18)]
    result = ni.tango_test(baseline, candidate, tolerance=0.0, alpha=ALPHA)
    assert result.test == "tango_score" and result.drop == pytest.approx(6 / 50)
    assert result.p_exceeds == pytest.approx(stats.norm.sf(6 / math.sqrt(12)))
    # The bounds invert the test: at the lower bound the statistic equals the critical value.
    assert ni.tango_statistic(9, 3, 50, result.lower) == pytest.approx(stats.norm.ppf(1 - ALPHA), abs=1e-6)
    assert ni.tango_statistic(9, 3, 50, result.upper) == pytest.approx(-stats.norm.ppf(1 - ALPHA), abs=1e-6)


def test_identical_binary_outcomes_cannot_show_a_small_drop_with_few_instances() -> None:
    """Ten instances answered alike: the drop may still be large, so the gate cannot pass."""
    outcomes = np.r_[np.ones(6), np.zeros(4)]
    few = ni.tango_test(outcomes, outcomes, tolerance=0.02, alpha=ALPHA)
    assert few.p_within > ALPHA and few.upper > 0.02
    many = ni.tango_test(np.tile(outcomes, 100), np.tile(outcomes, 100), tolerance=0.02, alpha=ALPHA)
    assert many.p_within < ALPHA and many.upper < 0.02


@pytest.mark.parametrize(("effect", "power"), [(0.2, 0.8), (0.5, 0.9), (0.05, 0.8)])
def test_t_sample_size_agrees_with_statsmodels(effect: float, power: float) -> None:
    result = ni.MarginTest(
        "paired_t", 10, 0.5, 0.5, drop=0.1 - effect * 0.3, lower=0, upper=0, p_exceeds=1, p_within=1, spread=0.3
    )
    needed = ni.instances_to_decide(result, tolerance=0.1, alpha=ALPHA, power=power)
    reference = TTestPower().solve_power(effect_size=effect, alpha=ALPHA, power=power, alternative="larger")
    assert needed == math.ceil(reference)


def test_tango_sample_size_reaches_the_power_in_simulation() -> None:
    """The normal-approximation sample size for a binary comparison, checked by simulating the
    test at that size: the share of simulated suites that pass is close to the target power."""
    rng = np.random.default_rng(11)
    worse, better, tolerance = 0.06, 0.08, 0.05  # true drop -0.02, well within tolerance
    planned = ni.MarginTest(
        "tango_score",
        10,
        0.5,
        0.5,
        drop=worse - better,
        lower=0,
        upper=0,
        p_exceeds=1,
        p_within=1,
        spread=worse + better,
    )
    n = ni.instances_to_decide(planned, tolerance, ALPHA, 0.8)
    assert n is not None and 100 < n < 2000
    passed = 0
    for _ in range(1000):
        cell = rng.choice(3, size=n, p=[worse, better, 1 - worse - better])
        baseline, candidate = (cell == 0).astype(float), (cell == 1).astype(float)
        passed += ni.tango_test(baseline, candidate, tolerance, ALPHA).p_within < ALPHA
    assert passed / 1000 == pytest.approx(0.8, abs=0.05)


def _simulate(
    kind: str, n: int, trials: int, true_drop: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Instance values of two models on the same n instances: 0/1 outcomes averaged over
    `trials` with instance difficulty drawn from Beta(2, 2), or a skewed (log-normal) metric; the
    candidate's expected value lower by `true_drop`."""
    if kind == "binary":
        p = rng.beta(2, 2, n)
        baseline = (rng.random((n, trials)) < p[:, None]).mean(axis=1)
        candidate = (rng.random((n, trials)) < np.clip(p - true_drop, 0, 1)[:, None]).mean(axis=1)
        return baseline, candidate
    level = rng.normal(0, 1, n)[:, None]
    baseline = np.exp(level + rng.normal(0, 1, (n, trials))).mean(axis=1)
    candidate = np.exp(level + rng.normal(0, 1, (n, trials))).mean(axis=1) - true_drop
    return baseline, candidate


SIMULATIONS = 2000
SLACK = 3 * math.sqrt(ALPHA * (1 - ALPHA) / SIMULATIONS)
"""Three standard errors of a simulated rate whose true value is alpha."""


@pytest.mark.parametrize("kind", ["binary", "skewed"])
@pytest.mark.parametrize("trials", [1, 5])
@pytest.mark.parametrize("n", [20, 100])
def test_false_alarm_rate_with_no_true_change_is_at_most_alpha(kind: str, trials: int, n: int) -> None:
    """Two equally good models, tolerance 0 (the strictest gate): the `fail` test fires in at
    most alpha of suites; so does `pass` when the true drop sits exactly on the tolerance."""
    rng = np.random.default_rng(n * 10 + trials)
    fails = passes_on_boundary = 0
    for _ in range(SIMULATIONS):
        baseline, candidate = _simulate(kind, n, trials, 0.0, rng)
        fails += (
            ni.margin_test(baseline, candidate, 0.0, ALPHA, binary=kind == "binary" and trials == 1).p_exceeds < ALPHA
        )
        baseline, candidate = _simulate(kind, n, trials, 0.1, rng)
        passes_on_boundary += (
            ni.margin_test(baseline, candidate, 0.1, ALPHA, binary=kind == "binary" and trials == 1).p_within < ALPHA
        )
    assert fails / SIMULATIONS <= ALPHA + SLACK
    assert passes_on_boundary / SIMULATIONS <= ALPHA + SLACK


def test_identical_binary_outcomes_still_get_a_sample_size() -> None:
    """No discordant pair yet: Tango's null variance δ(1 - δ) alone sizes the test, so
    n = z₁₋ₐ²·δ(1 - δ)/δ² (the power term vanishes with the observed variance)."""
    outcomes = np.r_[np.ones(10), np.zeros(7)]
    result = ni.tango_test(outcomes, outcomes, tolerance=0.02, alpha=ALPHA)
    expected = math.ceil(stats.norm.ppf(1 - ALPHA) ** 2 * 0.02 * 0.98 / 0.02**2)
    assert ni.instances_to_decide(result, 0.02, ALPHA, 0.8) == expected
