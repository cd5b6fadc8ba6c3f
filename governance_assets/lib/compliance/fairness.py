"""Bias and fairness evidence from a suite's tidy tables: HELM's own bias and BBQ metrics, the
metric under each perturbation against the unperturbed one (paired by instance), and group gaps
computed with fairlearn's `MetricFrame`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Literal

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame

from governance_assets.lib.core.noninferiority import paired_t_test
from governance_assets.lib.core.statistics import PairedComparison, adjust_p_values, compare_paired_many, is_binary

BBQ_METRICS = ("bbq_metric_ambiguous_bias", "bbq_metric_unambiguous_bias", "bbq_accuracy")
"""BBQ's bias scores (ambiguous and disambiguated contexts) and its accuracy, as HELM names them."""
NO_DATA = "no data"


def _plain(frame: pd.DataFrame) -> pd.Series:  # type: ignore[type-arg]
    return frame["perturbation"].isna()


def bias_metrics(run_stats: pd.DataFrame, instance_stats: pd.DataFrame) -> pd.DataFrame:
    """HELM's `bias_metric:*` and BBQ's scores per run, split and sub-split (unperturbed), with
    HELM's count, the run's evaluated instances and "no data" where HELM left the stat empty."""
    wanted = run_stats["metric"].str.startswith("bias_metric:") | run_stats["metric"].isin(BBQ_METRICS)
    rows = run_stats[wanted & _plain(run_stats)]
    plain_instances = instance_stats[_plain(instance_stats)]
    instances = plain_instances.groupby("run_name", observed=True)["instance_id"].nunique()
    table = pd.DataFrame(
        {
            "run_name": rows["run_name"].astype(str),
            "model": rows["model"].astype(str),
            "scenario": rows["scenario"].astype(str),
            "metric": rows["metric"].astype(str),
            "split": rows["split"].astype(str),
            "sub_split": rows["sub_split"].astype(str).where(rows["sub_split"].notna(), None),
            "count": rows["count"].astype("int64"),
            "mean": rows["mean"].astype("float64"),
        }
    ).reset_index(drop=True)
    table["instances"] = table["run_name"].map(instances).fillna(0).astype("int64")
    table["status"] = np.where((table["count"] == 0) | table["mean"].isna(), NO_DATA, "ok")
    return table


def instance_outcomes(instance_stats: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Per run × metric × split × perturbation × instance: the metric averaged over HELM's train
    trials (an instance is the unit; its trials are not independent evidence)."""
    names = instance_stats["metric"].astype(str)
    selected = instance_stats[np.array([any(fnmatchcase(name, p) for p in metrics) for name in names], dtype=bool)]
    frame = pd.DataFrame(
        {
            column: selected[column].astype(str).where(selected[column].notna(), None)
            for column in ("run_name", "model", "metric", "split", "sub_split", "perturbation", "instance_id")
        }
        | {"value": selected["value"].astype("float64")}
    )
    keys = ["run_name", "model", "metric", "split", "sub_split", "perturbation", "instance_id"]
    return frame.groupby(keys, dropna=False, observed=True, sort=True)["value"].mean().reset_index()


def _perturbation_name(label: str) -> str:
    return label.split(",", 1)[0]


def paired_gap(original: np.ndarray, candidate: np.ndarray, confidence: float) -> PairedComparison:  # type: ignore[type-arg]
    """The gap `candidate - original` by the gates' paired t-test (`noninferiority.paired_t_test`,
    one rule for the platform), two-sided: its `confidence` interval and the p-value of no gap.
    Equal differences on every instance are no evidence either way (p = 1, unbounded interval)."""
    test = paired_t_test(original, candidate, tolerance=0.0, alpha=(1.0 - confidence) / 2.0)
    return PairedComparison(
        n=test.n,
        baseline_mean=test.baseline_mean,
        candidate_mean=test.candidate_mean,
        difference=-test.drop,
        ci_low=-test.upper,
        ci_high=-test.lower,
        p_value=min(1.0, 2.0 * min(test.p_exceeds, test.p_within)),
        test=test.test,
    )


def _compare(pairs: Sequence[tuple[np.ndarray, np.ndarray]], confidence: float) -> list[PairedComparison]:  # type: ignore[type-arg]
    """McNemar for pairs of 0/1 outcomes (batched), the paired t-test for the others; input order."""
    binary = [index for index, (b, c) in enumerate(pairs) if is_binary(b) and is_binary(c)]
    exact = (
        compare_paired_many([pairs[i][0] for i in binary], [pairs[i][1] for i in binary], confidence=confidence)
        if binary
        else []
    )
    results = dict(zip(binary, exact, strict=True))
    return [results[i] if i in results else paired_gap(*pairs[i], confidence) for i in range(len(pairs))]


def perturbation_gaps(
    outcomes: pd.DataFrame, confidence: float, correction: Literal["holm", "bh"] = "holm"
) -> pd.DataFrame:
    """For each run × metric × split and each perturbation with `computed_on=perturbed`: the
    perturbed metric minus the unperturbed one on the same instances, and the worst case (per
    instance the lower of the two, HELM's `computed_on=worst`) minus the unperturbed one. Paired
    exact McNemar with Agresti–Min intervals for 0/1 metrics, else the gates' paired t-test
    (`paired_gap`); p-values adjusted across the suite's comparisons."""
    perturbed = outcomes[outcomes["perturbation"].fillna("").str.contains("computed_on=perturbed")]
    plain = outcomes[outcomes["perturbation"].isna()]
    keys = ["run_name", "model", "metric", "split", "instance_id"]
    base = plain.groupby(keys, dropna=False, observed=True)["value"].mean().rename("original").reset_index()
    labels, pairs = [], []
    for (run, model, metric, split, label), group in perturbed.groupby(
        ["run_name", "model", "metric", "split", "perturbation"], dropna=False, observed=True, sort=True
    ):
        values = group.groupby("instance_id", observed=True)["value"].mean().rename("perturbed").reset_index()
        joined = values.merge(
            base[(base["run_name"] == run) & (base["metric"] == metric) & (base["split"].fillna("") == (split or ""))],
            on="instance_id",
        )
        if joined.empty:
            continue
        original, changed = joined["original"].to_numpy(), joined["perturbed"].to_numpy()
        for kind, candidate in (("perturbed", changed), ("worst", np.minimum(original, changed))):
            labels.append((run, model, metric, split, _perturbation_name(str(label)), kind, label, original.mean()))
            pairs.append((original, candidate))
    columns = ["run_name", "model", "metric", "split", "perturbation", "computed_on", "label", "original_mean"]
    if not pairs:
        return pd.DataFrame(
            columns=[*columns, "n", "perturbed_mean", "gap", "ci_low", "ci_high", "p_value", "p_adjusted", "method"]
        )
    results = _compare(pairs, confidence)
    table = pd.DataFrame(labels, columns=columns)
    table["n"] = [r.n for r in results]
    table["gap"] = [r.difference for r in results]
    table["perturbed_mean"] = table["original_mean"] + table["gap"]
    table["ci_low"] = [r.ci_low for r in results]
    table["ci_high"] = [r.ci_high for r in results]
    table["p_value"] = [r.p_value for r in results]
    table["p_adjusted"] = adjust_p_values(table["p_value"].to_numpy(), correction)
    table["method"] = [r.test for r in results]
    return table


@dataclass(frozen=True)
class GroupFairness:
    """Per-group metric values and the largest gap between groups, for one run × metric."""

    by_group: pd.DataFrame
    """group, n, value, ci_low, ci_high."""
    gap: float
    """Largest difference between two groups' values (fairlearn's `difference()`)."""
    gap_ci: tuple[float, float]
    ratio: float


def _mean(y_true: np.ndarray, y_pred: np.ndarray) -> float:  # type: ignore[type-arg]
    return float(np.mean(y_pred))


def group_fairness(
    values: Sequence[float], groups: Sequence[str], confidence: float, n_boot: int, seed: int
) -> GroupFairness:
    """A metric's per-instance values split by group, with fairlearn's bootstrap intervals
    (`MetricFrame(n_boot=…, ci_quantiles=…)`); for 0/1 outcomes the gap is fairlearn's
    demographic-parity difference of the outcome."""
    y = np.asarray(values, dtype=float)
    tail = (1 - confidence) / 2
    frame = MetricFrame(
        metrics={"value": _mean, "n": lambda t, p: len(p)},
        y_true=y,
        y_pred=y,
        sensitive_features=pd.Series(list(groups), name="group"),
        n_boot=n_boot,
        ci_quantiles=[tail, 1 - tail],
        random_state=seed,
    )
    by_group = frame.by_group.reset_index()
    low, high = frame.by_group_ci[0], frame.by_group_ci[1]
    by_group["ci_low"] = low["value"].to_numpy()
    by_group["ci_high"] = high["value"].to_numpy()
    difference = frame.difference(method="between_groups")
    difference_ci = frame.difference_ci(method="between_groups")
    return GroupFairness(
        by_group=by_group.astype({"n": "int64"}),
        gap=float(difference["value"]),
        gap_ci=(float(difference_ci[0]["value"]), float(difference_ci[1]["value"])),
        ratio=float(frame.ratio(method="between_groups")["value"]),
    )


def group_fairness_table(
    outcomes: pd.DataFrame, confidence: float, n_boot: int, seed: int, min_group_size: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Group fairness of every run × metric × split whose unperturbed instances carry a group
    (`sub_split`) with at least two groups of `min_group_size`: (per-group rows, per-run gaps)."""
    plain = outcomes[outcomes["perturbation"].isna() & outcomes["sub_split"].notna()]
    group_rows, gap_rows = [], []
    for (run, model, metric, split), frame in plain.groupby(
        ["run_name", "model", "metric", "split"], dropna=False, observed=True, sort=True
    ):
        sizes = frame["sub_split"].value_counts()
        kept = frame[frame["sub_split"].isin(sizes[sizes >= min_group_size].index)]
        if kept["sub_split"].nunique() < 2:
            continue
        result = group_fairness(list(kept["value"]), list(kept["sub_split"]), confidence, n_boot, seed)
        ids = {"run_name": run, "model": model, "metric": metric, "split": split}
        group_rows += [ids | row for row in result.by_group.to_dict("records")]
        gap_rows.append(
            ids | {"groups": int(kept["sub_split"].nunique()), "n": len(kept), "gap": result.gap,
                   "gap_ci_low": result.gap_ci[0], "gap_ci_high": result.gap_ci[1], "ratio": result.ratio}
        )  # fmt: skip
    group_columns = ["run_name", "model", "metric", "split", "group", "value", "n", "ci_low", "ci_high"]
    gap_columns = ["run_name", "model", "metric", "split", "groups", "n", "gap", "gap_ci_low", "gap_ci_high", "ratio"]
    return pd.DataFrame(group_rows, columns=group_columns), pd.DataFrame(gap_rows, columns=gap_columns)


def _wilson(successes: float, n: int, z: float) -> tuple[float, float]:
    centre = (successes + z * z / 2) / (n + z * z)
    half = z * np.sqrt(successes * (n - successes) / n + z * z / 4) / (n + z * z)
    return float(centre - half), float(centre + half)


def difference_interval(first: np.ndarray, second: np.ndarray, confidence: float) -> tuple[float, float]:  # type: ignore[type-arg]
    """Interval of mean(first) - mean(second) for independent groups: Newcombe's hybrid score
    interval (from Wilson intervals, good for small samples) for 0/1 values, Welch's t otherwise."""
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + confidence / 2))
    n1, n2 = len(first), len(second)
    p1, p2 = float(np.mean(first)), float(np.mean(second))
    if np.isin(first, (0, 1)).all() and np.isin(second, (0, 1)).all():
        l1, u1 = _wilson(p1 * n1, n1, z)
        l2, u2 = _wilson(p2 * n2, n2, z)
        d = p1 - p2
        return d - float(np.hypot(p1 - l1, u2 - p2)), d + float(np.hypot(u1 - p1, p2 - l2))
    v1, v2 = np.var(first, ddof=1) / n1, np.var(second, ddof=1) / n2
    if v1 + v2 == 0:
        return p1 - p2, p1 - p2
    dof = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, dof) * np.sqrt(v1 + v2))
    return p1 - p2 - half, p1 - p2 + half


@dataclass(frozen=True)
class GapVerdict:
    """Whether the largest group gap is within `limit`: `fail` when some pair of groups differs by
    more than `limit` with confidence, `pass` when every pair's interval lies within ±limit,
    `inconclusive` otherwise. Intervals are two-sided at 1 - alpha/pairs (Bonferroni over the
    pairs): with tails of alpha/2 Newcombe's interval kept the false-alarm rate under alpha in
    every simulated design (tails of alpha reached 0.067 at alpha 0.05 with 2 groups of 100)."""

    outcome: Literal["pass", "fail", "inconclusive"]
    pair: tuple[str, str]
    """The pair whose interval decided (the one furthest from zero)."""
    difference: float
    ci_low: float
    ci_high: float


def gap_verdict(values: Sequence[float], groups: Sequence[str], limit: float, alpha: float) -> GapVerdict:
    """Judge the largest gap between groups against `limit` (see GapVerdict)."""
    y, g = np.asarray(values, dtype=float), np.asarray(groups)
    names = sorted(set(g.tolist()))
    if len(names) < 2:
        raise ValueError(f"group fairness needs at least two groups, got {names}")
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    confidence = 1 - alpha / len(pairs)
    judged = []
    for a, b in pairs:
        low, high = difference_interval(y[g == a], y[g == b], confidence)
        judged.append(((a, b), float(y[g == a].mean() - y[g == b].mean()), low, high))
    decisive = max(judged, key=lambda item: max(abs(item[2]), abs(item[3])))
    if any(low > limit or high < -limit for _, _, low, high in judged):
        decisive = max(judged, key=lambda item: max(item[2] - limit, -limit - item[3]))
        outcome: Literal["pass", "fail", "inconclusive"] = "fail"
    elif all(-limit <= low and high <= limit for _, _, low, high in judged):
        outcome = "pass"
    else:
        outcome = "inconclusive"
    return GapVerdict(outcome, decisive[0], decisive[1], decisive[2], decisive[3])


@dataclass(frozen=True)
class ClassificationFairness:
    """For a two-label task: each group's selection, true-positive and false-positive rates, and
    fairlearn's demographic-parity and equalized-odds differences; the equalized-odds difference
    is the larger of the TPR and FPR differences, each with fairlearn's bootstrap interval."""

    positive: str
    by_group: pd.DataFrame
    """group, n, selection_rate, true_positive_rate, false_positive_rate."""
    demographic_parity_difference: float
    equalized_odds_difference: float
    tpr_difference_ci: tuple[float, float]
    fpr_difference_ci: tuple[float, float]


def classification_fairness(
    truth: Sequence[str], predicted: Sequence[str], groups: Sequence[str], confidence: float, n_boot: int, seed: int
) -> ClassificationFairness:
    """Group fairness of a two-label task (the first label in sorted order is the positive one);
    a prediction outside the two labels counts as the negative label."""
    from fairlearn.metrics import (
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    labels = sorted(set(truth))
    if len(labels) != 2:
        raise ValueError(f"a two-label task is needed, got labels {labels}")
    positive = labels[0]
    y_true = np.array([label == positive for label in truth], dtype=int)
    y_pred = np.array([label == positive for label in predicted], dtype=int)
    sensitive = pd.Series(list(groups), name="group")
    tail = (1 - confidence) / 2
    frame = MetricFrame(
        metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
                 "false_positive_rate": false_positive_rate, "n": lambda t, p: len(p)},
        y_true=y_true, y_pred=y_pred, sensitive_features=sensitive,
        n_boot=n_boot, ci_quantiles=[tail, 1 - tail], random_state=seed,
    )  # fmt: skip
    low, high = frame.difference_ci(method="between_groups")
    return ClassificationFairness(
        positive=positive,
        by_group=frame.by_group.reset_index().astype({"n": "int64"}),
        demographic_parity_difference=float(
            demographic_parity_difference(y_true, y_pred, sensitive_features=sensitive)
        ),
        equalized_odds_difference=float(equalized_odds_difference(y_true, y_pred, sensitive_features=sensitive)),
        tpr_difference_ci=(float(low["true_positive_rate"]), float(high["true_positive_rate"])),
        fpr_difference_ci=(float(low["false_positive_rate"]), float(high["false_positive_rate"])),
    )
