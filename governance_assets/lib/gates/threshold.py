"""Threshold gates: each matching run-level mean within [min, max]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd
from pydantic import model_validator

from governance_assets.lib.gates.base import MetricGateSettings, SuiteTables, metric_rows, records, selected_runs
from governance_assets.lib.gates.outcomes import GateResult, gate_result


class ThresholdGate(MetricGateSettings):
    """Each matching run-level mean must lie within [min, max]."""

    kind: Literal["threshold"]
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _has_a_bound(self) -> ThresholdGate:
        if self.min is None and self.max is None:
            raise ValueError("a threshold gate needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' ({self.min}) is greater than 'max' ({self.max})")
        return self

    def bounds(self) -> str:
        """`>= 0.5 and <= 1.0`."""
        parts = (f">= {self.min}" if self.min is not None else "", f"<= {self.max}" if self.max is not None else "")
        return " and ".join(part for part in parts if part)


def missing_stats(judged: pd.DataFrame, runs: pd.DataFrame, source: str) -> list[dict[str, Any]]:
    """A "no data" row for each selected run that lacks a gated (metric, split) which another run
    of the same scenario has: its file left the stat out, so its model cannot be judged on it."""
    scenario = dict(zip(runs["run_name"], runs["scenario"], strict=True))
    present = {
        (str(r), str(m), str(s))
        for r, m, s in zip(judged["run_name"], judged["metric"], judged["split"].fillna(""), strict=True)
    }
    expected: dict[str, set[tuple[str, str]]] = {}
    for run_name, metric, split in present:
        expected.setdefault(str(scenario.get(run_name)), set()).add((metric, split))
    rows = []
    for run in records(runs):
        for metric, split in sorted(expected.get(str(run["scenario"]), set())):
            if (str(run["run_name"]), metric, split) not in present:
                detail = f"{metric} ({split or 'no split'}) is missing from {run['run_name']}/{source} though other runs of {run['scenario']} have it"
                rows.append(
                    {
                        "model": run["model"],
                        "run_name": run["run_name"],
                        "metric": metric,
                        "split": split or None,
                        "sub_split": None,
                        "status": "no data",
                        "detail": detail,
                    }
                )
    return rows


def threshold_gate(gate: ThresholdGate, tables: SuiteTables) -> GateResult:
    """Each matching run-level mean within [min, max]; a stat with count 0, or one that a run
    lacks although other runs of its scenario have it, is "no data"."""
    runs = selected_runs(tables.runs, gate.runs)
    judged = metric_rows(tables.run_stats, gate, set(runs["run_name"]))
    rows = missing_stats(judged, runs, "stats.json")
    for stat in records(judged):
        mean = None if pd.isna(stat["mean"]) else float(stat["mean"])
        if mean is None or stat["count"] == 0:
            status, detail = "no data", "HELM computed this stat on no instance (count 0)"
        elif (gate.min is not None and mean < gate.min) or (gate.max is not None and mean > gate.max):
            status, detail = "fail", f"{stat['metric']} {mean:.4g} not {gate.bounds()}"
        else:
            status, detail = "pass", ""
        rows.append(
            {key: stat[key] for key in ("model", "run_name", "metric", "split", "sub_split")}
            | {"actual": mean, "threshold": gate.bounds(), "status": status, "detail": detail}
        )
    return gate_result(gate, gate.bounds(), rows)


def judge_thresholds(gates: Sequence[ThresholdGate], tables: SuiteTables) -> list[GateResult]:
    """Every threshold gate of the policy on one suite."""
    return [threshold_gate(gate, tables) for gate in gates]
