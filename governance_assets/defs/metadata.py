"""Formatting Dagster metadata for the UI."""

from collections.abc import Mapping, Sequence
from typing import Any


def md_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of `rows` (the UI renders it in the asset's metadata)."""
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join(
        "| " + " | ".join(str(row.get(c, "")).replace("|", "\\|").replace("\n", " ") for c in columns) + " |\n"
        for row in rows
    )
    return header + body
