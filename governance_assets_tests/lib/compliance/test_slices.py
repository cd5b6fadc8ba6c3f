"""Failure slices: tests against scipy, a null simulation for the family-wise error, real suites."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from governance_assets.lib.compliance import fairness, slices
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.gates.evaluation import load_suite_tables
from governance_assets.lib.helm import tidy
from governance_assets_tests.conftest import SAFETY_ROOT
from governance_assets_tests.lib.compliance.helm_probe import run_probe_suite


def _synthetic(rng: np.random.Generator, n: int, effect: float) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "metric": "exact_match",
            "model": rng.choice(["m1", "m2", "m3"], n),
            "scenario": rng.choice(["s1", "s2", "s3", "s4"], n),
            "split": "test",
            "sub_split": rng.choice(["a", "b"], n),
            "perturbation": rng.choice(["none", "typos", "lower"], n),
            "reference": rng.choice(["x", "y", "z", "w", "v"], n),
            "input_length": rng.choice(["short", "medium", "long", "very long"], n),
        }
    )
    rate = np.where(frame["perturbation"] == "typos", 0.7 - effect, 0.7)
    frame["value"] = (rng.random(n) < rate).astype(float)
    return frame


def test_slice_tests_equal_scipy_and_the_planted_slice_ranks_first() -> None:
    frame = _synthetic(np.random.default_rng(0), 600, effect=0.4)
    ranked = slices.rank_slices(frame, min_support=20, alpha=0.05)
    top = ranked.iloc[0]
    assert (top["feature"], top["value"], bool(top["significant"])) == ("perturbation", "typos", True)
    inside = frame[frame["perturbation"] == "typos"]["value"]
    outside = frame[frame["perturbation"] != "typos"]["value"]
    table = [[inside.sum(), len(inside) - inside.sum()], [outside.sum(), len(outside) - outside.sum()]]
    assert top["p_value"] == pytest.approx(stats.fisher_exact(table).pvalue)
    assert top["gap"] == pytest.approx(inside.mean() - outside.mean())
    assert top["failures_explained"] == pytest.approx((outside.mean() - inside.mean()) * len(inside))
    assert ranked["significant"].sum() <= 3  # typos, and at most the complementary none/lower slices
    assert (ranked["support"] >= 20).all()


def test_family_wise_false_alarm_rate_under_the_null_is_at_most_alpha() -> None:
    rng = np.random.default_rng(1)
    repetitions, alpha = 300, 0.05
    alarms = sum(
        bool(slices.rank_slices(_synthetic(rng, 300, effect=0.0), min_support=10, alpha=alpha)["significant"].any())
        for _ in range(repetitions)
    )
    rate = alarms / repetitions
    print(f"slices: family-wise false alarms under the null {rate:.4f} (alpha {alpha}, {repetitions} repetitions)")
    assert rate <= alpha + 2 * np.sqrt(alpha * (1 - alpha) / repetitions)


def test_continuous_metrics_use_mann_whitney() -> None:
    rng = np.random.default_rng(2)
    frame = _synthetic(rng, 200, effect=0.0)
    frame["value"] = rng.normal(0.5, 0.1, 200) - 0.2 * (frame["model"] == "m2")
    ranked = slices.rank_slices(frame, min_support=10, alpha=0.05)
    [m2] = ranked[(ranked["feature"] == "model") & (ranked["value"] == "m2")].to_dict("records")
    inside, outside = frame[frame["model"] == "m2"]["value"], frame[frame["model"] != "m2"]["value"]
    assert m2["test"] == "mann_whitney" and m2["significant"]
    assert m2["p_value"] == pytest.approx(stats.mannwhitneyu(inside, outside, alternative="two-sided").pvalue)


@pytest.mark.integration
def test_slices_of_a_real_perturbation_suite_find_the_typos(tmp_path_factory: pytest.TempPathFactory) -> None:
    tables = run_probe_suite(tmp_path_factory.mktemp("probe"))
    outcomes = fairness.instance_outcomes(tables.instance_stats, ["exact_match"])
    frame = slices.slice_frame(outcomes, tables.predictions, tables.runs)
    assert frame["input_length"].ne("(unknown)").all() and frame["reference"].ne("(none)").all()
    ranked = slices.rank_slices(frame, min_support=10, alpha=0.05)
    print(ranked.head(5).to_string())
    significant = ranked[ranked["significant"]]
    top = [(row.feature, row.value) for row in significant.head(4).itertuples()]
    assert ("scenario", "simple_mcqa") in top and ("perturbation", "typos") in top  # simple/model1 echoes a word


def test_slices_on_crfm_safety_v3(tmp_path_factory: pytest.TempPathFactory) -> None:
    warehouse = Warehouse(tmp_path_factory.mktemp("safety"))
    tidy.ingest_suite("v3", SAFETY_ROOT / "runs" / "v3", warehouse)
    tables = load_suite_tables(warehouse, "v3")
    assert tables is not None
    metrics = ["harm_bench_score", "art_score", "sst_score", "exact_match"]
    outcomes = fairness.instance_outcomes(tables.instance_stats, metrics)
    outcomes = outcomes[outcomes["perturbation"].isna()]
    frame = slices.slice_frame(outcomes, tables.predictions, tables.runs)
    ranked = slices.rank_slices(frame, min_support=4, alpha=0.05)
    print(ranked.head(6).to_string())
    assert set(ranked["metric"]) <= set(metrics) and len(ranked) > 0
    assert (ranked["support"] >= 4).all()
