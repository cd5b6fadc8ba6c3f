"""Regression gates: is a metric's drop against a baseline suite within tolerance?

Instances are the unit: the values of one instance's train trials are averaged first, so five
trials of 100 instances are 100 paired values, not 500. Each (run × metric) comparison is judged
by two one-sided tests (`lib.core.noninferiority`): `pass` when the drop is shown to be below the
tolerance, `fail` when the drop beyond the tolerance is significant after correcting for every
regression comparison of the suite (Holm or Benjamini–Hochberg), `inconclusive` otherwise, with
the number of instances that would decide it.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from governance_assets.lib.core.noninferiority import MarginTest, instances_to_decide, margin_test
from governance_assets.lib.core.statistics import adjust_p_values
from governance_assets.lib.core.strict import StrictModel
from governance_assets.lib.gates.base import MetricGateSettings, SuiteTables, metric_rows, selected_runs
from governance_assets.lib.gates.outcomes import GateResult, gate_result
from governance_assets.lib.helm.selection import choose_baselines

STAT_KEY = ["run_name", "model", "metric", "split", "sub_split", "perturbation"]
PAIR_KEY = ["run_name", "metric", "split", "sub_split", "perturbation", "instance_id"]
MIN_PAIRED_INSTANCES = 5
"""Fewer paired instances than this cannot support a test: the comparison is "no data"."""


class RegressionSettings(StrictModel):
    """How regressions are tested."""

    alpha: Annotated[float, Field(gt=0, lt=0.5)] = 0.05
    """Level of each one-sided test (and of the suite's family of `fail` tests, corrected)."""
    correction: Literal["holm", "bh"] = "holm"
    """Multiple-comparison correction of the `fail` tests across the regression comparisons of a suite."""
    power: Annotated[float, Field(gt=0.5, lt=1)] = 0.8
    """Power at which `instances_needed` would decide an inconclusive comparison."""
    inconclusive: Literal["block", "warn"] = "block"
    """What an inconclusive comparison of an ERROR-severity gate does to the release."""
    metric_variants: Literal["primary", "all"] = "primary"
    """`primary`: of a gate's metric patterns, only the first that a run has is judged (so
    exact_match and quasi_exact_match, which measure the same thing, count once in the family);
    `all`: every matching metric is a comparison of its own."""


class RegressionGate(MetricGateSettings):
    """A drop of a metric against the baseline suite: pass when shown within `tolerance`, fail when
    shown beyond it, inconclusive otherwise."""

    kind: Literal["regression"]
    tolerance: Annotated[float, Field(ge=0, lt=1)] = 0.0
    baseline_suite: str | None = None
    """None: the most recent earlier suite that has the same run."""
    higher_is_better: bool = True


def instance_values(rows: pd.DataFrame) -> pd.DataFrame:
    """One value per instance of each stat: the mean over its train trials, with `trials` (how
    many were averaged) and `binary` (every trial's value was 0 or 1 and there was one trial)."""
    if rows.empty:
        return pd.DataFrame(columns=[*STAT_KEY, "instance_id", "value", "trials", "binary"])
    frame = rows[[*STAT_KEY, "instance_id", "value"]].dropna(subset=["value"])
    frame = frame.fillna({"split": "", "sub_split": "", "perturbation": ""})
    values_column = frame["value"].astype("float64")
    frame = frame.assign(value=values_column, zero_one=values_column.isin([0.0, 1.0]))
    grouped = frame.groupby([*STAT_KEY, "instance_id"], sort=False, observed=True)
    values = grouped.agg(value=("value", "mean"), trials=("value", "size"), binary=("zero_one", "all")).reset_index()
    values["binary"] &= values["trials"] == 1
    return values


def _primary_metrics(values: pd.DataFrame, gate: RegressionGate, settings: RegressionSettings) -> pd.DataFrame:
    """Keep, per run × split × perturbation, the metrics of the first of the gate's patterns present."""
    if settings.metric_variants == "all" or values.empty:
        return values
    rank = {
        metric: next(i for i, pattern in enumerate(gate.metrics) if fnmatchcase(str(metric), pattern))
        for metric in values["metric"].unique()
    }
    ranked = values.assign(_rank=values["metric"].map(rank))
    best = ranked.groupby(["run_name", "split", "sub_split", "perturbation"])["_rank"].transform("min")
    return ranked[ranked["_rank"] == best].drop(columns="_rank")


def _describe(row: dict[str, Any], tolerance: float) -> str:
    drop, upper, lower = row["drop"], row["drop_upper"], row["drop_lower"]
    if row["status"] == "pass":
        return f"drop {drop:+.3f}, upper bound {upper:+.3f} < tolerance {tolerance}"
    if row["status"] == "fail":
        return f"drop {drop:+.3f} > tolerance {tolerance} (lower bound {lower:+.3f}, p_adj {row['p_exceeds_adjusted']:.3g})"
    needed = row["instances_needed"]
    decide = (
        f"about {needed} instances would decide it"
        if needed
        else "no sample size can be estimated (the drop equals the tolerance, or the paired values do not vary)"
    )
    return f"drop {drop:+.3f} in [{lower:+.3f}, {upper:+.3f}] around tolerance {tolerance} with {row['n']} instances; {decide}"


def _missing_from_candidate(
    candidate: pd.DataFrame, baseline: pd.DataFrame, runs: pd.DataFrame, chosen: dict[str, str]
) -> list[dict[str, Any]]:
    """A "no data" row for each gated stat that the baseline suite has for a run and the
    candidate's `per_instance_stats.json` lacks: the run cannot be judged on it."""
    keys = [k for k in STAT_KEY if k != "model"]
    have = set(candidate[keys].itertuples(index=False, name=None))
    model = dict(zip(runs["run_name"], runs["model"], strict=True))
    rows = []
    for key in baseline[keys].drop_duplicates().itertuples(index=False, name=None):
        if key not in have:
            row: dict[str, Any] = {k: (v if v != "" else None) for k, v in zip(keys, key, strict=True)}
            detail = f"{row['metric']} is missing from {row['run_name']}/per_instance_stats.json though baseline suite {chosen[row['run_name']]} has it"
            rows.append(row | {"model": model[row["run_name"]], "status": "no data", "detail": detail})
    return rows


def regression_gates(
    gates: Sequence[RegressionGate],
    tables: SuiteTables,
    baselines: Sequence[tuple[str, pd.DataFrame]],
    settings: RegressionSettings,
) -> list[GateResult]:
    """Judge every regression gate of a suite together: per (run, metric) two one-sided tests on
    instance values, then one multiple-comparison correction of the `fail` tests across all."""
    pending: list[tuple[int, dict[str, Any], MarginTest]] = []
    rows_by_gate: list[list[dict[str, Any]]] = [[] for _ in gates]
    for index, gate in enumerate(gates):
        runs = selected_runs(tables.runs, gate.runs)
        judged = metric_rows(tables.instance_stats, gate, set(runs["run_name"]))
        candidate = _primary_metrics(instance_values(judged), gate, settings)
        chosen = choose_baselines([str(n) for n in runs["run_name"]], baselines, gate.baseline_suite)
        pieces = [
            instance_values(metric_rows(table, gate, {n for n, s in chosen.items() if s == suite}))
            for suite, table in baselines
            if suite in chosen.values()
        ]
        baseline = (
            _primary_metrics(pd.concat(pieces), gate, settings) if pieces else instance_values(candidate.iloc[0:0])
        )
        rows_by_gate[index] += _missing_from_candidate(candidate, baseline, runs, chosen)
        paired = candidate.merge(
            baseline.drop(columns="model"), on=PAIR_KEY, suffixes=("", "_baseline"), how="left"
        ).dropna(subset=["value_baseline"])
        groups = paired.groupby(STAT_KEY, sort=True).indices if len(paired) else {}
        for key in candidate[STAT_KEY].drop_duplicates().itertuples(index=False, name=None):
            row: dict[str, Any] = {k: (v if v != "" else None) for k, v in zip(STAT_KEY, key, strict=True)}
            row["tolerance"] = gate.tolerance
            if row["run_name"] not in chosen:
                rows_by_gate[index].append(row | {"status": "no data", "detail": "no baseline suite has this run"})
                continue
            positions = groups.get(key)
            row["baseline_suite"], row["n"] = chosen[row["run_name"]], 0 if positions is None else len(positions)
            if positions is None or len(positions) < MIN_PAIRED_INSTANCES:
                detail = f"{row['n']} instances pair with the baseline; at least {MIN_PAIRED_INSTANCES} are needed"
                rows_by_gate[index].append(row | {"status": "no data", "detail": detail})
                continue
            pairs = paired.iloc[positions]
            row["trials"] = int(max(pairs["trials"].max(), pairs["trials_baseline"].max()))
            binary = bool(pairs["binary"].all() and pairs["binary_baseline"].all())
            result = margin_test(
                pairs["value_baseline"].to_numpy(float),
                pairs["value"].to_numpy(float),
                gate.tolerance,
                settings.alpha,
                gate.higher_is_better,
                binary=binary,
            )
            pending.append((index, row, result))
    adjusted = adjust_p_values([result.p_exceeds for *_, result in pending], settings.correction)
    family = max(1, len(pending))
    for (index, row, result), p_adjusted in zip(pending, adjusted, strict=True):
        gate = gates[index]
        if p_adjusted < settings.alpha:
            status = "fail"
        elif result.p_within < settings.alpha:
            status = "pass"
        else:
            status = "inconclusive"
        deciding_alpha = settings.alpha if result.drop < gate.tolerance else settings.alpha / family
        row |= {
            "test": result.test,
            "baseline_mean": result.baseline_mean,
            "candidate_mean": result.candidate_mean,
            "drop": result.drop,
            "drop_lower": result.lower,
            "drop_upper": result.upper,
            "p_exceeds": result.p_exceeds,
            "p_exceeds_adjusted": float(p_adjusted),
            "p_within": result.p_within,
            "instances_needed": instances_to_decide(result, gate.tolerance, deciding_alpha, settings.power)
            if status == "inconclusive"
            else None,
            "status": status,
        }
        row["detail"] = _describe(row, gate.tolerance)
        rows_by_gate[index].append(row)
    threshold = "drop < {} shown at alpha {} (one-sided); fail when drop > {} is significant after {} correction"
    return [
        gate_result(gate, threshold.format(gate.tolerance, settings.alpha, gate.tolerance, settings.correction), rows)
        for gate, rows in zip(gates, rows_by_gate, strict=True)
    ]


def worst_comparison(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The judged comparison with the largest drop (None when nothing was judged)."""
    judged = [row for row in rows if "drop" in row and not np.isnan(row["drop"])]
    return max(judged, key=lambda row: row["drop"]) if judged else None
