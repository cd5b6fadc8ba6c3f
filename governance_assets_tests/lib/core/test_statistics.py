"""Paired statistics for quality gates, checked against scipy and statsmodels on the same data."""

from typing import Literal

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from governance_assets.lib.core import statistics as st


def paired_table(both_right: int, b: int, c: int, both_wrong: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """0/1 baseline and candidate arrays, shuffled, with the given 2×2 cell counts."""
    baseline = np.array([1] * both_right + [1] * b + [0] * c + [0] * both_wrong, dtype=float)
    candidate = np.array([1] * both_right + [0] * b + [1] * c + [0] * both_wrong, dtype=float)
    order = np.random.default_rng(seed).permutation(baseline.size)
    return baseline[order], candidate[order]


# --- McNemar -----------------------------------------------------------------------------------

HAND_TABLES = [
    (40, 0, 0, 10),  # b + c == 0
    (30, 7, 7, 6),  # b == c
    (20, 1, 1, 0),  # b == c == 1
    (0, 30, 0, 0),  # every instance a drop
    (50, 0, 45, 5),  # very unbalanced, improvement
    (10, 1, 20, 3),
    (60, 12, 3, 25),
    (5, 250, 180, 5),  # large b + c
]


@pytest.mark.parametrize(("both_right", "b", "c", "both_wrong"), HAND_TABLES)
def test_mcnemar_matches_statsmodels_and_scipy(both_right: int, b: int, c: int, both_wrong: int) -> None:
    baseline, candidate = paired_table(both_right, b, c, both_wrong)
    result = st.mcnemar_exact(baseline, candidate)
    assert result.test == "mcnemar_exact"
    assert result.discordant == (b, c)
    assert result.n == both_right + b + c + both_wrong
    assert result.difference == (c - b) / result.n
    # Reference: statsmodels exact McNemar on the 2×2 table (rows baseline right/wrong,
    # columns candidate right/wrong).
    table = [[both_right, b], [c, both_wrong]]
    assert result.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12, abs=0)
    if b + c == 0:
        assert result.p_value == 1.0  # binomtest refuses n = 0; no discordant pair, no evidence
    else:
        # Reference: scipy's two-sided exact binomial test of b successes in b + c at p = 1/2.
        expected = stats.binomtest(b, b + c, 0.5).pvalue
        assert result.p_value == pytest.approx(expected, rel=1e-9, abs=1e-300)
    if b == c:
        assert result.p_value == 1.0


def test_mcnemar_matches_references_on_random_tables() -> None:
    rng = np.random.default_rng(7)
    for _ in range(40):
        cells = rng.multinomial(int(rng.integers(1, 300)), rng.dirichlet(np.ones(4)))
        both_right, b, c, both_wrong = (int(x) for x in cells)
        baseline, candidate = paired_table(both_right, b, c, both_wrong, seed=int(rng.integers(99)))
        result = st.mcnemar_exact(baseline, candidate)
        assert result.discordant == (b, c)
        # References: statsmodels exact McNemar and scipy binomtest on the same counts.
        table = [[both_right, b], [c, both_wrong]]
        assert result.p_value == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)
        if b + c:
            assert result.p_value == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9, abs=1e-300)


def test_mcnemar_interval_is_agresti_min() -> None:
    baseline, candidate = paired_table(60, 12, 3, 25)
    result = st.mcnemar_exact(baseline, candidate, confidence=0.9)
    # Reference, by hand: n = 100, b = 12, c = 3; add 1/2 to each cell -> n' = 102,
    # p12 = 12.5/102, p21 = 3.5/102, d = p21 - p12 = -9/102,
    # se = sqrt((p12 + p21 - d²)/n') and z = Φ⁻¹(0.95) = 1.6448536269514722.
    n_adj = 102.0
    p12, p21 = 12.5 / n_adj, 3.5 / n_adj
    centre = p21 - p12
    se = np.sqrt((p12 + p21 - centre**2) / n_adj)
    z = 1.6448536269514722
    assert result.ci_low == pytest.approx(centre - z * se, rel=1e-12)
    assert result.ci_high == pytest.approx(centre + z * se, rel=1e-12)
    assert result.ci_low < result.difference < result.ci_high


def test_mcnemar_interval_edge_cases_stay_in_bounds() -> None:
    none_discordant = st.mcnemar_exact(*paired_table(40, 0, 0, 10))
    assert none_discordant.ci_low == pytest.approx(-none_discordant.ci_high)
    assert -1.0 <= none_discordant.ci_low < 0.0 < none_discordant.ci_high <= 1.0
    all_drops = st.mcnemar_exact(np.ones(3), np.zeros(3))
    assert all_drops.difference == -1.0
    assert all_drops.ci_low == -1.0  # clipped
    assert all_drops.ci_high < 0.0


# --- Holm and Benjamini–Hochberg ---------------------------------------------------------------


def random_p_vectors() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    vectors = [np.array([0.03]), np.array([0.0]), np.array([1.0]), np.array([0.2, 0.01])]
    for size in (3, 10, 57, 400):
        vectors.append(rng.uniform(size=size))
        vectors.append(rng.beta(0.3, 4.0, size=size))  # many small p-values
        vectors.append(np.round(rng.uniform(size=size), 1))  # ties
    vectors.append(np.array([0.01, 0.01, 0.01, 0.04, 0.04, 0.5, 0.0, 1.0]))
    return vectors


@pytest.mark.parametrize(("method", "statsmodels_method"), [("holm", "holm"), ("bh", "fdr_bh")])
def test_adjusted_p_values_match_statsmodels(method: Literal["holm", "bh"], statsmodels_method: str) -> None:
    for p in random_p_vectors():
        adjusted = st.adjust_p_values(p, method)
        # Reference: statsmodels multipletests on the same vector, same (input) order.
        expected = multipletests(p, alpha=0.05, method=statsmodels_method)[1]
        np.testing.assert_allclose(adjusted, expected, rtol=1e-12, atol=0)
        order = np.argsort(p, kind="stable")
        assert np.all(np.diff(adjusted[order]) >= 0)  # monotone in the raw p-values
        assert np.all(adjusted <= 1.0)
        assert np.all(adjusted >= p)


def test_adjusted_p_values_edge_cases() -> None:
    for method in ("holm", "bh"):
        empty = st.adjust_p_values([], method)
        assert isinstance(empty, np.ndarray)
        assert empty.shape == (0,)
    with pytest.raises(ValueError, match="'holm' or 'bh'"):
        st.adjust_p_values([0.1], "bonferroni")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        st.adjust_p_values([0.1, 1.5], "holm")
    with pytest.raises(ValueError, match="NaN"):
        st.adjust_p_values([0.1, np.nan], "bh")


# --- Paired bootstrap --------------------------------------------------------------------------


def unit_variance_pair(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    baseline = rng.normal(size=n)
    return baseline, baseline + shift + rng.normal(size=n)


def scipy_percentile_ci(
    baseline: np.ndarray, candidate: np.ndarray, confidence: float, resamples: int, seed: int
) -> tuple[float, float]:
    """Reference: scipy.stats.bootstrap, paired percentile interval of mean(candidate - baseline)."""
    result = stats.bootstrap(
        (baseline, candidate),
        statistic=lambda x, y, axis: np.mean(y - x, axis=axis),
        paired=True,
        vectorized=True,
        method="percentile",
        confidence_level=confidence,
        n_resamples=resamples,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@pytest.mark.parametrize(("n", "confidence", "seed"), [(100, 0.95, 0), (37, 0.9, 5), (5, 0.99, 3)])
def test_bootstrap_ci_reproduces_scipy_draws(n: int, confidence: float, seed: int) -> None:
    baseline, candidate = unit_variance_pair(n, -0.2, seed=100 + n)
    result = st.paired_bootstrap(baseline, candidate, confidence=confidence, resamples=4_000, seed=seed)
    # scipy draws its paired indices as np.random.default_rng(seed).integers(0, n, (B, n)), as
    # we do, so the intervals agree up to rounding of the means.
    low, high = scipy_percentile_ci(baseline, candidate, confidence, 4_000, seed)
    assert result.ci_low == pytest.approx(low, rel=1e-12, abs=1e-14)
    assert result.ci_high == pytest.approx(high, rel=1e-12, abs=1e-14)


def test_bootstrap_ci_agrees_with_scipy_on_independent_draws() -> None:
    baseline, candidate = unit_variance_pair(100, -0.1, seed=1)
    result = st.paired_bootstrap(baseline, candidate, resamples=20_000, seed=123)
    low, high = scipy_percentile_ci(baseline, candidate, 0.95, 20_000, seed=456)
    # Monte-Carlo error: the bootstrap SD of the mean is about 0.1 here, so each 2.5 % quantile
    # estimated from 20,000 draws has SD about sqrt(.025·.975/20000)/φ(1.96)·0.1 ≈ 0.002; the
    # difference of two independent estimates about 0.003. A 0.02 tolerance is > 6 SD.
    assert result.ci_low == pytest.approx(low, abs=0.02)
    assert result.ci_high == pytest.approx(high, abs=0.02)


def test_bootstrap_p_value_definition_by_brute_force() -> None:
    baseline, candidate = unit_variance_pair(30, -0.3, seed=11)
    result = st.paired_bootstrap(baseline, candidate, resamples=3_000, seed=4)
    # Reference: the documented definition on explicitly gathered resamples (same draws).
    indices = np.random.default_rng(4).integers(0, 30, size=(3_000, 30))
    boot = np.array([np.mean(candidate[i] - baseline[i]) for i in indices])
    expected = min(1.0, 2.0 * min(float(np.mean(boot <= 0)), float(np.mean(boot >= 0))))
    assert 0.01 < expected < 0.5  # an intermediate case
    assert result.p_value == pytest.approx(expected, abs=1e-12)


def test_bootstrap_p_value_counts_exact_zeros_on_both_sides() -> None:
    # Differences that are multiples of 0.1 (not exact in binary): many resamples sum to 0 in
    # exact arithmetic but to ±1e-17 in floating point.
    rng = np.random.default_rng(21)
    steps = rng.choice([-2, -1, 0, 1, 2], p=[0.25, 0.2, 0.2, 0.2, 0.15], size=12)
    baseline = rng.uniform(size=12).round(1)
    candidate = baseline + 0.1 * steps
    result = st.paired_bootstrap(baseline, candidate, resamples=5_000, seed=8)
    # Reference: the signs of the resampled means in exact integer arithmetic on the same draws
    # (np.round recovers the integer steps from the floating-point differences).
    exact_steps = np.round((candidate - baseline) * 10).astype(int)
    indices = np.random.default_rng(8).integers(0, 12, size=(5_000, 12))
    sums = exact_steps[indices].sum(axis=1)
    assert np.mean(sums == 0) > 0.05  # ties at 0 do occur
    expected = min(1.0, 2.0 * min(float(np.mean(sums <= 0)), float(np.mean(sums >= 0))))
    assert result.p_value == pytest.approx(expected, abs=1e-12)


def test_bootstrap_means_and_difference_are_exact() -> None:
    baseline, candidate = unit_variance_pair(100, 0.05, seed=2)
    result = st.paired_bootstrap(baseline, candidate, resamples=500)
    assert result.test == "paired_bootstrap"
    assert result.discordant is None
    assert result.n == 100
    # Reference: numpy on the same arrays.
    assert result.difference == float(np.mean(candidate - baseline))
    assert result.baseline_mean == float(np.mean(baseline))
    assert result.candidate_mean == float(np.mean(candidate))


def test_bootstrap_detects_a_clear_drop() -> None:
    rng = np.random.default_rng(3)
    baseline = rng.normal(size=100)
    candidate = baseline - 0.5 + rng.normal(scale=0.5, size=100)
    result = st.paired_bootstrap(baseline, candidate)
    assert result.p_value < 0.01
    assert result.ci_low < result.ci_high < 0.0
    assert result.ci_low < result.difference < result.ci_high


def test_bootstrap_no_difference() -> None:
    values = np.random.default_rng(4).normal(size=100)
    result = st.paired_bootstrap(values, values.copy())
    assert result.p_value == 1.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.difference == 0.0
    noisy = st.paired_bootstrap(*unit_variance_pair(100, 0.0, seed=8))
    assert noisy.p_value > 0.05
    assert noisy.ci_low < 0.0 < noisy.ci_high


def test_bootstrap_is_deterministic_per_seed() -> None:
    baseline, candidate = unit_variance_pair(50, -0.1, seed=6)
    first = st.paired_bootstrap(baseline, candidate, resamples=1_000, seed=1)
    assert st.paired_bootstrap(baseline, candidate, resamples=1_000, seed=1) == first
    assert st.paired_bootstrap(baseline, candidate, resamples=1_000, seed=2) != first


def assert_same_comparison(many: st.PairedComparison, single: st.PairedComparison) -> None:
    assert many.n == single.n
    assert many.test == single.test == "paired_bootstrap"
    assert many.difference == single.difference
    assert many.baseline_mean == single.baseline_mean
    assert many.candidate_mean == single.candidate_mean
    # Only the rounding of the batched matrix product can differ.
    assert many.ci_low == pytest.approx(single.ci_low, rel=1e-12, abs=1e-15)
    assert many.ci_high == pytest.approx(single.ci_high, rel=1e-12, abs=1e-15)
    assert many.p_value == single.p_value


def test_many_equals_single_for_2d_arrays() -> None:
    rng = np.random.default_rng(10)
    baseline = rng.normal(size=(30, 100))
    shifts = np.linspace(-0.4, 0.2, 30)[:, None]
    candidate = baseline + shifts + rng.normal(size=(30, 100))
    candidate[4] = baseline[4]  # no difference at all
    many = st.paired_bootstrap_many(baseline, candidate, resamples=2_000, seed=3)
    assert len(many) == 30
    for row in range(30):
        single = st.paired_bootstrap(baseline[row], candidate[row], resamples=2_000, seed=3)
        assert_same_comparison(many[row], single)
    assert many[4].p_value == 1.0


def test_many_equals_single_for_varying_lengths() -> None:
    pairs = [unit_variance_pair(n, -0.2, seed=n) for n in (100, 20, 100, 7, 20, 1)]
    many = st.paired_bootstrap_many(
        [b for b, _ in pairs], [c for _, c in pairs], confidence=0.9, resamples=1_500, seed=5
    )
    for (baseline, candidate), result in zip(pairs, many, strict=True):
        single = st.paired_bootstrap(baseline, candidate, confidence=0.9, resamples=1_500, seed=5)
        assert_same_comparison(result, single)
    assert st.paired_bootstrap_many([], []) == []


# --- compare_paired and is_binary --------------------------------------------------------------


def test_is_binary() -> None:
    assert st.is_binary([0, 1, 1, 0])
    assert st.is_binary(np.array([0.0, 1.0]))
    assert st.is_binary([True, False])
    assert st.is_binary([1, 1, 1])
    assert not st.is_binary([0, 0.5, 1])
    assert not st.is_binary([0, 1, 2])
    assert not st.is_binary([0, np.nan])


def test_compare_paired_picks_the_test() -> None:
    baseline, candidate = paired_table(50, 12, 3, 35)
    binary = st.compare_paired(baseline, candidate)
    assert binary == st.mcnemar_exact(baseline, candidate)
    assert st.compare_paired(baseline.astype(bool), candidate.astype(bool)).test == "mcnemar_exact"
    continuous_baseline, continuous_candidate = unit_variance_pair(100, -0.3, seed=12)
    continuous = st.compare_paired(continuous_baseline, continuous_candidate, resamples=1_000)
    assert continuous == st.paired_bootstrap(continuous_baseline, continuous_candidate, resamples=1_000)
    # One side binary, the other not: the bootstrap.
    mixed = st.compare_paired(baseline, np.clip(candidate - 0.25, 0, 1), resamples=500)
    assert mixed.test == "paired_bootstrap"


def test_compare_paired_many_keeps_order() -> None:
    binary = paired_table(50, 12, 3, 35)
    continuous = unit_variance_pair(100, -0.3, seed=12)
    short = unit_variance_pair(40, 0.1, seed=13)
    inputs = [binary, continuous, short, binary]
    results = st.compare_paired_many([b for b, _ in inputs], [c for _, c in inputs], resamples=1_000, seed=2)
    assert [r.test for r in results] == [
        "mcnemar_exact",
        "paired_bootstrap",
        "paired_bootstrap",
        "mcnemar_exact",
    ]
    for (baseline, candidate), result in zip(inputs, results, strict=True):
        single = st.compare_paired(baseline, candidate, resamples=1_000, seed=2)
        assert result.p_value == single.p_value
        assert result.ci_low == pytest.approx(single.ci_low, rel=1e-12, abs=1e-15)


# --- Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("function", [st.paired_bootstrap, st.mcnemar_exact, st.compare_paired])
def test_bad_input_raises_value_error(function: object) -> None:
    assert callable(function)
    with pytest.raises(ValueError, match="equal lengths"):
        function([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        function([], [])
    with pytest.raises(ValueError, match="candidate contains NaN at index 1"):
        function([0, 1, 1], [0, np.nan, 1])
    with pytest.raises(ValueError, match="infinite"):
        function([0, np.inf], [0, 1])
    with pytest.raises(ValueError, match="1-D"):
        function([[0, 1], [1, 0]], [[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="confidence"):
        function([0, 1], [1, 1], confidence=1.0)


def test_bad_input_specific_to_each_test() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        st.mcnemar_exact([0, 1, 0.5], [0, 1, 1])
    with pytest.raises(ValueError, match="resamples"):
        st.paired_bootstrap([0.1, 0.2], [0.3, 0.4], resamples=0)
    with pytest.raises(ValueError, match="same number of comparisons"):
        st.paired_bootstrap_many([[0.1, 0.2]], [[0.1, 0.2], [0.3, 0.4]])
    with pytest.raises(ValueError, match="comparison 1: baseline and candidate must have equal"):
        st.paired_bootstrap_many([[0.1, 0.2], [0.5]], [[0.1, 0.2], [0.3, 0.4]])
    with pytest.raises(ValueError, match="2-D"):
        st.paired_bootstrap_many(np.zeros(3), np.zeros(3))
