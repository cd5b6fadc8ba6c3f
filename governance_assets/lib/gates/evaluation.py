"""Quality gates over the tidy HELM tables: thresholds, regressions against a baseline suite,
completeness. Every gate yields per-run evidence rows and one outcome: pass, fail or no data."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from governance_assets.lib.core.policy import (
    CompletenessGate,
    DataQualityGate,
    Gate,
    RegressionGate,
    RegressionSettings,
    RunSelector,
    ThresholdGate,
)
from governance_assets.lib.core.statistics import adjust_p_values, compare_paired_many
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.gates.outcomes import GateResult, overall
from governance_assets.lib.helm.selection import arrow_column, choose_baselines, pattern_mask
from governance_assets.lib.helm.tidy import INSTANCE_STATS, PREDICTIONS, RUN_STATS, RUNS_KEY, TidyTable

STAT_KEY = ["run_name", "model", "metric", "split", "sub_split", "perturbation"]
MIN_PAIRED_INSTANCES = 5
"""Fewer paired instances than this cannot support a significance test: the row is "no data"."""


def _result(
    gate: ThresholdGate | RegressionGate | CompletenessGate,
    threshold: str,
    rows: list[dict[str, Any]],
    actual: str | None = None,
) -> GateResult:
    statuses = [row["status"] for row in rows]
    failed = statuses.count("fail")
    summary = actual or f"{failed} of {len(rows)} failed, {statuses.count('no data')} without data"
    return GateResult(gate.name, gate.kind, gate.blocking, overall(statuses), threshold, summary, rows)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict("records")  # type: ignore[return-value]


def selected_runs(runs: pd.DataFrame, selector: RunSelector) -> pd.DataFrame:
    """The complete runs that a gate's selector matches."""
    complete = runs[runs["status"] == "complete"]

    def matches(row: pd.Series) -> bool:  # type: ignore[type-arg]
        groups = list(row["groups"]) if row["groups"] is not None else []
        return (
            fnmatchcase(str(row["scenario"]), selector.scenario)
            and fnmatchcase(str(row["model"]), selector.model)
            and (selector.run_group == "*" or any(fnmatchcase(g, selector.run_group) for g in groups))
        )

    return complete[complete.apply(matches, axis=1)] if len(complete) else complete


def _metric_rows(table: pd.DataFrame, gate: ThresholdGate | RegressionGate, run_names: set[str]) -> pd.DataFrame:
    """Rows of a stats table for the gate's runs, metrics, split and perturbation. The metric is
    matched first, on the whole table (millions of rows, in Arrow); the rest on what it kept."""
    if table.empty:
        return table
    table = table[pattern_mask(table["metric"], gate.metrics)]
    if table.empty:
        return table
    names = arrow_column(table["run_name"])
    keep = pc.is_in(names, value_set=pa.array(sorted(run_names), names.type)).to_numpy(zero_copy_only=False)
    if gate.split != "*":
        keep &= pattern_mask(table["split"], [gate.split])
    perturbation = arrow_column(table["perturbation"])
    if gate.perturbation is None:
        keep &= pc.is_null(perturbation).to_numpy(zero_copy_only=False)
    else:
        keep &= pattern_mask(table["perturbation"], [gate.perturbation])
    selected: pd.DataFrame = table[keep]
    return selected


def threshold_gate(gate: ThresholdGate, run_stats: pd.DataFrame, runs: pd.DataFrame) -> GateResult:
    """Each matching run-level mean within [min, max]; a stat with count 0 is "no data"."""
    bounds = " and ".join(
        part
        for part in (f">= {gate.min}" if gate.min is not None else "", f"<= {gate.max}" if gate.max is not None else "")
        if part
    )
    judged = _metric_rows(run_stats, gate, set(selected_runs(runs, gate.runs)["run_name"]))
    rows = []
    for stat in _records(judged):
        mean = None if pd.isna(stat["mean"]) else float(stat["mean"])
        if mean is None or stat["count"] == 0:
            status = "no data"
        elif (gate.min is not None and mean < gate.min) or (gate.max is not None and mean > gate.max):
            status = "fail"
        else:
            status = "pass"
        rows.append(
            {key: stat[key] for key in ("model", "run_name", "metric", "split", "sub_split")}
            | {"actual": mean, "threshold": bounds, "status": status}
        )
    return _result(gate, bounds, rows)


def _paired_values(
    gate: RegressionGate, judged: pd.DataFrame, baselines: Sequence[tuple[str, pd.DataFrame]]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Candidate and baseline values side by side (`value`, `value_baseline`), one row per
    instance of each stat, and the baseline suite chosen for each run."""
    chosen = choose_baselines([str(name) for name in judged["run_name"].unique()], baselines, gate.baseline_suite)
    pieces = []
    for suite, table in baselines:
        runs = {name for name, chosen_suite in chosen.items() if chosen_suite == suite}
        if runs:
            pieces.append(_metric_rows(table, gate, runs))
    if not pieces:
        return judged.iloc[0:0].assign(value_baseline=pd.Series(dtype=float)), chosen
    keys = [*STAT_KEY, "instance_id", "train_trial_index"]
    baseline = pd.concat(pieces)[[*keys, "value"]].rename(columns={"value": "value_baseline"})
    filled = {"split": "", "sub_split": "", "perturbation": ""}
    paired = judged.fillna(filled).merge(
        baseline.fillna(filled).drop(columns="model"), on=[k for k in keys if k != "model"]
    )
    return paired.dropna(subset=["value", "value_baseline"]), chosen


def regression_gates(
    gates: Sequence[RegressionGate],
    candidate: pd.DataFrame,
    runs: pd.DataFrame,
    baselines: Sequence[tuple[str, pd.DataFrame]],
    settings: RegressionSettings,
) -> list[GateResult]:
    """Judge every regression gate of a suite together: per (run, metric) paired comparison on
    the per-instance values (McNemar for 0/1 metrics, paired bootstrap otherwise), then one
    multiple-comparison correction across all of them."""
    pending: list[tuple[int, dict[str, Any], np.ndarray, np.ndarray]] = []
    rows_by_gate: list[list[dict[str, Any]]] = [[] for _ in gates]
    for index, gate in enumerate(gates):
        judged = _metric_rows(candidate, gate, set(selected_runs(runs, gate.runs)["run_name"]))
        paired, chosen = _paired_values(gate, judged, baselines)
        groups = paired.groupby(STAT_KEY, sort=True).indices if len(paired) else {}
        candidate_values = paired["value"].to_numpy(float)
        baseline_values = paired["value_baseline"].to_numpy(float)
        for key in judged[STAT_KEY].fillna("").drop_duplicates().itertuples(index=False, name=None):
            row: dict[str, Any] = {k: (v if v != "" else None) for k, v in zip(STAT_KEY, key, strict=True)}
            row["tolerance"] = gate.tolerance
            if row["run_name"] not in chosen:
                rows_by_gate[index].append(row | {"status": "no data", "detail": "no baseline suite has this run"})
                continue
            positions = groups.get(key)
            row["baseline_suite"], row["n"] = chosen[row["run_name"]], 0 if positions is None else len(positions)
            if positions is None or len(positions) < MIN_PAIRED_INSTANCES:
                rows_by_gate[index].append(row | {"status": "no data", "detail": f"{row['n']} paired instances"})
                continue
            pending.append((index, row, baseline_values[positions], candidate_values[positions]))
    comparisons = compare_paired_many(
        [p[2] for p in pending],
        [p[3] for p in pending],
        confidence=settings.confidence,
        resamples=settings.bootstrap_resamples,
        seed=settings.seed,
    )
    adjusted = adjust_p_values([c.p_value for c in comparisons], settings.correction)
    for (index, row, _, _), comparison, p_adjusted in zip(pending, comparisons, adjusted, strict=True):
        gate = gates[index]
        drop = -comparison.difference if gate.higher_is_better else comparison.difference
        significant = bool(p_adjusted < settings.alpha)
        row |= {
            "test": comparison.test,
            "baseline_mean": comparison.baseline_mean,
            "candidate_mean": comparison.candidate_mean,
            "effect": comparison.difference,
            "ci_low": comparison.ci_low,
            "ci_high": comparison.ci_high,
            "p_value": comparison.p_value,
            "p_adjusted": float(p_adjusted),
            "drop": drop,
            "status": "fail" if drop > gate.tolerance and significant else "pass",
        }
        rows_by_gate[index].append(row)
    threshold = f"drop <= {{}} or not significant at alpha {settings.alpha} ({settings.correction})"
    return [
        _result(gate, threshold.format(gate.tolerance), rows) for gate, rows in zip(gates, rows_by_gate, strict=True)
    ]


def completeness_gate(
    gate: CompletenessGate,
    runs: pd.DataFrame,
    predictions: pd.DataFrame,
    planned_instances: Mapping[str, int],
) -> GateResult:
    """Every run complete; as many eval instances as the run asked for; failed requests under
    the limit. `planned_instances` is run name -> max_eval_instances from its run spec."""
    rows = []
    selected = (
        runs
        if gate.runs == RunSelector()
        else pd.concat([selected_runs(runs, gate.runs), runs[runs["status"] != "complete"]])
    )
    plain = predictions[predictions["perturbation"].isna()]
    instances_per_run = plain.groupby("run_name")["instance_id"].nunique().to_dict()
    failed_share_per_run = (predictions["success"] == False).groupby(predictions["run_name"]).mean().to_dict()  # noqa: E712
    for run in _records(selected):
        row: dict[str, Any] = {
            "model": run["model"],
            "run_name": run["run_name"],
            "run_status": run["status"],
        }
        if run["status"] != "complete":
            rows.append(row | {"status": "fail", "detail": run["error"]})
            continue
        instances = int(instances_per_run.get(run["run_name"], 0))
        failed_share = float(failed_share_per_run.get(run["run_name"], 0.0))
        planned = planned_instances.get(run["run_name"])
        problems = []
        if planned is not None and instances < planned:
            problems.append(f"{instances} instances, {planned} planned")
        if failed_share > gate.max_failed_request_share:
            problems.append(f"{failed_share:.1%} of requests failed (limit {gate.max_failed_request_share:.1%})")
        rows.append(
            row
            | {
                "instances": instances,
                "planned_instances": planned,
                "failed_request_share": failed_share,
                "status": "fail" if problems else "pass",
                "detail": "; ".join(problems),
            }
        )
    threshold = f"all runs complete, planned instances present, failed requests <= {gate.max_failed_request_share:.1%}"
    return _result(gate, threshold, rows)


@dataclass(frozen=True)
class SuiteTables:
    """The tidy tables of one suite, as gates read them."""

    runs: pd.DataFrame
    run_stats: pd.DataFrame
    instance_stats: pd.DataFrame
    predictions: pd.DataFrame


def read_frame(warehouse: Warehouse, spec: TidyTable, suite: str) -> pd.DataFrame:
    """A tidy table as pandas with Arrow-backed columns (no copy of millions of strings into
    Python objects); an empty frame when the table was never built."""
    table = warehouse.read_cached(spec.key, suite)
    frame: pd.DataFrame = (table if table is not None else spec.schema.empty_table()).to_pandas(
        types_mapper=pd.ArrowDtype
    )
    return frame


def load_suite_tables(warehouse: Warehouse, suite: str) -> SuiteTables | None:
    """The suite's tables as gates read them, or None when `helm/runs` was never built."""
    runs = warehouse.read(RUNS_KEY, suite)
    if runs is None:
        return None
    return SuiteTables(
        runs.to_pandas(),
        read_frame(warehouse, RUN_STATS, suite),
        read_frame(warehouse, INSTANCE_STATS, suite),
        read_frame(warehouse, PREDICTIONS, suite),
    )


def evaluate_gates(
    gates: Sequence[Gate],
    tables: SuiteTables,
    baselines: Sequence[tuple[str, pd.DataFrame]],
    settings: RegressionSettings,
) -> list[GateResult]:
    """Every gate of a policy on one suite, in policy order. `baselines` are the instance_stats
    of earlier suites, most recent first."""
    results: dict[str, GateResult] = {}
    regressions = [gate for gate in gates if isinstance(gate, RegressionGate)]
    for result in regression_gates(regressions, tables.instance_stats, tables.runs, baselines, settings):
        results[result.gate] = result
    planned = {
        str(row["run_name"]): int(row["max_eval_instances"])
        for row in _records(tables.runs)
        if row["status"] == "complete" and not pd.isna(row["max_eval_instances"])
    }
    for gate in gates:
        if isinstance(gate, ThresholdGate):
            results[gate.name] = threshold_gate(gate, tables.run_stats, tables.runs)
        elif isinstance(gate, CompletenessGate):
            results[gate.name] = completeness_gate(gate, tables.runs, tables.predictions, planned)
        elif isinstance(gate, DataQualityGate):
            from governance_assets.lib.gates.data_quality import data_quality_gate  # GE is slow to import

            frames = {
                "run_stats": tables.run_stats,
                "instance_stats": tables.instance_stats,
                "predictions": tables.predictions,
            }
            results[gate.name] = data_quality_gate(gate, frames)
    return [results[gate.name] for gate in gates]


def evidence_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Evidence rows as plain JSON values (NaN becomes null, numpy scalars become Python)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float | np.floating):
            return None if np.isnan(value) else float(value)
        if isinstance(value, np.integer | np.bool_):
            return value.item()
        if isinstance(value, list | tuple | np.ndarray):
            return [clean(v) for v in value]
        return value

    return [{k: clean(v) for k, v in row.items()} for row in rows]


def verdict_rows(suite: str, results: Sequence[GateResult], severities: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per gate × model (gates judged on no model, e.g. data quality, use model `*`)."""
    rows = []
    for result in results:
        by_model: dict[str, list[dict[str, Any]]] = {}
        for row in result.rows:
            by_model.setdefault(str(row.get("model") or "*"), []).append(row)
        severity = "error" if result.blocking or severities.get(result.gate) == "error" else "warn"
        for model, evidence in sorted(by_model.items()) or [("*", [])]:
            statuses = [str(row["status"]) for row in evidence]
            rows.append(
                {
                    "suite": suite,
                    "model": model,
                    "gate": result.gate,
                    "kind": result.kind,
                    "blocking": result.blocking,
                    "severity": severity,
                    "status": overall(statuses) if evidence else result.outcome,
                    "actual": f"{statuses.count('fail')} of {len(evidence)} failed" if evidence else result.actual,
                    "threshold": result.threshold,
                    "evidence": json.dumps(evidence_rows(evidence), default=str),
                }
            )
    return rows


def release_decisions(verdicts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per model: `block` when an ERROR-severity gate failed or a blocking gate had no data,
    else `promote`; reasons name each gate. Model `*` gates apply to every model."""
    models = sorted({str(v["model"]) for v in verdicts if v["model"] != "*"}) or ["*"]
    decisions = []
    for model in models:
        blockers: list[str] = []
        warnings: list[str] = []
        for verdict in verdicts:
            if verdict["model"] not in (model, "*") or verdict["status"] == "pass":
                continue
            reason = f"{verdict['gate']}: {verdict['status']} ({verdict['actual']}; threshold {verdict['threshold']})"
            stops = verdict["severity"] == "error" and (verdict["status"] == "fail" or verdict["blocking"])
            (blockers if stops else warnings).append(reason)
        decisions.append(
            {"model": model, "decision": "block" if blockers else "promote", "reasons": blockers, "warnings": warnings}
        )
    return decisions
