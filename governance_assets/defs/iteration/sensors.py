"""Plan the next iteration of a suite as soon as its evaluation ends, whatever its outcome: a
blocking gate that stops the release (and, in Dagster, everything downstream of the verdicts in
that run) is exactly when a plan is needed."""

import dagster as dg

from governance_assets.defs.iteration.jobs import plan_iteration
from governance_assets.defs.jobs import after_evaluation

plan_after_evaluation = after_evaluation(
    dg.DagsterRunStatus.SUCCESS,
    "plan_after_evaluation",
    "Requests the iteration plan of each evaluated suite.",
    plan_iteration,
    "plan",
)
plan_after_blocked_evaluation = after_evaluation(
    dg.DagsterRunStatus.FAILURE,
    "plan_after_blocked_evaluation",
    "Requests the iteration plan of a suite whose evaluation failed (for example on a blocking gate).",
    plan_iteration,
    "plan",
)
