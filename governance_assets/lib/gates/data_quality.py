"""Great Expectations suites for the tidy HELM tables (an ephemeral context: no files, no network)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from governance_assets.lib.gates.base import GateSettings, SuiteTables
from governance_assets.lib.gates.outcomes import GateResult, overall
from governance_assets.lib.helm.tidy import INSTANCE_STATS_SCHEMA, PREDICTIONS_SCHEMA, RUN_STATS_SCHEMA

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")  # no usage statistics over the network

REQUIRED = {
    "run_stats": ["suite", "run_name", "model", "scenario", "metric", "count"],
    "instance_stats": ["suite", "run_name", "model", "instance_id", "train_trial_index", "metric"],
    "predictions": ["suite", "run_name", "model", "instance_id", "train_trial_index", "input"],
}
FINITE = 1.7976931348623157e308
"""Largest finite float: a value outside ±FINITE is infinite."""
NUMBERS = {"run_stats": ["mean"], "instance_stats": ["value"]}
"""The columns the gates judge, whose values must be finite (the parser already refuses
non-finite numbers in every column; this catches tables written by anything else)."""


class DataQualityGate(GateSettings):
    """A Great Expectations suite on the tidy tables: schema, required values, finite numbers and
    ranges (count ≥ 0, stddev ≥ 0, min ≤ mean ≤ max)."""

    kind: Literal["data_quality"]


COLUMNS = {
    "run_stats": RUN_STATS_SCHEMA.names,
    "instance_stats": INSTANCE_STATS_SCHEMA.names,
    "predictions": PREDICTIONS_SCHEMA.names,
}


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's result on one table."""

    table: str
    expectation: str
    column: str | None
    success: bool
    unexpected_count: int | None
    examples: list[Any]


def _expectations(table: str) -> list[Any]:
    import great_expectations as gx

    expectations: list[Any] = [
        gx.expectations.ExpectTableColumnsToMatchSet(column_set=COLUMNS[table], exact_match=True)
    ]
    expectations += [gx.expectations.ExpectColumnValuesToNotBeNull(column=c) for c in REQUIRED[table]]
    for column in NUMBERS.get(table, []):  # finite: the column's extremes (one pass each) within ±FINITE
        expectations += [
            gx.expectations.ExpectColumnMaxToBeBetween(column=column, max_value=FINITE),
            gx.expectations.ExpectColumnMinToBeBetween(column=column, min_value=-FINITE),
        ]
    if table == "run_stats":
        expectations += [
            gx.expectations.ExpectColumnValuesToBeBetween(column="count", min_value=0),
            gx.expectations.ExpectColumnValuesToBeBetween(column="stddev", min_value=0),
            gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="max",
                column_B="min",
                or_equal=True,
                ignore_row_if="either_value_is_missing",
            ),
            gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="mean",
                column_B="min",
                or_equal=True,
                ignore_row_if="either_value_is_missing",
            ),
            gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="max",
                column_B="mean",
                or_equal=True,
                ignore_row_if="either_value_is_missing",
            ),
        ]
    if table == "instance_stats":
        expectations.append(gx.expectations.ExpectColumnValuesToBeBetween(column="train_trial_index", min_value=0))
    return expectations


def _numpy_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """Numeric Arrow-backed columns as float64 NumPy columns: GE compares ranges vectorised on
    NumPy data but row by row in Python on Arrow-backed columns."""
    converted = {}
    for column in frame.columns:
        dtype = frame[column].dtype
        if isinstance(dtype, pd.ArrowDtype) and (
            pa.types.is_integer(dtype.pyarrow_dtype) or pa.types.is_floating(dtype.pyarrow_dtype)
        ):
            converted[str(column)] = frame[column].to_numpy(dtype="float64", na_value=np.nan)
    return frame.assign(**converted) if converted else frame


def validate_tables(tables: Mapping[str, pd.DataFrame]) -> list[ExpectationOutcome]:
    """Run each table's expectation suite; one outcome per expectation."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GE fingerprints every in-memory frame smaller than HASH_THRESHOLD by hashing it, twice
    # per validation (pickling list columns); nothing here uses that fingerprint, and on a
    # large suite it costs more than the validation itself.
    pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("governance")
    outcomes = []
    for table, frame in tables.items():
        batch_definition = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"helm_{table}"))
        for expectation in _expectations(table):
            suite.add_expectation(expectation)
        result = batch_definition.get_batch(batch_parameters={"dataframe": _numpy_numbers(frame)}).validate(suite)
        for item in result.results:
            config = item.expectation_config
            outcomes.append(
                ExpectationOutcome(
                    table=table,
                    expectation=config.type,
                    column=config.kwargs.get("column") or config.kwargs.get("column_A"),
                    success=bool(item.success),
                    unexpected_count=item.result.get("unexpected_count"),
                    examples=[str(v) for v in (item.result.get("partial_unexpected_list") or [])[:5]],
                )
            )
    return outcomes


def data_quality_gate(gate: DataQualityGate, suite: SuiteTables) -> GateResult:
    """The expectation suites as a gate: each failed expectation is a failed evidence row."""
    tables = {
        "run_stats": suite.run_stats,
        "instance_stats": suite.instance_stats,
        "predictions": suite.predictions,
    }
    if all(frame.empty for frame in tables.values()):
        return GateResult(gate.name, gate.kind, gate.blocking, "no data", "every expectation met", "no rows", [])
    rows = [
        {
            "table": o.table,
            "expectation": o.expectation,
            "column": o.column,
            "unexpected_count": o.unexpected_count,
            "examples": o.examples,
            "status": "pass" if o.success else "fail",
            "detail": "" if o.success else f"{o.table}.{o.column or '*'}: {o.expectation} ({o.unexpected_count} rows)",
        }
        for o in validate_tables(tables)
    ]
    statuses = [str(row["status"]) for row in rows]
    actual = f"{statuses.count('fail')} of {len(rows)} expectations failed"
    return GateResult(
        gate.name,
        gate.kind,
        gate.blocking,
        overall(statuses),
        "every expectation met",
        actual,
        rows,
    )


def judge_data_quality(gates: Sequence[DataQualityGate], tables: SuiteTables) -> list[GateResult]:
    """Every data-quality gate of the policy on one suite."""
    return [data_quality_gate(gate, tables) for gate in gates]
