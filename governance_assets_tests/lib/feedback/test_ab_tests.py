"""A/B statistics checked against scipy/statsmodels and numerical integration, and calibrated by
simulation under daily peeking."""

import re
from datetime import date
from typing import get_args

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import integrate, stats

from governance_assets.lib.core.policy import (
    Experiment,
    ExperimentGuardrail,
    ExperimentVariant,
    PolicyError,
    parse_policy,
)
from governance_assets.lib.feedback.ab_tests import (
    always_valid_p_values,
    analyse_experiment,
    confidence_sequence,
    harm_p_values,
    holm,
    msprt_likelihood_ratio,
    sequential_srm_p_values,
    srm_log_bayes_factors,
)
from governance_assets.lib.feedback.metrics import METRICS, MetricName

ALPHA = 0.05
DAYS = 30
REPLICATIONS = 4000
THREE_SE = 3 * np.sqrt(ALPHA * (1 - ALPHA) / REPLICATIONS)


def test_catalog_matches_the_policy_names() -> None:
    assert set(METRICS) == set(get_args(MetricName))


@pytest.mark.parametrize(("theta", "variance", "tau2"), [(0.0, 1e-4, 4e-4), (0.03, 2e-4, 1e-4), (-1.5, 0.3, 2.0)])
def test_mixture_ratio_equals_the_integral_over_the_prior(theta: float, variance: float, tau2: float) -> None:
    sd = np.sqrt(variance)

    def integrand(mu: float) -> float:
        return float(
            stats.norm.pdf(theta, mu, sd) / stats.norm.pdf(theta, 0, sd) * stats.norm.pdf(mu, 0, np.sqrt(tau2))
        )

    tau = np.sqrt(tau2)
    reference, _ = integrate.quad(integrand, -12 * tau, 12 * tau, points=[0.0, theta], limit=200)
    assert msprt_likelihood_ratio(theta, variance, tau2) == pytest.approx(reference, rel=1e-6)


def test_confidence_sequence_excludes_zero_exactly_when_p_reaches_alpha() -> None:
    variance, tau2 = 1e-4, 4e-4
    for theta in np.linspace(0.0, 0.08, 81):
        p = always_valid_p_values([theta], [variance], tau2)[0]
        low, high = confidence_sequence([theta], [variance], tau2, ALPHA)
        assert (p <= ALPHA) == (low[0] > 0 or high[0] < 0)


def test_p_values_never_rise_and_the_sequence_only_narrows() -> None:
    rng = np.random.default_rng(1)
    differences = rng.normal(0, 0.01, 20)
    variances = np.linspace(4e-4, 2e-5, 20)
    p = always_valid_p_values(differences, variances, 1e-4)
    low, high = confidence_sequence(differences, variances, 1e-4, ALPHA)
    assert np.all(np.diff(p) <= 0) and np.all(np.diff(low) >= 0) and np.all(np.diff(high) <= 0)


@pytest.mark.parametrize(
    ("counts", "shares", "concentration"),
    [([520, 480], [0.5, 0.5], 10_000.0), ([900, 100], [0.8, 0.2], 100.0), ([30, 52, 18], [0.3, 0.5, 0.2], 3.0)],
)
def test_srm_bayes_factor_is_the_dirichlet_multinomial_over_the_multinomial(
    counts: list[int], shares: list[float], concentration: float
) -> None:
    """The mixture's Bayes factor by scipy's distributions (the multinomial coefficients cancel)."""
    n, p0 = sum(counts), np.asarray(shares)
    reference = stats.dirichlet_multinomial.logpmf(counts, concentration * p0, n) - stats.multinomial.logpmf(
        counts, n, p0
    )
    assert srm_log_bayes_factors(counts, shares, concentration) == pytest.approx(reference, rel=1e-9, abs=1e-9)


def _daily_split_counts(rng: np.random.Generator, share: float, per_day: int, replications: int) -> np.ndarray:
    """Cumulative (champion, challenger) request counts after each of DAYS days, assigned at random
    with the challenger's true `share`."""
    challenger = rng.binomial(per_day, share, (replications, DAYS)).cumsum(axis=1)
    champion = per_day * np.arange(1, DAYS + 1) - challenger
    return np.stack([champion, challenger], axis=-1).astype(np.float64)


def test_sequential_srm_keeps_false_alarms_at_alpha_over_30_daily_looks_where_chi_square_does_not() -> None:
    rng = np.random.default_rng(42)
    counts = _daily_split_counts(rng, 0.5, 1000, REPLICATIONS)
    sequential = (sequential_srm_p_values(counts, [0.5, 0.5], 10_000.0)[:, -1] <= ALPHA).mean()
    chi_square = stats.chisquare(counts, axis=-1).pvalue  # fixed-horizon test, scipy, at every look
    peeked_chi_square = (chi_square <= ALPHA).any(axis=1).mean()
    assert sequential <= ALPHA + THREE_SE
    assert peeked_chi_square > ALPHA + THREE_SE
    assert abs((chi_square[:, -1] <= ALPHA).mean() - ALPHA) <= THREE_SE  # one look: the chi-square is exact


def test_sequential_srm_finds_a_52_48_split_of_an_intended_50_50() -> None:
    rng = np.random.default_rng(43)
    counts = _daily_split_counts(rng, 0.48, 1000, 1000)
    p = sequential_srm_p_values(counts, [0.5, 0.5], 10_000.0)
    assert (p[:, -1] < 0.001).mean() > 0.95  # the policy's srm_alpha, within 30 days of 1,000 requests


def test_harm_p_value_reaches_a_exactly_when_the_sequence_clears_the_tolerance() -> None:
    variance, tau2, tolerance = 1e-4, 4e-4, 0.01
    for theta in np.linspace(-0.1, 0.1, 201):
        p = harm_p_values([theta], [variance], tau2, tolerance, higher_is_better=True)[0]
        _, high = confidence_sequence([theta], [variance], tau2, ALPHA)
        assert (p <= ALPHA) == (high[0] < -tolerance)
        worse = harm_p_values([-theta], [variance], tau2, tolerance, higher_is_better=False)[0]
        assert worse == pytest.approx(harm_p_values([theta], [variance], tau2, tolerance, higher_is_better=True)[0])


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.02, 0.06 against 0.05/3, 0.05/2, 0.05/1: the first two rejected (Bonferroni's
    # 0.05/3 would keep 0.02), then 0.06 > 0.05 stops; adjusted: 3 * 0.01, 2 * 0.02, 0.06
    rejected, adjusted = holm([0.06, 0.01, 0.02], 0.05)
    assert rejected == [False, True, True]
    assert adjusted == pytest.approx([0.06, 0.03, 0.04])


@pytest.mark.parametrize("guardrails", [4])
def test_no_harm_on_k_guardrails_keeps_false_harm_calls_at_alpha_under_daily_peeking(guardrails: int) -> None:
    """k guardrails at the tolerance's edge (true difference 0, tolerance 0: the worst case of "no
    harm"), looked at daily for 30 days: Holm keeps P(any harm called) at most alpha; judging each
    guardrail at alpha on its own does not promise that."""
    rng = np.random.default_rng(44)
    replications = 2000
    p = np.stack(
        [
            harm_p_values(*_cumulative_binary_looks(rng, 0.2, 0.2, per_day=200)[:2], 0.02**2, 0.0, True)[:replications]
            for _ in range(guardrails)
        ],
        axis=1,
    )  # (replications, guardrails, days), running minima
    final = p[:, :, -1]
    # Holm calls some harm exactly when its first step does: the smallest p at most alpha / k
    # (vectorised here; `holm` itself, through statsmodels, takes milliseconds a call)
    holm_any = final.min(axis=1) <= ALPHA / guardrails
    for r in range(100):
        assert any(holm(list(final[r]), ALPHA)[0]) == holm_any[r]
    holm_harm = holm_any.mean()
    alone = (final <= ALPHA).any(axis=1).mean()
    assert holm_harm <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / replications)
    assert holm_harm < alone


def _cumulative_binary_looks(
    rng: np.random.Generator, rate_a: float, rate_b: float, per_day: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Daily looks of REPLICATIONS two-arm experiments with 0/1 outcomes: difference, its
    variance (sample variances with n - 1) and the cumulative size per arm."""
    n = per_day * np.arange(1, DAYS + 1, dtype=np.float64)
    successes_a = rng.binomial(per_day, rate_a, (REPLICATIONS, DAYS)).cumsum(axis=1)
    successes_b = rng.binomial(per_day, rate_b, (REPLICATIONS, DAYS)).cumsum(axis=1)
    p_a, p_b = successes_a / n, successes_b / n
    variance = p_a * (1 - p_a) * n / (n - 1) / n + p_b * (1 - p_b) * n / (n - 1) / n
    return p_b - p_a, variance, n


def test_daily_peeking_for_30_days_keeps_the_false_positive_rate_at_alpha() -> None:
    rng = np.random.default_rng(20261204)
    differences, variances, _ = _cumulative_binary_looks(rng, 0.2, 0.2, per_day=200)
    sequential = (always_valid_p_values(differences, variances, 0.02**2)[:, -1] <= ALPHA).mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        naive_p = 2 * stats.norm.sf(np.abs(differences) / np.sqrt(variances))
    peeked_fixed_horizon = (np.nan_to_num(naive_p, nan=1.0) <= ALPHA).any(axis=1).mean()
    single_look_fixed_horizon = (np.nan_to_num(naive_p[:, -1], nan=1.0) <= ALPHA).mean()
    assert sequential <= ALPHA + THREE_SE
    assert peeked_fixed_horizon > ALPHA + THREE_SE
    assert abs(single_look_fixed_horizon - ALPHA) <= THREE_SE  # the uncorrected test is fine looked at once


def test_daily_peeking_on_a_skewed_continuous_metric_stays_calibrated() -> None:
    rng = np.random.default_rng(7)
    per_day, replications = 150, 1000
    latencies = rng.lognormal(6.0, 0.8, (replications, 2, DAYS, per_day))
    n = per_day * np.arange(1, DAYS + 1)
    sums = latencies.sum(axis=3).cumsum(axis=2)
    squares = (latencies**2).sum(axis=3).cumsum(axis=2)
    means = sums / n
    sample_var = (squares - n * means**2) / (n - 1)
    differences = means[:, 1] - means[:, 0]
    variances = sample_var[:, 1] / n + sample_var[:, 0] / n
    rate = (always_valid_p_values(differences, variances, 50.0**2)[:, -1] <= ALPHA).mean()
    assert rate <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / replications)


def test_a_true_effect_of_the_minimum_size_is_found_within_30_days() -> None:
    rng = np.random.default_rng(3)
    differences, variances, _ = _cumulative_binary_looks(rng, 0.20, 0.23, per_day=200)
    p = always_valid_p_values(differences, variances, 0.02**2)
    assert (p[:, -1] <= ALPHA).mean() > 0.8


PLAN = Experiment(
    name="prompt_v2",
    variants=[ExperimentVariant(name="control", share=0.5), ExperimentVariant(name="treatment", share=0.5)],
    primary_metric="positive_feedback",
    minimum_detectable_effect=0.03,
    guardrails=[ExperimentGuardrail(metric="latency_ms", minimum_detectable_effect=50.0, tolerance=20.0)],
    start_date=date(2026, 11, 1),
)
SRM_ALPHA = 0.001
SRM_CONCENTRATION = 10_000.0


def _units(
    rng: np.random.Generator, counts: dict[str, int], rates: dict[str, float], latency: dict[str, float]
) -> pd.DataFrame:
    frames = []
    for variant, count in counts.items():
        frames.append(
            pd.DataFrame(
                {
                    "day": rng.choice([f"2026-11-{d:02d}" for d in range(1, 11)], count),
                    "variant": variant,
                    "positive_feedback": rng.binomial(1, rates[variant], count).astype(float),
                    "latency_ms": rng.normal(latency[variant], 100.0, count),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_a_better_challenger_is_shipped_with_intervals_matching_statsmodels_and_scipy() -> None:
    rng = np.random.default_rng(11)
    units = _units(
        rng,
        {"control": 3000, "treatment": 3000},
        {"control": 0.2, "treatment": 0.3},
        dict.fromkeys(("control", "treatment"), 800.0),
    )
    result = analyse_experiment(PLAN, units, SRM_ALPHA, SRM_CONCENTRATION)
    assert result.outcome == "ship_challenger" and not result.srm_mismatch and not result.harmed_guardrails
    rows = pd.DataFrame(result.rows)
    control = rows[(rows.metric == "positive_feedback") & (rows.variant == "control") & rows.versus.isna()].iloc[0]
    k, n = int(units.loc[units.variant == "control", "positive_feedback"].sum()), 3000
    z = stats.norm.ppf(0.975)
    centre = (k + z**2 / 2) / (n + z**2)
    half = z / (n + z**2) * np.sqrt(k * (n - k) / n + z**2 / 4)  # Wilson's interval by hand
    assert (control.ci_low, control.ci_high) == pytest.approx((centre - half, centre + half))
    diff = rows[(rows.metric == "positive_feedback") & (rows.versus == "control")].iloc[0]
    welch = stats.ttest_ind(
        units.loc[units.variant == "treatment", "positive_feedback"],
        units.loc[units.variant == "control", "positive_feedback"],
        equal_var=False,
    ).confidence_interval(0.95)
    assert (diff.ci_low, diff.ci_high) == pytest.approx((welch.low, welch.high))
    assert diff.cs_low < diff.ci_low and diff.cs_high > diff.ci_high  # always valid costs width
    assert diff.call == "better"


def test_guardrail_harm_keeps_the_champion_and_says_why() -> None:
    rng = np.random.default_rng(12)
    units = _units(
        rng,
        {"control": 3000, "treatment": 3000},
        {"control": 0.2, "treatment": 0.3},
        {"control": 800.0, "treatment": 900.0},
    )
    result = analyse_experiment(PLAN, units, SRM_ALPHA, SRM_CONCENTRATION)
    assert result.outcome == "keep_champion"
    assert result.harmed_guardrails == ["treatment:latency_ms"]
    assert any("guardrail latency_ms harmed by treatment" in reason for reason in result.reasons)


def test_sample_ratio_mismatch_keeps_the_champion() -> None:
    rng = np.random.default_rng(13)
    units = _units(
        rng,
        {"control": 3300, "treatment": 2700},
        {"control": 0.2, "treatment": 0.3},
        dict.fromkeys(("control", "treatment"), 800.0),
    )
    result = analyse_experiment(PLAN, units, SRM_ALPHA, SRM_CONCENTRATION)
    assert result.srm_mismatch and result.outcome == "keep_champion"
    assert "sample ratio mismatch: control 3300, treatment 2700" in result.reasons[0]


def test_no_effect_keeps_running() -> None:
    rng = np.random.default_rng(14)
    units = _units(
        rng,
        {"control": 3000, "treatment": 3000},
        {"control": 0.2, "treatment": 0.2},
        dict.fromkeys(("control", "treatment"), 800.0),
    )
    result = analyse_experiment(PLAN, units, SRM_ALPHA, SRM_CONCENTRATION)
    assert result.outcome == "keep_running"
    assert "not yet decided" in result.reasons[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.6}]}, "add up to 1.1, not 1"),
        ({"variants": [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]}, "variant names repeat"),
        ({"primary_metric": "clicks"}, "feedback.experiments.0.primary_metric"),
        ({"minimum_detectable_effect": 0}, "feedback.experiments.0.minimum_detectable_effect"),
    ],
)
def test_bad_experiments_are_refused_naming_the_field(change: dict[str, object], message: str) -> None:
    experiment = {
        "name": "x",
        "variants": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}],
        "primary_metric": "positive_feedback",
        "minimum_detectable_effect": 0.03,
        "start_date": "2026-11-01",
    } | change
    text = yaml.safe_dump(
        {
            "evaluation_plan": {"run_entries": ["simple1"], "models": ["simple/model1"]},
            "feedback": {"experiments": [experiment]},
        }
    )
    with pytest.raises(PolicyError, match=re.escape(message)):
        parse_policy(text, "policy.yaml")
