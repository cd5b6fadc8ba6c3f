"""What a gate may conclude, and one gate's judgement of a suite."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["pass", "fail", "inconclusive", "no data"]
OUTCOMES: tuple[Outcome, ...] = ("pass", "fail", "inconclusive", "no data")


@dataclass(frozen=True)
class GateResult:
    """One gate's judgement of one suite."""

    gate: str
    kind: str
    blocking: bool
    outcome: Outcome
    threshold: str
    actual: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    """Evidence, one row per run (× metric) judged, each with its own `status` and `detail`."""


def overall(statuses: Sequence[str]) -> Outcome:
    """fail if anything failed; else inconclusive if anything was; else no data if anything had
    none (or nothing was judged); else pass."""
    if "fail" in statuses:
        return "fail"
    if "inconclusive" in statuses:
        return "inconclusive"
    if not statuses or "no data" in statuses:
        return "no data"
    return "pass"


def summarise(rows: Sequence[dict[str, Any]]) -> str:
    """`2 of 5 failed, 1 inconclusive, 1 without data`: the counts behind an outcome."""
    statuses = [str(row["status"]) for row in rows]
    parts = [f"{statuses.count('fail')} of {len(rows)} failed"]
    if statuses.count("inconclusive"):
        parts.append(f"{statuses.count('inconclusive')} inconclusive")
    if statuses.count("no data"):
        parts.append(f"{statuses.count('no data')} without data")
    return ", ".join(parts)


def gate_result(gate: Any, threshold: str, rows: list[dict[str, Any]], actual: str | None = None) -> GateResult:
    """A gate's result from its evidence rows (`gate` is its policy settings)."""
    return GateResult(
        gate.name,
        gate.kind,
        gate.blocking,
        overall([str(row["status"]) for row in rows]),
        threshold,
        actual or summarise(rows),
        rows,
    )
