"""The release decision: promote or block each model of a suite, from the verdict rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal


def stops_release(verdict: Mapping[str, Any], inconclusive: Literal["block", "warn"]) -> bool:
    """Whether a verdict row blocks its model: an ERROR-severity gate that failed or had no data
    (nothing is promoted on missing stats), or was inconclusive when the policy blocks on that."""
    if verdict["severity"] != "error":
        return False
    status = verdict["status"]
    return status in ("fail", "no data") or (status == "inconclusive" and inconclusive == "block")


def release_decisions(verdicts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per model: `block` with the reasons (every verdict row whose `blocks_release` is set, as
    `stops_release` decided when the gates were judged), or `promote` with any warnings. Model `*`
    rows (gates judged on no model) apply to every model."""
    models = sorted({str(v["model"]) for v in verdicts if v["model"] != "*"}) or ["*"]
    decisions = []
    for model in models:
        blockers: list[str] = []
        warnings: list[str] = []
        for verdict in verdicts:
            if verdict["model"] not in (model, "*") or verdict["status"] == "pass":
                continue
            reason = f"{verdict['gate']}: {verdict['reason']}"
            (blockers if verdict["blocks_release"] else warnings).append(reason)
        decisions.append(
            {"model": model, "decision": "block" if blockers else "promote", "reasons": blockers, "warnings": warnings}
        )
    return decisions
