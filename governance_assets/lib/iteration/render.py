"""The iteration plan as Markdown and HTML (for the reports folder and MLflow)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

COLUMNS = (
    "rank",
    "kind",
    "model",
    "blocks_release",
    "problem",
    "action",
    "expected_gain",
    "instances",
    "model_calls",
    "evidence",
)


def _cell(row: Mapping[str, Any], column: str) -> str:
    value = row[column]
    if column == "expected_gain":
        if value is None:
            return "a decision" if row["evaluation_plan"] else "-"
        return f"{value:+.3f} [{row['gain_low'] if row['gain_low'] is not None else '?'}, {row['gain_high'] if row['gain_high'] is not None else '?'}]"
    return str(value)


def plan_markdown(suite: str, ranked: Sequence[Mapping[str, Any]], evaluation_plan: Mapping[str, int]) -> str:
    """A Markdown document: the ranked items, and the evaluation plan that would decide the inconclusive ones."""
    lines = [f"# Iteration plan for suite {suite}", ""]
    if evaluation_plan:
        settings = ", ".join(f"{k}={v}" for k, v in evaluation_plan.items())
        lines += [f"Evaluation plan that decides every inconclusive comparison: {settings}", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(row, c).replace("|", "\\|") for c in COLUMNS) + " |" for row in ranked]
    return "\n".join(lines) + "\n"


def plan_html(suite: str, ranked: Sequence[Mapping[str, Any]], evaluation_plan: Mapping[str, int]) -> str:
    """The same document as a standalone HTML page."""
    header = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row, c))}</td>" for c in COLUMNS) + "</tr>" for row in ranked
    )
    settings = ", ".join(f"{k}={v}" for k, v in evaluation_plan.items())
    decide = (
        f"<p>Evaluation plan that decides every inconclusive comparison: {html.escape(settings)}</p>"
        if settings
        else ""
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Iteration plan {html.escape(suite)}</title>"
        "<style>table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;vertical-align:top}</style>"
        f"</head><body><h1>Iteration plan for suite {html.escape(suite)}</h1>{decide}<table><tr>{header}</tr>{body}</table></body></html>"
    )
