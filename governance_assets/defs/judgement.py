"""Turning per-suite judgements into asset check results (one place for the outcome rules)."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import dagster as dg

Outcome = Literal["pass", "fail", "inconclusive", "no data"]


@dataclass(frozen=True)
class Judgement:
    """What a check found for one suite."""

    outcome: Outcome
    actual: float | int | str | None
    threshold: float | int | str | None
    evidence: Any
    """JSON-able rows that show why (the UI renders them)."""
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR
    """Severity when the outcome is `fail`; "no data" is always WARN, never a pass."""
    metadata: Mapping[str, Any] = field(default_factory=dict)


def _severity(judgement: Judgement) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.WARN if judgement.outcome == "no data" else judgement.severity


def check_result(judgement: Judgement) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=judgement.outcome == "pass",
        severity=_severity(judgement),
        metadata={
            "outcome": judgement.outcome,
            "threshold": judgement.threshold,
            "actual": judgement.actual,
            "evidence": dg.MetadataValue.json(judgement.evidence),
            **judgement.metadata,
        },
    )


def judge_partitions(context: dg.AssetCheckExecutionContext, judge: Callable[[str], Judgement]) -> dg.AssetCheckResult:
    """Judge the run's partition (a suite or a day); a run over a range of partitions gets one
    result that fails if any fails (Dagster records it without a partition) and lists each outcome."""
    judgements = {suite: judge(suite) for suite in context.partition_keys}
    if len(judgements) == 1:
        return check_result(next(iter(judgements.values())))
    outcomes = {suite: j.outcome for suite, j in judgements.items()}
    failed = [j for j in judgements.values() if j.outcome != "pass"]
    worst = min(failed, key=lambda j: _severity(j) != dg.AssetCheckSeverity.ERROR, default=None)
    return dg.AssetCheckResult(
        passed=not failed,
        severity=_severity(worst) if worst else dg.AssetCheckSeverity.ERROR,
        metadata={
            "outcome": "pass" if not failed else "fail",
            "suites": dg.MetadataValue.json(outcomes),
            "evidence": dg.MetadataValue.json({s: j.evidence for s, j in judgements.items() if j.outcome != "pass"}),
        },
    )
