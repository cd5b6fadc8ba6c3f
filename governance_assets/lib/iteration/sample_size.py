"""Evaluation designs that decide an inconclusive comparison: how many instances, and how many
HELM train trials per instance, the regression gate's own test needs.

The gate averages an instance's train trials and runs the paired t-test on the instance means
(`lib.core.noninferiority`), so with T trials the variance of an instance's drop is
σ²_between + σ²_within / T: more trials only shrink the second part. Both parts are estimated
from the comparison's per-trial drops (one-way random-effects ANOVA, the method of moments), and
each design (n instances × T trials) is sized with `instances_to_decide`; its cost is n·T model
calls per run. With one trial per instance the parts cannot be told apart and only the number
of instances is planned.

A design can only use the instances the scenario has. How many that is comes from the run itself:
when HELM evaluated fewer instances than `max_eval_instances`, it evaluated all of them; otherwise
it drew them with `np.random.seed(0); np.random.choice(pool, max_eval_instances, replace=False)`
(`helm.benchmark.runner.downsample_eval_instances`) from a pool whose instances it had numbered
`id0, id1, …` in order, so the drawn ids identify the pool's size: the one size whose seeded draw,
shifted past the train instances, gives exactly these ids. Pure numpy and pandas: no Dagster, no I/O.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from governance_assets.lib.core.noninferiority import MarginTest, instances_to_decide

TRIAL_OPTIONS = (1, 2, 3, 5)
"""Train-trial counts a plan considers (HELM's `num_train_trials` run expander offers 1 to 5)."""
HELM_SAMPLE_SEED = 0
"""The seed of HELM's draw of evaluation instances (`downsample_eval_instances`)."""
MIN_DRAWN = 5
"""Fewer drawn instances than this could match a pool of the wrong size by chance: not inferred."""
MAX_POOL = 20_000
"""Largest pool size searched (MMLU's largest subject has 1,534 test questions)."""


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


def _id_numbers(instance_ids: Sequence[str]) -> tuple[int, ...] | None:
    """HELM's instance numbers (`id<N>`), sorted and unique; None if an id is not HELM's."""
    matches = [re.fullmatch(r"id(\d+)", str(value)) for value in set(instance_ids)]
    return tuple(sorted(int(m.group(1)) for m in matches if m)) if matches and all(matches) else None


@functools.lru_cache(maxsize=256)
def _pool_size(numbers: tuple[int, ...]) -> int | None:
    observed = np.asarray(numbers)
    state = np.random.RandomState()  # HELM reseeds numpy's legacy global generator; so do we, privately
    for size in range(len(numbers), MAX_POOL + 1):
        state.seed(HELM_SAMPLE_SEED)
        drawn = np.sort(state.permutation(size)[: len(numbers)])  # what choice(replace=False) takes
        if observed[0] >= drawn[0] and np.array_equal(drawn + (observed[0] - drawn[0]), observed):
            return size
    return None


def evaluation_pool(instance_ids: Sequence[str], max_eval_instances: int | None) -> int | None:
    """How many evaluation instances (all eval splits) the run's scenario has, from the ids HELM
    evaluated: their count when HELM evaluated fewer than `max_eval_instances` (or had no limit),
    else the pool size whose seeded draw gives exactly these ids; None when no size up to
    MAX_POOL does (ids not numbered in order) or fewer than MIN_DRAWN were drawn."""
    numbers = _id_numbers(instance_ids)
    if numbers is None:
        return None
    if max_eval_instances is None or len(numbers) < max_eval_instances:
        return len(numbers)
    return _pool_size(numbers) if len(numbers) >= MIN_DRAWN else None


def instances_available(runs: pd.DataFrame, instance_stats: pd.DataFrame) -> dict[tuple[str, str | None], int]:
    """Per run and split, the most paired instances any evaluation of the run can have: the split's
    evaluated count when HELM evaluated the whole scenario, else the evaluation pool (an upper bound
    on any split); with split None, the pool. Runs whose pool cannot be told are left out."""
    plain = instance_stats[instance_stats["perturbation"].isna()]
    limits = dict(zip(runs["run_name"], runs["max_eval_instances"], strict=True))
    available: dict[tuple[str, str | None], int] = {}
    for run, rows in plain.groupby("run_name", observed=True, sort=True):
        limit = limits.get(run)
        pool = evaluation_pool(list(rows["instance_id"]), None if pd.isna(limit) else int(limit))
        if pool is None:
            continue
        exhausted = pool == rows["instance_id"].nunique()
        available[(str(run), None)] = pool
        for split, ids in rows.groupby("split", observed=True)["instance_id"]:
            available[(str(run), str(split))] = int(ids.nunique()) if exhausted else pool
    return available


def decidable_tolerance(drop: float, tolerance: float, needed: int, available: int) -> float:
    """About the tolerance that `available` instances decide at the same power: the needed count
    grows as 1 / (tolerance - drop)², so the margin widens by √(needed / available)."""
    margin = abs(tolerance - drop) * math.sqrt(needed / available)
    return drop + margin if tolerance >= drop else drop - margin
