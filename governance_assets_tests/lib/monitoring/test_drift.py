"""Drift statistics, each checked against scipy, statsmodels or a formula written out here on the same data."""

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from statsmodels.stats.proportion import proportions_ztest

from governance_assets.lib.monitoring import drift as dr


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def with_nans(values: np.ndarray, seed: int = 0) -> np.ndarray:
    """`values` as floats with a NaN and ±inf inserted at random places (to be dropped)."""
    out = values.astype(np.float64)
    for missing in (np.nan, np.inf, -np.inf):
        out = np.insert(out, int(rng(seed).integers(0, out.size + 1)), missing)
    return out


# --- Kolmogorov–Smirnov ------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), [(1, 1), (7, 12), (50, 50), (300, 1000), (1000, 20_000)])
def test_ks_p_value_matches_scipy(n: int, m: int) -> None:
    reference = rng(1).normal(size=n)
    current = rng(2).normal(0.1, 1.2, size=m)
    expected = stats.ks_2samp(reference, current).pvalue
    assert dr.ks_p_value(reference, current) == pytest.approx(expected, rel=1e-12, abs=0)
    assert dr.ks_p_value(with_nans(reference), pd.Series(with_nans(current))) == pytest.approx(
        expected, rel=1e-12, abs=0
    )


# --- Wasserstein -------------------------------------------------------------------------------

SIZES = [
    (1, 1),
    (1, 9),
    (9, 1),
    (2, 3),
    (10, 10),
    (10, 30),
    (30, 10),
    (99, 100),
    (1000, 999),
    (1000, 7001),
    (4096, 512),
]


@pytest.mark.parametrize(("n", "m"), SIZES)
@pytest.mark.parametrize("data", ["continuous", "rounded", "integers"])
def test_normalized_wasserstein_matches_scipy(n: int, m: int, data: str) -> None:
    reference: np.ndarray = rng(n).normal(size=n) * 3 + 1
    current: np.ndarray = rng(m + 1).normal(0.3, 2.5, size=m)
    if data == "rounded":  # many ties inside and between the samples
        reference, current = np.round(reference), np.round(current)
    elif data == "integers":
        reference, current = rng(3).integers(0, 9, size=n), rng(4).integers(2, 12, size=m)
    std = float(np.std(reference))
    if std < 0.001:  # n = 1: constant reference, divided by Evidently's floor instead
        std = 0.001
    expected = stats.wasserstein_distance(reference, current) / std
    assert dr.normalized_wasserstein(reference, current) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_normalized_wasserstein_uses_population_std_and_drops_missing_values() -> None:
    reference = rng(5).lognormal(size=2000)
    current = rng(6).lognormal(0.2, size=3000)
    expected = stats.wasserstein_distance(reference, current) / np.std(reference, ddof=0)
    assert dr.normalized_wasserstein(with_nans(reference), with_nans(current, 1)) == pytest.approx(expected, rel=1e-9)
    assert dr.normalized_wasserstein(reference, current) != pytest.approx(
        stats.wasserstein_distance(reference, current) / np.std(reference, ddof=1), rel=1e-6
    )


def test_constant_reference_is_divided_by_evidently_floor() -> None:
    reference = np.full(2000, 3.0)
    assert dr.normalized_wasserstein(reference, np.full(500, 3.0)) == 0.0
    current = np.full(500, 3.0002)
    assert dr.normalized_wasserstein(reference, current) == pytest.approx(0.0002 / 0.001, rel=1e-9)
    result = dr.feature_drift("latency", reference, np.append(current, 3.0), method="wasserstein")
    assert result.drifted
    assert "reference std 0 < 0.001" in result.detail


# --- chi-squared and z -------------------------------------------------------------------------


def hand_chisquare(reference: list[str], current: list[str]) -> float:
    """Evidently's recipe: expected = reference share of each category × current total."""
    keys = sorted(set(reference) | set(current))
    observed = np.array([current.count(k) for k in keys], dtype=float)
    expected = np.array([reference.count(k) for k in keys], dtype=float) / len(reference) * len(current)
    return float(stats.chisquare(observed, expected).pvalue)


@pytest.mark.parametrize("seed", range(5))
def test_chisquare_p_value_matches_scipy(seed: int) -> None:
    generator = rng(seed)
    reference = list(generator.choice(["en", "de", "fr", "ja"], size=400, p=[0.5, 0.2, 0.2, 0.1]))
    current = list(generator.choice(["en", "de", "fr", "ja"], size=250, p=[0.4, 0.3, 0.2, 0.1]))
    expected = hand_chisquare(reference, current)
    assert dr.chisquare_p_value(reference, current) == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert dr.chisquare_p_value(pd.Series([*reference, None]), np.array([*current, np.nan], dtype=object)) == (
        pytest.approx(expected, rel=1e-12, abs=1e-300)
    )


def test_chisquare_new_category_and_single_category() -> None:
    assert dr.chisquare_p_value(["a", "b"] * 50, ["a", "b", "c"] * 30) == 0.0  # expected count 0
    assert dr.chisquare_p_value(["a"] * 50, ["a"] * 20) == 1.0  # scipy: NaN (0 degrees of freedom)


@pytest.mark.parametrize(
    ("reference", "current"),
    [
        (["yes"] * 120 + ["no"] * 80, ["yes"] * 90 + ["no"] * 110),
        ([True] * 10 + [False] * 490, [True] * 30 + [False] * 470),
        ([0.0] * 300 + [1.0] * 200, [0.0] * 40 + [1.0] * 60),
        (["a"] * 100, ["b"] * 30),  # each side constant, different values
        (["a"] * 100, ["a"] * 60 + ["b"] * 3),
    ],
)
def test_z_proportion_p_value_matches_statsmodels(reference: list[Any], current: list[Any]) -> None:
    # Evidently: the values equal to the smallest category are 0, the others 1; p is two-sided.
    first = min(set(reference) | set(current))
    count = [sum(x != first for x in reference), sum(x != first for x in current)]
    nobs = [len(reference), len(current)]
    _, expected = proportions_ztest(count, nobs, alternative="two-sided")
    assert dr.z_proportion_p_value(reference, current) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_z_identical_constant_sides_have_p_value_one() -> None:
    assert dr.z_proportion_p_value(["x"] * 10, ["x"] * 7) == 1.0


# --- Jensen–Shannon ----------------------------------------------------------------------------


def sturges_shares(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Evidently's numerical bins: np.histogram_bin_edges of the concatenation, bins="sturges"."""
    edges = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
    return np.histogram(reference, edges)[0] / reference.size, np.histogram(current, edges)[0] / current.size


def value_shares(reference: list[Any], current: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    keys = list(dict.fromkeys([*reference, *current]))
    return (
        np.array([reference.count(k) for k in keys]) / len(reference),
        np.array([current.count(k) for k in keys]) / len(current),
    )


@pytest.mark.parametrize(("n", "m"), [(1500, 4000), (30, 100_000), (5000, 700)])
def test_jensen_shannon_numerical_matches_scipy_on_sturges_histograms(n: int, m: int) -> None:
    reference = rng(7).gamma(2.0, 3.0, size=n)
    current = rng(8).gamma(2.2, 3.0, size=m) + 0.5
    p, q = sturges_shares(reference, current)
    assert p.size == math.ceil(math.log2(n + m) + 1)
    expected = jensenshannon(p, q)  # Evidently's default: natural logarithm
    assert dr.jensen_shannon_distance(reference, current, "numerical") == pytest.approx(expected, rel=1e-12)
    assert dr.jensen_shannon_distance(with_nans(reference), with_nans(current)) == pytest.approx(expected, rel=1e-12)
    assert dr.jensen_shannon_distance(reference, current, "numerical", base=2) == pytest.approx(
        jensenshannon(p, q, base=2), rel=1e-12
    )


def test_jensen_shannon_integer_columns_use_width_one_bins_like_numpy() -> None:
    # 21 distinct integers over a range of 20 and 603,000 values: Sturges' width 20 / (log2(n) + 1)
    # is below 1 (20.2 bins); numpy uses width 1 for integers, 20 bins.
    reference = rng(9).integers(0, 21, size=3000)
    current = rng(10).integers(0, 21, size=600_000)
    p, q = sturges_shares(reference, current)
    assert p.size == 20
    assert dr.jensen_shannon_distance(reference, current, "numerical") == pytest.approx(jensenshannon(p, q), rel=1e-12)


def test_jensen_shannon_few_distinct_numbers_and_categories_use_value_frequencies() -> None:
    # A numerical reference with ≤ 20 distinct values gets one bin per value (Evidently's rule).
    reference = list(rng(11).integers(0, 15, size=2000).astype(float))
    current = list(rng(12).integers(3, 18, size=1500).astype(float))
    p, q = value_shares(reference, current)
    assert dr.jensen_shannon_distance(reference, current, "numerical") == pytest.approx(jensenshannon(p, q), rel=1e-12)
    models = list(rng(13).choice(["gpt", "llama", "mistral"], size=3000))
    later = list(rng(14).choice(["gpt", "llama", "qwen"], size=2000))
    p, q = value_shares(models, later)
    assert dr.jensen_shannon_distance(models, later) == pytest.approx(jensenshannon(p, q), rel=1e-12)
    assert dr.jensen_shannon_distance(models, later, base=2) == pytest.approx(jensenshannon(p, q, base=2), rel=1e-12)


# --- PSI ---------------------------------------------------------------------------------------


def hand_fill(shares: np.ndarray) -> np.ndarray:
    shares = shares.astype(float).copy()
    smallest = shares[shares > 0].min()
    shares[shares == 0] = smallest / 1e6 if smallest <= 0.0001 else 0.0001
    return shares


def hand_psi(ref_shares: np.ndarray, cur_shares: np.ndarray) -> float:
    r, c = hand_fill(ref_shares), hand_fill(cur_shares)
    return float(sum((ri - ci) * math.log(ri / ci) for ri, ci in zip(r, c, strict=True)))


def test_psi_numerical_default_bins_match_hand_formula() -> None:
    reference = rng(15).normal(size=4000)
    current = np.concatenate([rng(16).normal(0.4, 1.0, size=3000), [9.0]])  # an outlier: empty bins
    p, q = sturges_shares(reference, current)
    assert (p == 0).any()
    assert dr.psi(reference, current, "numerical") == pytest.approx(hand_psi(p, q), rel=1e-12)


@pytest.mark.parametrize("bins", [1, 4, 10])
def test_psi_reference_quantile_bins_match_hand_formula(bins: int) -> None:
    reference = rng(17).exponential(size=1000)
    current = rng(18).exponential(1.3, size=800) - 0.1
    cuts = sorted(set(np.quantile(reference, [k / bins for k in range(1, bins)])))
    bounds = [-math.inf, *cuts, math.inf]

    def shares(values: np.ndarray) -> np.ndarray:
        return np.array([sum(lo <= x < hi for x in values) for lo, hi in itertools.pairwise(bounds)]) / len(values)

    assert dr.psi(reference, current, "numerical", bins=bins) == pytest.approx(
        hand_psi(shares(reference), shares(current)), rel=1e-12, abs=1e-15
    )


def test_psi_categorical_matches_hand_formula_with_tiny_shares() -> None:
    reference = ["en"] * 99_990 + ["de"] * 10  # smallest share 0.0001: empty bins get 1e-10
    current = ["en"] * 900 + ["fr"] * 100
    p, q = value_shares(reference, current)
    assert dr.psi(reference, current) == pytest.approx(hand_psi(p, q), rel=1e-12)
    assert hand_fill(p)[2] == pytest.approx(1e-10)


def test_psi_rejects_bad_bins() -> None:
    with pytest.raises(ValueError, match="bins"):
        dr.psi([1.0, 2.0], [1.0], "numerical", bins=0)


# --- default selection -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "reference_size", "n_unique", "method", "threshold"),
    [
        ("numerical", 1000, 800, "ks", 0.05),
        ("numerical", 1001, 800, "wasserstein", 0.1),
        ("numerical", 500, 5, "chisquare", 0.05),  # ≤ 5 distinct: tested as categorical
        ("numerical", 500, 2, "z", 0.05),
        ("numerical", 5000, 5, "jensenshannon", 0.1),
        ("numerical", 5000, 6, "wasserstein", 0.1),
        ("categorical", 500, 2, "z", 0.05),
        ("categorical", 500, 3, "chisquare", 0.05),
        ("categorical", 1000, 1, "z", 0.05),
        ("categorical", 5000, 2, "jensenshannon", 0.1),
        ("categorical", 5000, 40, "jensenshannon", 0.1),
    ],
)
def test_default_method_and_threshold_follow_evidently(
    kind: dr.Kind, reference_size: int, n_unique: int, method: dr.Method, threshold: float
) -> None:
    assert dr.default_method(kind, reference_size, n_unique) == method
    assert dr.default_threshold(method) == threshold


@pytest.mark.parametrize(
    ("reference", "current", "kind", "method"),
    [
        (rng(20).normal(size=1000), rng(21).normal(size=50), "numerical", "ks"),
        (rng(20).normal(size=1001), rng(21).normal(size=50), "numerical", "wasserstein"),
        (
            rng(22).integers(0, 5, size=800).astype(float),
            rng(23).integers(0, 5, size=99).astype(float),
            "categorical",
            "chisquare",
        ),
        (
            rng(22).integers(0, 2, size=800).astype(float),
            rng(23).integers(0, 2, size=99).astype(float),
            "categorical",
            "z",
        ),
        (
            rng(22).integers(0, 5, size=8000).astype(float),
            rng(23).integers(0, 5, size=99).astype(float),
            "categorical",
            "jensenshannon",
        ),
        (rng(24).choice(["yes", "no"], size=500), rng(25).choice(["yes", "no"], size=500), "categorical", "z"),
        (
            rng(24).choice(["en", "de", "fr"], size=500),
            rng(25).choice(["en", "de"], size=500),
            "categorical",
            "chisquare",
        ),
        (
            rng(24).choice(["en", "de", "fr"], size=5000),
            rng(25).choice(["en", "de"], size=5),
            "categorical",
            "jensenshannon",
        ),
        (rng(26).random(size=600) < 0.1, rng(27).random(size=600) < 0.1, "categorical", "z"),
    ],
)
def test_feature_drift_chooses_evidently_default(
    reference: np.ndarray, current: np.ndarray, kind: dr.Kind, method: dr.Method
) -> None:
    result = dr.feature_drift("f", reference, current)
    assert (result.kind, result.method, result.threshold) == (kind, method, dr.default_threshold(method))
    assert (result.reference_size, result.current_size) == (len(reference), len(current))


def test_feature_kind_rules() -> None:
    assert dr.feature_kind(np.arange(6.0)) == "numerical"
    assert dr.feature_kind(np.arange(5.0)) == "categorical"
    # Reference and current together decide for float columns…
    assert dr.feature_kind(np.arange(5.0), np.arange(3.0, 9.0)) == "numerical"
    # …but an integer column with ≤ 5 distinct reference values is categorical (Evidently's typing).
    assert dr.feature_kind(np.arange(5), np.arange(3, 9)) == "categorical"
    assert dr.feature_kind(pd.Series([1, 2, None, 4, 5, 6, 7], dtype="Int64")) == "numerical"
    assert dr.feature_kind(np.array([True, False] * 10)) == "categorical"
    assert dr.feature_kind(pd.Series(list("abcdefgh"), dtype="string")) == "categorical"
    assert dr.feature_kind(pd.Series([1.5, 2.5] * 5, dtype="category")) == "categorical"
    # More than 5 distinct only after counting NaN: still ≤ 5 real values.
    assert dr.feature_kind([1.0, 2.0, 3.0, 4.0, 5.0, np.nan, np.inf]) == "categorical"


def test_bad_kind_method_or_threshold_are_rejected() -> None:
    with pytest.raises(ValueError, match="kind"):
        dr.default_method("ordinal", 10, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        dr.default_threshold("t-test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        dr.feature_drift("f", [1.0], [1.0], method="t-test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="numeric"):
        dr.feature_drift("f", ["a", "b"], ["a"], method="ks")
    with pytest.raises(ValueError, match="threshold"):
        dr.feature_drift("f", [1.0, 2.0], [1.0], threshold=math.nan)


# --- drift decisions ---------------------------------------------------------------------------


def test_shifted_normal_drifts_identical_distribution_does_not() -> None:
    reference = rng(30).normal(10.0, 2.0, size=5000)
    shifted = rng(31).normal(11.0, 2.0, size=5000)  # +0.5 sd
    same = rng(32).normal(10.0, 2.0, size=5000)
    drifted = dr.feature_drift("prompt_tokens", reference, shifted)
    assert (drifted.method, drifted.drifted) == ("wasserstein", True)
    assert drifted.statistic == pytest.approx(0.5, abs=0.05)
    assert drifted.detail.startswith("distance=")
    stable = dr.feature_drift("prompt_tokens", reference, same)
    assert (stable.method, stable.drifted) == ("wasserstein", False)
    assert stable.statistic < 0.1
    # Small reference: KS.
    assert dr.feature_drift("x", reference[:800], shifted[:800]).drifted
    assert not dr.feature_drift("x", reference[:800], same[:800]).drifted
    binned = {  # chi-squared on rounded values, z on "above the reference mean"
        "chisquare": (np.round(reference), np.round(shifted), np.round(same)),
        "z": (reference > 10.0, shifted > 10.0, same > 10.0),
    }
    for method in dr.METHODS:  # every method agrees on this pair
        ref, cur, cur_same = binned.get(method, (reference, shifted, same))
        assert dr.feature_drift("x", ref, cur, method=method).drifted, method
        assert not dr.feature_drift("x", ref, cur_same, method=method).drifted, method


def test_threshold_comparisons_follow_evidently() -> None:
    reference, current = rng(33).normal(size=300), rng(34).normal(0.2, size=300)
    p = dr.ks_p_value(reference, current)
    assert dr.feature_drift("x", reference, current, threshold=p).drifted  # KS: p ≤ threshold
    categories, later = ["a", "b", "c"] * 100, ["a", "b", "c", "c"] * 60
    p = dr.chisquare_p_value(categories, later)
    assert not dr.feature_drift("x", categories, later, threshold=p).drifted  # chi-squared: p < threshold
    reference = rng(35).normal(size=2000)
    distance = dr.normalized_wasserstein(reference, reference + 0.25)
    assert dr.feature_drift("x", reference, reference + 0.25, threshold=distance).drifted  # distance ≥ threshold


@pytest.mark.parametrize(
    ("reference", "current", "why"),
    [
        ([np.nan, None, np.nan], [1.0, 2.0], "reference empty"),
        ([1.0, 2.0, 3.0], [np.nan, np.inf], "current empty"),
        ([], [], "reference and current empty"),
        (pd.Series([None, None], dtype=object), ["a", "b"], "reference empty"),
    ],
)
def test_empty_side_is_reported_not_raised(reference: list[Any], current: list[Any], why: str) -> None:
    result = dr.feature_drift("f", reference, current)
    assert not result.drifted
    assert math.isnan(result.statistic)
    assert result.detail.startswith("no data: ") and why in result.detail


def test_primitives_refuse_empty_sides() -> None:
    with pytest.raises(ValueError, match="no values"):
        dr.normalized_wasserstein([np.nan], [1.0])


def test_dataset_share_rule_at_exactly_half() -> None:
    generator = rng(40)
    reference = pd.DataFrame({f"f{k}": generator.normal(size=3000) for k in range(4)})
    current = pd.DataFrame({f"f{k}": generator.normal(1.0 if k < 2 else 0.0, size=2000) for k in range(4)})
    result = dr.dataset_drift(reference, current)
    assert [f.drifted for f in result.features] == [True, True, False, False]
    assert (result.drifted_share, result.share_threshold, result.drifted) == (0.5, 0.5, True)
    assert not dr.dataset_drift(reference, current, share_threshold=0.51).drifted
    assert dr.dataset_drift(reference, current, columns=["f0", "f2", "f3"]).drifted_share == pytest.approx(1 / 3)
    # A policy threshold turns f2 into "drifted" (any distance ≥ 0) and a method override is honoured.
    overridden = dr.dataset_drift(
        reference, current, thresholds={"f2": 0.0}, methods={"f3": "psi"}, share_threshold=0.75
    )
    assert [f.drifted for f in overridden.features] == [True, True, True, False]
    assert overridden.features[3].method == "psi" and overridden.features[3].threshold == 0.1
    assert overridden.drifted


def test_dataset_drift_mixed_columns_missing_data_and_threads() -> None:
    generator = rng(41)
    n_ref, n_cur = 4000, 6000
    reference = pd.DataFrame(
        {
            "completion_length": generator.lognormal(5, 1, size=n_ref),
            "latency_ms": generator.gamma(2, 300, size=n_ref),
            "refused": generator.random(size=n_ref) < 0.05,
            "model": generator.choice(["gpt", "llama"], size=n_ref),
            "language": pd.Series(generator.choice(["en", "de", "ja"], size=n_ref), dtype="category"),
            "pii_rate": np.full(n_ref, np.nan),
        }
    )
    current = pd.DataFrame(
        {
            "completion_length": generator.lognormal(5.6, 1, size=n_cur),
            "latency_ms": generator.gamma(2, 300, size=n_cur),
            "refused": generator.random(size=n_cur) < 0.3,
            "model": generator.choice(["gpt", "llama"], size=n_cur),
            "language": generator.choice(["en", "de", "ja"], size=n_cur),
            "pii_rate": generator.random(size=n_cur),
        }
    )
    serial = dr.dataset_drift(reference, current, workers=1)
    threaded = dr.dataset_drift(reference, current, workers=4)
    assert serial == threaded
    by_name = {f.feature: f for f in serial.features}
    assert [(f.method, f.drifted) for f in serial.features] == [
        ("wasserstein", True),
        ("wasserstein", False),
        ("jensenshannon", True),
        ("jensenshannon", False),
        ("jensenshannon", False),
        ("ks", False),  # no reference values: the ≤ 1000 rule
    ]
    assert by_name["pii_rate"].detail.startswith("no data")
    assert serial.drifted_share == pytest.approx(2 / 5)  # pii_rate is not tested
    assert not serial.drifted

    missing = dr.dataset_drift(reference, current.drop(columns=["model"]), columns=["model", "refused"])
    assert missing.features[0].detail == "no data: column missing from current; not tested"
    assert (missing.drifted_share, missing.drifted) == (1.0, True)
    with pytest.raises(ValueError, match="not compared"):
        dr.dataset_drift(reference, current, columns=["model"], methods={"modle": "z"})
    with pytest.raises(KeyError, match="neither"):
        dr.dataset_drift(reference, current, columns=["model", "temperature"])
    with pytest.raises(ValueError, match="repeats"):
        dr.dataset_drift(pd.concat([reference, reference["model"]], axis=1), current, columns=["model"])
    numbered = dr.dataset_drift(reference.set_axis(range(6), axis=1), current.set_axis(range(6), axis=1))
    assert [f.feature for f in numbered.features] == [str(k) for k in range(6)]
    assert [f.statistic for f in numbered.features[:5]] == [f.statistic for f in serial.features[:5]]
    empty = dr.dataset_drift(reference, current, columns=[])
    assert (empty.features, empty.drifted_share, empty.drifted) == ([], 0.0, False)


# --- column types as Evidently's Dataset infers them ----------------------------------------------
# Expected types from evidently/core/datasets.py `infer_column_type` (Evidently 0.7.21); the drift
# benchmark (bench/drift_vs_evidently.py, "evidently-inferred" mode) runs Evidently itself on them.


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([1.5, 2.5, np.nan], "float64", "numerical"),
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10] * 3, "int64", "categorical"),  # ≤ 10 distinct integers
        (list(range(11)), "int64", "numerical"),
        ([1, 2, None, 4], "Int64", "unknown"),  # nullable integers: no drift type
        ([True, False, None, True], "object", "unknown"),  # booleans with missing values
        ([True, False, True], "bool", "categorical"),
        ([None, None, None], "object", "unknown"),  # all missing
        (["a", "b", "a", "a"], "object", "categorical"),
        (["a", "b", "c", "a"], "object", "text"),  # 3 distinct of 4: more than half
        (["a", "b", "a", "a"], "string", "categorical"),
        (pd.to_datetime(["2026-01-01", "2026-01-02"]), None, "datetime"),
    ],
)
def test_column_types_are_the_ones_evidently_infers(values: Any, dtype: str | None, expected: str) -> None:
    column = pd.Series(values, dtype=dtype) if dtype else pd.Series(values)
    assert dr.evidently_column_type(column) == expected


def test_found_low_cardinality_integers_are_tested_as_evidently_types_them() -> None:
    """Found: integers with 6–10 distinct values were numerical here (KS) and categorical in
    Evidently (chi-square), and verdicts flipped. Now the kind is Evidently's by default."""
    rng = np.random.default_rng(8)
    reference = pd.DataFrame({"stars": rng.integers(1, 9, 500)})
    current = pd.DataFrame({"stars": rng.integers(1, 9, 400)})
    [feature] = dr.dataset_drift(reference, current).features
    assert (feature.kind, feature.method) == ("categorical", "chisquare")
    [legacy] = dr.dataset_drift(reference, current, kinds={"stars": "numerical"}).features
    assert (legacy.kind, legacy.method) == ("numerical", "ks")


def test_columns_evidently_does_not_test_are_reported_as_no_data_unless_given_a_kind() -> None:
    reference = pd.DataFrame(
        {
            "retries": pd.Series([0, 1, None, 2] * 50, dtype="Int64"),
            "thumbs_up": pd.Series([True, False, None, True] * 50, dtype="object"),
            "nothing": pd.Series([None] * 200, dtype="object"),
            "nothing_float": np.full(200, np.nan),
            "latency": np.linspace(1, 2, 200),
        }
    )
    current = reference.copy()
    result = dr.dataset_drift(reference, current)
    by_name = {f.feature: f for f in result.features}
    for name in ("retries", "thumbs_up", "nothing", "nothing_float"):
        feature = by_name[name]
        assert not feature.drifted and math.isnan(feature.statistic), name
        assert feature.detail.startswith("no data"), feature.detail
        assert feature.reference_size == 0 or feature.current_size == 0  # outside the share
    assert "all missing" in by_name["nothing"].detail
    assert "monitoring.drift.kinds" in by_name["retries"].detail
    assert result.drifted_share == 0.0 and [f.feature for f in result.features if f.current_size] == ["latency"]

    given = dr.dataset_drift(reference, current, kinds={"retries": "categorical", "thumbs_up": "categorical"})
    tested = {f.feature: f for f in given.features if f.current_size}
    assert tested["retries"].method == "chisquare" and tested["retries"].current_size == 150  # missing dropped
    assert tested["thumbs_up"].statistic == 1.0 and not tested["thumbs_up"].drifted


def test_a_kind_that_does_not_fit_the_column_is_an_error_naming_it() -> None:
    frame = pd.DataFrame({"segment": [f"s{i}" for i in range(20)]})
    with pytest.raises(ValueError, match=r"column 'segment'.*numeric"):
        dr.dataset_drift(frame, frame, kinds={"segment": "numerical"})
    with pytest.raises(ValueError, match="kinds"):
        dr.dataset_drift(frame, frame, kinds={"other": "numerical"})
