"""Evaluation designs that decide an inconclusive comparison: how many instances, and how many
HELM train trials per instance, the regression gate's own test needs.

The gate averages an instance's train trials and runs the paired t-test on the instance means
(`lib.core.noninferiority`), so with T trials the variance of an instance's drop is
σ²_between + σ²_within / T: more trials only shrink the second part. Both parts are estimated
from the comparison's per-trial drops (one-way random-effects ANOVA, the method of moments), and
each design (n instances × T trials) is sized with `instances_to_decide`; its cost is n·T model
calls per run. With one trial per instance the parts cannot be told apart and only the number
of instances is planned. Pure numpy and pandas: no Dagster, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from governance_assets.lib.core.noninferiority import MarginTest, instances_to_decide

TRIAL_OPTIONS = (1, 2, 3, 5)
"""Train-trial counts a plan considers (HELM's `num_train_trials` run expander offers 1 to 5)."""


@dataclass(frozen=True)
class VarianceComponents:
    """How an instance's drop varies: between instances and between the trials of one instance."""

    between: float
    within: float | None
    """None when every instance has one trial (the parts cannot be told apart)."""
    trials: int


@dataclass(frozen=True)
class Design:
    """An evaluation design and what it costs per run."""

    instances: int
    trials: int
    model_calls: int


def variance_components(drops: ArrayLike) -> VarianceComponents:
    """Method-of-moments estimates from per-trial drops, an (instances × trials) array: the
    within part is the mean of the instances' trial variances, the between part what the variance
    of the instance means has beyond within / T (floored at 0)."""
    matrix = np.asarray(drops, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 2 or not np.isfinite(matrix).all():
        raise ValueError(
            f"drops must be a finite (instances × trials) array with 2+ instances, got shape {matrix.shape}"
        )
    trials = matrix.shape[1]
    means = matrix.mean(axis=1)
    if trials == 1:
        return VarianceComponents(float(means.var(ddof=1)), None, 1)
    within = float(matrix.var(axis=1, ddof=1).mean())
    return VarianceComponents(max(0.0, float(means.var(ddof=1)) - within / trials), within, trials)


def designs_to_decide(
    drop: float,
    components: VarianceComponents,
    tolerance: float,
    alpha: float,
    power: float,
    trial_options: Sequence[int] = TRIAL_OPTIONS,
) -> list[Design]:
    """Each design that decides the comparison at `power` if `drop` is the true mean drop, cheapest
    (model calls) first; only the observed trial count when the within part is unknown."""
    options = trial_options if components.within is not None else (components.trials,)
    designs = []
    for trials in options:
        spread = math.sqrt(components.between + (components.within or 0.0) / trials)
        planned = MarginTest("paired_t", 0, 0.0, 0.0, drop, 0.0, 0.0, 1.0, 1.0, spread)
        instances = instances_to_decide(planned, tolerance, alpha, power)
        if instances is not None:
            designs.append(Design(instances, trials, instances * trials))
    return sorted(designs, key=lambda design: (design.model_calls, design.trials))


def paired_trial_drops(
    candidate: pd.DataFrame,
    baseline: pd.DataFrame,
    run_name: str,
    metric: str,
    split: str | None,
    higher_is_better: bool = True,
) -> np.ndarray:  # type: ignore[type-arg]
    """Per-trial drops (instances × trials) of one comparison from two `helm/instance_stats`
    tables: unperturbed values paired by instance and train-trial index (HELM samples the same
    in-context examples for a trial index in both suites); instances missing a trial are left out."""

    def pivot(table: pd.DataFrame) -> pd.DataFrame:
        rows = table[
            (table["run_name"] == run_name)
            & (table["metric"] == metric)
            & table["perturbation"].isna()
            & ((table["split"] == split) if split is not None else table["split"].isna())
        ]
        return rows.pivot_table(index="instance_id", columns="train_trial_index", values="value", aggfunc="mean")

    base, cand = pivot(baseline).astype("float64"), pivot(candidate).astype("float64")
    trials = base.columns.intersection(cand.columns)
    joined = base[trials].join(cand[trials], how="inner", lsuffix="_b", rsuffix="_c").dropna()
    drops: np.ndarray = joined.iloc[:, : len(trials)].to_numpy() - joined.iloc[:, len(trials) :].to_numpy()  # type: ignore[type-arg]
    return drops if higher_is_better else -drops
