"""What every gate shares: its policy fields, which runs it applies to, and the suite's tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from governance_assets.lib.core.strict import StrictModel
from governance_assets.lib.helm.selection import arrow_column, pattern_mask


class RunSelector(StrictModel):
    """Which runs a gate applies to: shell-style patterns (`*`, `?`, `[ab]`), all must match."""

    scenario: str = "*"
    model: str = "*"
    run_group: str = "*"
    """Matches if any of the run's HELM run groups matches."""


class GateSettings(StrictModel):
    """The fields of every gate in the policy."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    """The check's name in Dagster (lower_snake_case)."""
    kind: str
    """Which registered kind of gate this is (`lib.gates.registry.KINDS`)."""
    description: str = ""
    blocking: bool = False
    """A failing blocking gate stops `release/decision` for the suite (ERROR severity)."""
    severity: Literal["error", "warn"] = "error"
    """Severity of a failure of a non-blocking gate (blocking gates always fail at ERROR)."""
    runs: RunSelector = RunSelector()


class MetricGateSettings(GateSettings):
    """A gate on HELM metrics."""

    metrics: Annotated[list[str], Field(min_length=1)]
    """Metric name patterns, e.g. `exact_match` or `bias_metric:*`."""
    split: str = "*"
    perturbation: str | None = None
    """None: plain (unperturbed) stats only; else a pattern over the perturbation label,
    e.g. `robustness,computed_on=worst`."""


@dataclass(frozen=True)
class SuiteTables:
    """The tidy tables of one suite, as gates read them, and what could not be read into them."""

    runs: pd.DataFrame
    run_stats: pd.DataFrame
    instance_stats: pd.DataFrame
    predictions: pd.DataFrame
    unreadable: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Run name -> why a file of that run could not be ingested (one reason per table)."""


def selected_runs(runs: pd.DataFrame, selector: RunSelector) -> pd.DataFrame:
    """The complete runs that a gate's selector matches."""
    complete = runs[runs["status"] == "complete"]

    def matches(row: pd.Series) -> bool:  # type: ignore[type-arg]
        groups = list(row["groups"]) if row["groups"] is not None else []
        return (
            fnmatchcase(str(row["scenario"]), selector.scenario)
            and fnmatchcase(str(row["model"]), selector.model)
            and (selector.run_group == "*" or any(fnmatchcase(g, selector.run_group) for g in groups))
        )

    return complete[complete.apply(matches, axis=1)] if len(complete) else complete


def metric_rows(table: pd.DataFrame, gate: MetricGateSettings, run_names: set[str]) -> pd.DataFrame:
    """Rows of a stats table for the gate's runs, metrics, split and perturbation. The metric is
    matched first, on the whole table (millions of rows, in Arrow); the rest on what it kept."""
    if table.empty:
        return table
    table = table[pattern_mask(table["metric"], gate.metrics)]
    if table.empty:
        return table
    names = arrow_column(table["run_name"])
    keep = pc.is_in(names, value_set=pa.array(sorted(run_names), names.type)).to_numpy(zero_copy_only=False)
    if gate.split != "*":
        keep &= pattern_mask(table["split"], [gate.split])
    perturbation = arrow_column(table["perturbation"])
    if gate.perturbation is None:
        keep &= pc.is_null(perturbation).to_numpy(zero_copy_only=False)
    else:
        keep &= pattern_mask(table["perturbation"], [gate.perturbation])
    selected: pd.DataFrame = table[keep]
    return selected


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a frame as dicts."""
    return frame.to_dict("records")  # type: ignore[return-value]
