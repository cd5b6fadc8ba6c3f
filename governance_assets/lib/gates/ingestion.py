"""The gate every suite gets whatever the policy says: each model's runs were all read.

A run whose files HELM did not finish, or whose stats, instance stats or predictions could not
be parsed, is missing from the tables the other gates judge; its model is never promoted on the
rest. This gate fails at ERROR and blocks, naming the file and the reason.
"""

from __future__ import annotations

from typing import Any

from governance_assets.lib.gates.base import SuiteTables, records
from governance_assets.lib.gates.outcomes import GateResult, overall

INGESTION_GATE = "all_runs_ingested"


def ingestion_gate(tables: SuiteTables) -> GateResult:
    """One evidence row per run: pass when complete and read into every table, else fail with why."""
    rows: list[dict[str, Any]] = []
    for run in records(tables.runs):
        problems = [] if run["status"] == "complete" else [f"run {run['status']}: {run['error']}"]
        problems += list(tables.unreadable.get(str(run["run_name"]), ()))
        rows.append(
            {
                "model": run["model"],
                "run_name": run["run_name"],
                "status": "fail" if problems else "pass",
                "detail": "; ".join(problems),
            }
        )
    failed = sum(row["status"] == "fail" for row in rows)
    return GateResult(
        INGESTION_GATE,
        "ingestion",
        True,
        overall([row["status"] for row in rows]),
        "every run complete and read into every table",
        f"{failed} of {len(rows)} runs not ingested",
        rows,
    )
