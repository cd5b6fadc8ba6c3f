"""What a gate may conclude, and one gate's judgement of a suite."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["pass", "fail", "no data"]


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
    """Evidence, one row per run (× metric) judged, each with its own `status`."""


def overall(statuses: Sequence[str]) -> Outcome:
    """fail if anything failed; else no data if anything had none (or nothing was judged)."""
    if "fail" in statuses:
        return "fail"
    if not statuses or "no data" in statuses:
        return "no data"
    return "pass"
