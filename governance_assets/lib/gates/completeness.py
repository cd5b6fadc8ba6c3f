"""Completeness gates: every run complete, as many instances as planned, few failed requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import Field

from governance_assets.lib.gates.base import GateSettings, RunSelector, SuiteTables, records, selected_runs
from governance_assets.lib.gates.outcomes import GateResult, gate_result


class CompletenessGate(GateSettings):
    """Every run complete, instance counts as planned, failed requests under a limit."""

    kind: Literal["completeness"]
    max_failed_request_share: Annotated[float, Field(ge=0, le=1)] = 0.0


def planned_instances(runs: pd.DataFrame) -> dict[str, int]:
    """Run name -> `max_eval_instances` from its run spec, for the complete runs."""
    return {
        str(row["run_name"]): int(row["max_eval_instances"])
        for row in records(runs)
        if row["status"] == "complete" and not pd.isna(row["max_eval_instances"])
    }


def completeness_gate(gate: CompletenessGate, tables: SuiteTables) -> GateResult:
    """Every run complete; as many eval instances as the run asked for; failed requests under
    the limit."""
    runs, predictions = tables.runs, tables.predictions
    planned = planned_instances(runs)
    selected = (
        runs
        if gate.runs == RunSelector()
        else pd.concat([selected_runs(runs, gate.runs), runs[runs["status"] != "complete"]])
    )
    plain = predictions[predictions["perturbation"].isna()]
    instances_per_run = plain.groupby("run_name")["instance_id"].nunique().to_dict()
    failed_share_per_run = (predictions["success"] == False).groupby(predictions["run_name"]).mean().to_dict()  # noqa: E712
    rows = []
    for run in records(selected):
        row: dict[str, Any] = {"model": run["model"], "run_name": run["run_name"], "run_status": run["status"]}
        if run["status"] != "complete":
            rows.append(row | {"status": "fail", "detail": f"run {run['status']}: {run['error']}"})
            continue
        instances = int(instances_per_run.get(run["run_name"], 0))
        failed_share = float(failed_share_per_run.get(run["run_name"], 0.0))
        expected = planned.get(run["run_name"])
        problems = []
        if expected is not None and instances < expected:
            problems.append(f"{instances} instances, {expected} planned")
        if failed_share > gate.max_failed_request_share:
            problems.append(f"{failed_share:.1%} of requests failed (limit {gate.max_failed_request_share:.1%})")
        rows.append(
            row
            | {
                "instances": instances,
                "planned_instances": expected,
                "failed_request_share": failed_share,
                "status": "fail" if problems else "pass",
                "detail": "; ".join(problems),
            }
        )
    threshold = f"all runs complete, planned instances present, failed requests <= {gate.max_failed_request_share:.1%}"
    return gate_result(gate, threshold, rows)


def judge_completeness(gates: Sequence[CompletenessGate], tables: SuiteTables) -> list[GateResult]:
    """Every completeness gate of the policy on one suite."""
    return [completeness_gate(gate, tables) for gate in gates]
