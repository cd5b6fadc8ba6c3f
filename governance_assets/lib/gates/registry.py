"""Every kind of gate, registered once: its policy model, the table its evidence comes from, and
how a suite is judged by it. Adding a kind is one entry in `KINDS`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union

import pandas as pd
from pydantic import Field

from governance_assets.lib.gates.base import GateSettings, SuiteTables
from governance_assets.lib.gates.completeness import CompletenessGate, judge_completeness
from governance_assets.lib.gates.data_quality import DataQualityGate, judge_data_quality
from governance_assets.lib.gates.ingestion import ingestion_gate
from governance_assets.lib.gates.outcomes import GateResult
from governance_assets.lib.gates.regression import RegressionGate, RegressionSettings, regression_gates
from governance_assets.lib.gates.threshold import ThresholdGate, judge_thresholds
from governance_assets.lib.helm import tidy


@dataclass(frozen=True)
class GateInputs:
    """Everything a suite's gates read."""

    tables: SuiteTables
    baselines: Sequence[tuple[str, pd.DataFrame]]
    """Instance stats of earlier suites, most recent first."""
    regression: RegressionSettings


@dataclass(frozen=True)
class GateKind:
    """One kind of gate."""

    name: str
    model: type[GateSettings]
    table: tuple[str, ...]
    """The tidy table whose rows are the gate's evidence."""
    judge: Callable[[Sequence[Any], GateInputs], list[GateResult]]
    """All of the policy's gates of this kind on one suite (together, so that a kind can correct
    for multiple comparisons across them)."""


KINDS: tuple[GateKind, ...] = (
    GateKind(
        "threshold", ThresholdGate, tidy.RUN_STATS.key, lambda gates, inputs: judge_thresholds(gates, inputs.tables)
    ),
    GateKind(
        "regression",
        RegressionGate,
        tidy.INSTANCE_STATS.key,
        lambda gates, inputs: regression_gates(gates, inputs.tables, inputs.baselines, inputs.regression),
    ),
    GateKind(
        "completeness",
        CompletenessGate,
        tidy.PREDICTIONS.key,
        lambda gates, inputs: judge_completeness(gates, inputs.tables),
    ),
    GateKind(
        "data_quality",
        DataQualityGate,
        tidy.RUN_STATS.key,
        lambda gates, inputs: judge_data_quality(gates, inputs.tables),
    ),
)
KIND_BY_NAME = {kind.name: kind for kind in KINDS}

if TYPE_CHECKING:
    Gate = GateSettings
else:
    Gate = Annotated[Union[tuple(kind.model for kind in KINDS)], Field(discriminator="kind")]  # noqa: UP007
"""A gate of the policy: one of the registered kinds, told apart by `kind`."""


def evaluate_gates(gates: Sequence[GateSettings], inputs: GateInputs) -> list[GateResult]:
    """The ingestion gate, then every gate of the policy on one suite, in policy order."""
    results: dict[str, GateResult] = {}
    for kind in KINDS:
        of_kind = [gate for gate in gates if gate.kind == kind.name]
        if of_kind:
            results |= {result.gate: result for result in kind.judge(of_kind, inputs)}
    return [ingestion_gate(inputs.tables), *(results[gate.name] for gate in gates)]
