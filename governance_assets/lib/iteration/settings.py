"""The policy's `iteration:` section: guided sweeps over HELM adapter settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from governance_assets.lib.core.strict import StrictModel

TRIAL_SUITE_PREFIX = "sweep-"
"""Suites made by a guided sweep's trials (`sweep-<study>-t<number>`): other settings than the
plan's, so they are kept out of the suites' metric trends."""


class SearchParameter(StrictModel):
    """One adapter setting to search, named after the HELM run expander that sets it
    (`max_train_instances`, `temperature`, `instructions`, `prompt`, `num_train_trials`, …)."""

    kind: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: list[str | int | float] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchParameter:
        if self.kind == "categorical" and not self.choices:
            raise ValueError("a categorical parameter needs 'choices'")
        if self.kind != "categorical" and (self.low is None or self.high is None or self.low > self.high):
            raise ValueError(f"an {self.kind} parameter needs 'low' <= 'high'")
        return self


class Bound(StrictModel):
    """A constraint on a metric's mean over a trial's runs."""

    min: float | None = None
    max: float | None = None


class Objective(StrictModel):
    """What a sweep optimises: a metric's mean over the trial's runs (unperturbed, one split)."""

    metric: str = "exact_match"
    split: str = "test"
    direction: Literal["maximize", "minimize"] = "maximize"


class SweepSettings(StrictModel):
    """A guided sweep (Optuna, TPE sampler, median pruner) whose trials are real HELM runs."""

    study: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,40}$")] = "adapter"
    """Study name; trial suites are `sweep-<study>-t<number>`."""
    run_entries: list[str] | None = None
    """None: the evaluation plan's."""
    models: list[str] | None = None
    """None: the evaluation plan's."""
    search_space: dict[str, SearchParameter] = {
        "max_train_instances": SearchParameter(kind="int", low=0, high=3),
        "instructions": SearchParameter(kind="categorical", choices=["none", "expert"]),
    }
    objective: Objective = Objective()
    constraints: dict[str, Bound] = {}
    """Metric -> bounds a trial must meet (e.g. `num_output_tokens: {max: 50}` for cost)."""
    max_fairness_gap: Annotated[float, Field(ge=0)] | None = None
    """The largest gap between groups (HELM sub_splits) of the objective's metric a trial may show,
    over its runs, as compliance/bias_fairness computes it (fairlearn); None: no fairness constraint.
    A trial with no run of two groups of the compliance section's `min_group_size` violates it."""
    n_trials: Annotated[int, Field(ge=1, le=200)] = 4
    max_eval_instances: Annotated[int, Field(ge=2)] = 10
    prune_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.5
    """A trial first runs this share of the instances; the median pruner may stop it there."""
    storage_env: str | None = "OPTUNA_STORAGE_URL"
    """Variable holding an RDB URL (the deployment's PostgreSQL); unset: SQLite under GOVERNANCE_HOME."""
    seed: int = 0


class IterationSettings(StrictModel):
    """Iteration planning and guided sweeps."""

    sweep: SweepSettings = SweepSettings()
