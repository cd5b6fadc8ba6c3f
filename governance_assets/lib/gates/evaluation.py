"""A suite's gates judged once: the tables they read, the verdict rows per gate × model, and
the one-line reason a reviewer reads."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.gates.base import SuiteTables
from governance_assets.lib.gates.outcomes import GateResult, overall, summarise
from governance_assets.lib.helm.tidy import RUNS_KEY, TIDY_TABLES, TidyTable

SHOWN_RUNS = 3
"""Runs named in a one-line reason before "and N more"."""


def read_frame(warehouse: Warehouse, spec: TidyTable, suite: str) -> pd.DataFrame:
    """A tidy table as pandas with Arrow-backed columns (no copy of millions of strings into
    Python objects); an empty frame when the table was never built."""
    table = warehouse.read_cached(spec.key, suite)
    frame: pd.DataFrame = (table if table is not None else spec.schema.empty_table()).to_pandas(
        types_mapper=pd.ArrowDtype
    )
    return frame


def unreadable_runs(warehouse: Warehouse, suite: str, runs: pd.DataFrame) -> dict[str, list[str]]:
    """Run name -> why it is missing from a tidy table: the table's recorded parse errors, or
    the table was never built (then every complete run is missing from it)."""
    complete = [str(name) for name in runs.loc[runs["status"] == "complete", "run_name"]]
    missing: dict[str, list[str]] = {}
    for spec in TIDY_TABLES:
        if not warehouse.path(spec.key, suite).exists():
            for name in complete:
                missing.setdefault(name, []).append(f"{'/'.join(spec.key)} was never built for suite {suite}")
            continue
        for name, error in (warehouse.read_annotation(spec.key, suite, "errors") or {}).items():
            missing.setdefault(str(name), []).append(str(error))
    return missing


def load_suite_tables(warehouse: Warehouse, suite: str) -> SuiteTables | None:
    """The suite's tables as gates read them, or None when `helm/runs` was never built."""
    runs_table = warehouse.read(RUNS_KEY, suite)
    if runs_table is None:
        return None
    runs = runs_table.to_pandas()
    frames = {spec.key: read_frame(warehouse, spec, suite) for spec in TIDY_TABLES}
    return SuiteTables(
        runs,
        frames[("helm", "run_stats")],
        frames[("helm", "instance_stats")],
        frames[("helm", "predictions")],
        unreadable_runs(warehouse, suite, runs),
    )


def evidence_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Evidence rows as plain JSON values (NaN and ±inf become null, numpy scalars become Python)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float | np.floating):
            return None if not np.isfinite(value) else float(value)
        if isinstance(value, np.integer | np.bool_):
            return value.item()
        if isinstance(value, list | tuple | np.ndarray):
            return [clean(v) for v in value]
        return value

    return [{k: clean(v) for k, v in row.items()} for row in rows]


def one_line_reason(status: str, evidence: Sequence[Mapping[str, Any]], fallback: str) -> str:
    """`fail: exact_match 0.31 not >= 0.5 on 2 of 3 runs (run_a, run_b)`: the outcome, the first
    deciding row's detail, and which runs share the outcome."""
    if not evidence:
        return f"{status}: {fallback}"
    if status == "pass":
        return f"pass: all {len(evidence)} comparisons"
    deciding = [row for row in evidence if row["status"] == status]
    names = list(dict.fromkeys(str(row.get("run_name") or row.get("table") or "") for row in deciding))
    shown = ", ".join(name for name in names[:SHOWN_RUNS] if name)
    more = f" and {len(names) - SHOWN_RUNS} more" if len(names) > SHOWN_RUNS else ""
    detail = next((str(row["detail"]) for row in deciding if row.get("detail")), "")
    where = f" on {len(deciding)} of {len(evidence)} comparisons" + (f" ({shown}{more})" if shown else "")
    return f"{status}: {detail}{where}" if detail else f"{status}{where}"


def verdict_rows(suite: str, results: Sequence[GateResult], severities: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per gate × model (gates judged on no model, e.g. data quality, use model `*`)."""
    rows = []
    for result in results:
        by_model: dict[str, list[dict[str, Any]]] = {}
        for row in result.rows:
            by_model.setdefault(str(row.get("model") or "*"), []).append(row)
        severity = "error" if result.blocking or severities.get(result.gate) == "error" else "warn"
        for model, evidence in sorted(by_model.items()) or [("*", [])]:
            status = overall([str(row["status"]) for row in evidence]) if evidence else result.outcome
            failing = sorted(
                {str(row["run_name"]) for row in evidence if row["status"] == "fail" and row.get("run_name")}
            )
            rows.append(
                {
                    "suite": suite,
                    "model": model,
                    "gate": result.gate,
                    "kind": result.kind,
                    "blocking": result.blocking,
                    "severity": severity,
                    "status": status,
                    "reason": one_line_reason(status, evidence, result.actual),
                    "actual": summarise(evidence) if evidence else result.actual,
                    "threshold": result.threshold,
                    "failing_runs": failing,
                    "evidence": json.dumps(evidence_rows(evidence), default=str),
                }
            )
    return rows
