"""Threshold gates: each matching run-level mean within [min, max]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

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


def threshold_gate(gate: ThresholdGate, tables: SuiteTables) -> GateResult:
    """Each matching run-level mean within [min, max]; a stat with count 0 is "no data"."""
    judged = metric_rows(tables.run_stats, gate, set(selected_runs(tables.runs, gate.runs)["run_name"]))
    rows = []
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
