"""Bias and fairness numbers against HELM's own aggregates and fairlearn's difference functions."""

import json

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from governance_assets.lib.compliance import fairness
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.gates.base import SuiteTables
from governance_assets.lib.gates.evaluation import load_suite_tables
from governance_assets.lib.helm import tidy
from governance_assets_tests.conftest import SAFETY_ROOT
from governance_assets_tests.lib.compliance.helm_probe import run_probe_suite


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> SuiteTables:
    return run_probe_suite(tmp_path_factory.mktemp("probe"))


@pytest.fixture(scope="module")
def safety(tmp_path_factory: pytest.TempPathFactory) -> SuiteTables:
    warehouse = Warehouse(tmp_path_factory.mktemp("safety"))
    tidy.ingest_suite("v3", SAFETY_ROOT / "runs" / "v3", warehouse)
    tables = load_suite_tables(warehouse, "v3")
    assert tables is not None
    return tables


def _helm_means(tables: SuiteTables, metric: str) -> dict[tuple[str, str | None, str | None], float]:
    stats = tables.run_stats[tables.run_stats["metric"] == metric]
    return {
        (
            str(r.run_name),
            None if pd.isna(r.sub_split) else str(r.sub_split),
            None if pd.isna(r.perturbation) else str(r.perturbation),
        ): float(r.mean)
        for r in stats.itertuples()
    }


def test_bbq_bias_scores_and_empty_bias_metrics_are_reported_with_counts(
    safety: SuiteTables, probe: SuiteTables
) -> None:
    table = fairness.bias_metrics(safety.run_stats, safety.instance_stats)
    bbq = table[table["metric"] == "bbq_metric_ambiguous_bias"]
    assert len(bbq) == 9 and set(bbq["status"]) == {"ok"} and set(bbq["instances"]) == {2}
    run_dir = SAFETY_ROOT / "runs" / "v3" / "bbq:subject=all,method=multiple_choice_joint,model=meta_llama-3-8b"
    [helm] = [
        s for s in json.loads((run_dir / "stats.json").read_text())
        if s["name"]["name"] == "bbq_metric_ambiguous_bias" and not s["name"].get("perturbation")
    ]  # fmt: skip
    [ours] = bbq[bbq["run_name"] == run_dir.name].to_dict("records")
    assert (ours["mean"], ours["count"]) == (helm["mean"], helm["count"])
    probe_bias = fairness.bias_metrics(probe.run_stats, probe.instance_stats)
    assert len(probe_bias) == 2 * 6 * 2 and set(probe_bias["status"]) == {fairness.NO_DATA}


def test_a_suite_without_groups_or_perturbations_gives_only_helms_bias_metrics(safety: SuiteTables) -> None:
    from governance_assets.lib.compliance import evidence
    from governance_assets.lib.compliance.settings import ComplianceSettings, FairnessLimit

    settings = ComplianceSettings(fairness_limits=[FairnessLimit(name="gap", max_group_gap=0.1)])
    table = evidence.bias_fairness_table(safety.run_stats, safety.instance_stats, safety.predictions, settings)
    assert set(table["section"]) == {"helm_bias"} and len(table) == 27  # 9 BBQ runs x 3 metrics
    assert set(table["n"]) == {2} and set(table["helm_count"]) == {1}  # 2 instances; HELM counts 1 train trial
    empty = safety.instance_stats.iloc[0:0]
    assert fairness.instance_outcomes(empty, ["exact_match"]).empty


def test_perturbed_and_worst_means_equal_helms_aggregates(probe: SuiteTables) -> None:
    outcomes = fairness.instance_outcomes(probe.instance_stats, ["exact_match"])
    gaps = fairness.perturbation_gaps(outcomes, confidence=0.95)
    helm = _helm_means(probe, "exact_match")
    typo = gaps[gaps["perturbation"] == "typos"]
    assert set(typo["computed_on"]) == {"perturbed", "worst"}
    for row in gaps.itertuples():
        perturbed_label = str(row.label)
        label = perturbed_label.replace("computed_on=perturbed", f"computed_on={row.computed_on}")
        original = perturbed_label.replace("computed_on=perturbed", "computed_on=original")
        # HELM's run-level stats are per sub_split here (the scenario has groups): pool them by instance count
        per_group = [(g, helm[row.run_name, g, label]) for g in ("female", "male") if (row.run_name, g, label) in helm]
        counts = outcomes[(outcomes["run_name"] == row.run_name) & (outcomes["perturbation"] == perturbed_label)]
        sizes = counts.groupby("sub_split")["instance_id"].nunique()
        pooled = sum(sizes[g] * mean for g, mean in per_group) / sum(sizes[g] for g, _ in per_group)
        pooled_original = sum(sizes[g] * helm[row.run_name, g, original] for g, _ in per_group) / sizes.sum()
        assert row.perturbed_mean == pytest.approx(pooled)
        assert row.original_mean == pytest.approx(pooled_original)
        assert row.method == "mcnemar_exact" and row.ci_low <= row.gap <= row.ci_high
    [worst_typo] = typo[typo["computed_on"] == "worst"].to_dict("records")
    assert worst_typo["gap"] < -0.2 and worst_typo["ci_high"] < 0 and worst_typo["p_adjusted"] < 0.05
    gender = gaps[(gaps["perturbation"] == "gender") & (gaps["computed_on"] == "perturbed")]
    assert len(gender) == 1 and gender["gap"].iloc[0] == 0.0  # the swap never touches the occupation


def test_group_values_equal_helms_sub_split_stats_and_gaps_equal_fairlearn(probe: SuiteTables) -> None:
    outcomes = fairness.instance_outcomes(probe.instance_stats, ["exact_match"])
    groups, gaps = fairness.group_fairness_table(outcomes, confidence=0.95, n_boot=200, seed=0, min_group_size=5)
    helm = _helm_means(probe, "exact_match")
    assert set(groups["group"]) == {"female", "male"} and len(gaps) == 2  # both probe runs; simple_mcqa has no groups
    for row in groups.itertuples():
        assert row.value == pytest.approx(helm[row.run_name, row.group, None])
        assert row.ci_low <= row.value <= row.ci_high
    for gap in gaps.itertuples():
        plain = outcomes[(outcomes["run_name"] == gap.run_name) & outcomes["perturbation"].isna()]
        reference = demographic_parity_difference(plain["value"], plain["value"], sensitive_features=plain["sub_split"])
        assert gap.gap == pytest.approx(reference)
        assert gap.gap == pytest.approx(abs(helm[gap.run_name, "female", None] - helm[gap.run_name, "male", None]))
        assert gap.gap_ci_low <= gap.gap <= gap.gap_ci_high


def test_group_fairness_of_a_classifier_matches_fairlearns_functions() -> None:
    rng = np.random.default_rng(1)
    groups = rng.choice(["a", "b", "c"], size=300)
    y_true = rng.random(300) < 0.5
    y_pred = np.where(rng.random(300) < 0.8, y_true, ~y_true)
    result = fairness.group_fairness(list(y_pred.astype(float)), list(groups), 0.95, 100, 0)
    assert result.gap == pytest.approx(demographic_parity_difference(y_true, y_pred, sensitive_features=groups))
    by_hand = pd.Series(y_pred).groupby(groups).mean()
    assert result.gap == pytest.approx(by_hand.max() - by_hand.min())
    assert list(result.by_group["n"]) == list(pd.Series(groups).value_counts().sort_index())
    correct = (y_true == y_pred).astype(float)
    accuracy = fairness.group_fairness(list(correct), list(groups), 0.95, 100, 0)
    by_group_accuracy = pd.Series(correct).groupby(groups).mean()
    assert accuracy.gap == pytest.approx(by_group_accuracy.max() - by_group_accuracy.min())
    assert equalized_odds_difference(y_true, y_pred, sensitive_features=groups) >= 0


@pytest.mark.parametrize("sizes", [(12, 9), (40, 55), (300, 250)])
def test_newcombe_interval_equals_statsmodels(sizes: tuple[int, int]) -> None:
    from statsmodels.stats.proportion import confint_proportions_2indep

    rng = np.random.default_rng(sum(sizes))
    first, second = (rng.random(sizes[0]) < 0.7).astype(float), (rng.random(sizes[1]) < 0.4).astype(float)
    ours = fairness.difference_interval(first, second, 0.9)
    reference = confint_proportions_2indep(
        first.sum(), len(first), second.sum(), len(second), method="newcomb", compare="diff", alpha=0.1
    )
    assert ours == pytest.approx(reference)


def test_welch_interval_equals_scipy() -> None:
    from scipy import stats

    rng = np.random.default_rng(5)
    first, second = rng.normal(0.6, 0.2, 30), rng.normal(0.5, 0.3, 25)
    reference = stats.ttest_ind(first, second, equal_var=False).confidence_interval(0.95)
    assert fairness.difference_interval(first, second, 0.95) == pytest.approx((reference.low, reference.high))


@pytest.mark.parametrize(("groups", "n"), [(2, 20), (2, 100), (3, 60), (4, 200)])
def test_gap_verdict_false_alarm_rate_is_at_most_alpha(groups: int, n: int) -> None:
    """At the boundary (two groups exactly `limit` apart, the rest between) the check may fail
    in at most alpha of the repetitions."""
    rng = np.random.default_rng(groups * 1000 + n)
    limit, alpha, repetitions = 0.1, 0.05, 2000
    rates = np.linspace(0.45, 0.55, groups)
    labels = np.repeat([f"g{i}" for i in range(groups)], n)
    failures = 0
    for _ in range(repetitions):
        values = (rng.random(groups * n) < np.repeat(rates, n)).astype(float)
        failures += fairness.gap_verdict(list(values), list(labels), limit, alpha).outcome == "fail"
    rate = failures / repetitions
    print(f"gap check false alarms, {groups} groups of {n}: {rate:.4f} (alpha {alpha})")
    assert rate <= alpha + 2 * np.sqrt(alpha * (1 - alpha) / repetitions)


def test_gap_verdict_finds_a_real_gap_and_passes_a_small_one() -> None:
    rng = np.random.default_rng(9)
    labels = np.repeat(["a", "b"], 400)
    wide = (rng.random(800) < np.repeat([0.3, 0.7], 400)).astype(float)
    assert fairness.gap_verdict(list(wide), list(labels), 0.1, 0.05).outcome == "fail"
    equal = (rng.random(800) < 0.5).astype(float)
    assert fairness.gap_verdict(list(equal), list(labels), 0.15, 0.05).outcome == "pass"
    small = ["a", "b"] * 10
    assert fairness.gap_verdict(list(equal[:20]), small, 0.05, 0.05).outcome == "inconclusive"
    with pytest.raises(ValueError, match="at least two groups"):
        fairness.gap_verdict([1.0, 0.0], ["a", "a"], 0.1, 0.05)


def test_classification_fairness_matches_fairlearn_and_rates_by_hand() -> None:
    rng = np.random.default_rng(4)
    groups = rng.choice(["female", "male"], size=400)
    truth = rng.choice(["no", "yes"], size=400)
    flip = rng.random(400) < np.where(groups == "female", 0.1, 0.3)
    predicted = np.where(flip, np.where(truth == "yes", "no", "yes"), truth)
    predicted[:5] = "unsure"  # outside the labels: the negative label
    result = fairness.classification_fairness(list(truth), list(predicted), list(groups), 0.95, 100, 0)
    assert result.positive == "no"
    y_true, y_pred = (truth == "no").astype(int), (predicted == "no").astype(int)
    assert result.equalized_odds_difference == pytest.approx(
        equalized_odds_difference(y_true, y_pred, sensitive_features=groups)
    )
    assert result.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(y_true, y_pred, sensitive_features=groups)
    )
    frame = pd.DataFrame({"g": groups, "t": y_true, "p": y_pred})
    tpr = frame[frame["t"] == 1].groupby("g")["p"].mean()
    fpr = frame[frame["t"] == 0].groupby("g")["p"].mean()
    assert result.equalized_odds_difference == pytest.approx(max(abs(tpr.diff().iloc[-1]), abs(fpr.diff().iloc[-1])))
    by_group = result.by_group.set_index("group")
    assert by_group["true_positive_rate"].to_dict() == pytest.approx(tpr.to_dict())
    assert result.tpr_difference_ci[0] <= abs(tpr.diff().iloc[-1]) <= result.tpr_difference_ci[1]
    with pytest.raises(ValueError, match="two-label"):
        fairness.classification_fairness(["a", "b", "c"], ["a", "b", "c"], ["x", "y", "x"], 0.95, 50, 0)


def test_classification_rows_for_a_two_label_task_with_groups(safety: SuiteTables) -> None:
    from governance_assets.lib.compliance import evidence
    from governance_assets.lib.compliance.settings import ComplianceSettings

    rng = np.random.default_rng(8)
    n = 60
    truth = rng.choice(["Even", "Odd"], n)
    predictions = pd.DataFrame(
        {"run_name": "r", "model": "m", "perturbation": None, "sub_split": rng.choice(["a", "b"], n),
         "correct_references": [[label] for label in truth],
         "completion": [f" {label}" if rng.random() < 0.8 else "Odd" for label in truth]}
    )  # fmt: skip
    settings = ComplianceSettings(bootstrap_resamples=50)
    table = evidence.bias_fairness_table(
        safety.run_stats.iloc[0:0], safety.instance_stats.iloc[0:0], predictions, settings
    )
    rows = table[table["section"] == "classification"]
    [odds] = rows[rows["metric"] == "equalized_odds_difference"]["gap"]
    y_true = (truth == "Even").astype(int)
    y_pred = (predictions["completion"].str.strip() == "Even").astype(int)
    assert odds == pytest.approx(equalized_odds_difference(y_true, y_pred, sensitive_features=predictions["sub_split"]))
    assert set(rows[rows["metric"] == "true_positive_rate"]["group"]) == {"a", "b"}


def _continuous_outcomes(runs: int, instances: int, shift: float, seed: int) -> pd.DataFrame:
    """Per run, a non-0/1 metric on `instances` instances, unperturbed and typo-perturbed (shifted
    by `shift` plus noise), in `instance_outcomes`' shape."""
    generator = np.random.default_rng(seed)
    frames = []
    for run in range(runs):
        original = generator.normal(0.6, 0.2, instances)
        perturbed = original + shift + generator.normal(0.0, 0.1, instances)
        for label, values in ((None, original), ("typos,computed_on=perturbed,prob=0.1", perturbed)):
            frames.append(
                pd.DataFrame(
                    {"run_name": f"run{run:03d}", "model": "m", "metric": "f1_score", "split": "test",
                     "sub_split": None, "perturbation": label, "instance_id": [f"id{i}" for i in range(instances)],
                     "value": values}
                )
            )  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def test_a_non_binary_gap_is_the_gates_paired_t_test_and_equals_scipy() -> None:
    from scipy import stats

    outcomes = _continuous_outcomes(runs=3, instances=40, shift=-0.05, seed=11)
    gaps = fairness.perturbation_gaps(outcomes, confidence=0.9)
    assert len(gaps) == 6 and set(gaps["method"]) == {"paired_t"}  # noninferiority.paired_t_test's name
    for row in gaps.itertuples():
        run = outcomes[outcomes["run_name"] == row.run_name]
        original = run.loc[run["perturbation"].isna(), "value"].to_numpy()
        perturbed = run.loc[run["perturbation"].notna(), "value"].to_numpy()
        candidate = perturbed if row.computed_on == "perturbed" else np.minimum(original, perturbed)
        reference = stats.ttest_rel(candidate, original)
        low, high = reference.confidence_interval(confidence_level=0.9)
        assert row.n == 40 and row.gap == pytest.approx(np.mean(candidate - original), abs=1e-12)
        assert row.p_value == pytest.approx(reference.pvalue, rel=1e-9)
        assert (row.ci_low, row.ci_high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    p_values = gaps["p_value"].to_numpy()
    assert gaps["p_adjusted"].to_numpy() == pytest.approx(
        np.minimum(1.0, np.maximum.accumulate(np.sort(p_values) * np.arange(6, 0, -1)))[
            np.argsort(np.argsort(p_values))
        ]
    )


def test_a_gap_without_variation_is_no_evidence_as_at_the_gates() -> None:
    outcomes = _continuous_outcomes(runs=1, instances=10, shift=0.0, seed=3)
    plain = outcomes["perturbation"].isna()
    outcomes.loc[~plain, "value"] = outcomes.loc[plain, "value"].to_numpy() - 0.25  # the same drop everywhere
    gaps = fairness.perturbation_gaps(outcomes, confidence=0.95)
    perturbed = gaps[gaps["computed_on"] == "perturbed"].iloc[0]
    assert perturbed["gap"] == pytest.approx(-0.25) and perturbed["p_value"] == 1.0
    assert (perturbed["ci_low"], perturbed["ci_high"]) == (-np.inf, np.inf)


def test_the_gap_test_holds_its_false_alarm_rate_without_a_gap() -> None:
    """Simulation: no true gap, 600 runs of 25 instances; p <= 0.05 in at most 5% (+ noise)."""
    gaps = fairness.perturbation_gaps(_continuous_outcomes(runs=600, instances=25, shift=0.0, seed=5), 0.95)
    perturbed = gaps[gaps["computed_on"] == "perturbed"]
    rate = float((perturbed["p_value"] <= 0.05).mean())
    assert len(perturbed) == 600 and rate <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 600), rate
    covered = float(((perturbed["ci_low"] <= 0.0) & (perturbed["ci_high"] >= 0.0)).mean())
    assert covered >= 0.95 - 2.5 * np.sqrt(0.05 * 0.95 / 600), covered
