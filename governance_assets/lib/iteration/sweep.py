"""Guided sweeps: an Optuna study over HELM adapter settings whose trials are real HELM runs.

Each trial suggests settings from the policy's search space (each a HELM run expander:
`max_train_instances`, `instructions`, `temperature`, …), runs the sweep's entries with them on a
share of the instances first (the median pruner may stop a hopeless trial there), then on all of
them into its own suite `sweep-<study>-t<number>`, which is moved into the sweep output root only
when complete: the platform then ingests, judges and traces it like any historical suite. The
study lives in an RDB store (SQLite under GOVERNANCE_HOME by default); a lock file makes one
process at a time run a study (on PostgreSQL, a session advisory lock in the study's own database,
so sweeps on different machines exclude each other too), so two sweeps never evaluate the same
trial, and a sweep killed
half-way resumes: its finished trials stay, the interrupted one is marked failed and its settings
run again first. Constraints (metric bounds, the fairness gap) are set on each trial
(`Trial.set_constraint`, Optuna 5's successor of `constraints_func`): the TPE sampler steers away
from infeasible trials and Optuna's `best_trial` never picks one. No Dagster here; MLflow records
are made by the caller's callback.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import sqlalchemy as sa

from governance_assets.lib.compliance import fairness
from governance_assets.lib.compliance.settings import ComplianceSettings
from governance_assets.lib.core.database import hidden_url
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.helm import runner, tidy
from governance_assets.lib.iteration.settings import (
    TRIAL_SUITE_PREFIX,
    Bound,
    Objective,
    SearchParameter,
    SweepSettings,
)


class StudyBusy(RuntimeError):
    """Another process is running the same study."""


def trial_suite(study: str, number: int) -> str:
    """The suite (and `helm_suites` partition) of one trial."""
    return f"{TRIAL_SUITE_PREFIX}{study}-t{number:03d}"


def suggest(trial: optuna.Trial, space: Mapping[str, SearchParameter]) -> dict[str, Any]:
    """The trial's settings, one per parameter of the search space."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if spec.kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(spec.choices or []))
        elif spec.kind == "int":
            step = int(spec.step or 1)
            params[name] = trial.suggest_int(name, int(spec.low or 0), int(spec.high or 0), step=step, log=spec.log)
        else:
            params[name] = trial.suggest_float(
                name, float(spec.low or 0), float(spec.high or 0), step=spec.step, log=spec.log
            )
    return params


def trial_entries(entries: Sequence[str], models: Sequence[str], params: Mapping[str, Any]) -> list[str]:
    """HELM run entries with the model and the trial's settings as run-expander arguments."""
    settings = "".join(f",{name}={value}" for name, value in sorted(params.items()))
    return [f"{entry}{',' if ':' in entry else ':'}model={model}{settings}" for entry in entries for model in models]


def metric_mean(run_stats: pd.DataFrame, metric: str, split: str | None) -> float | None:
    """The mean over runs of a metric's unperturbed run-level mean (None when no run has it)."""
    rows = run_stats[(run_stats["metric"] == metric) & run_stats["perturbation"].isna() & (run_stats["count"] > 0)]
    if split is not None:
        rows = rows[rows["split"] == split]
    return float(rows["mean"].astype("float64").mean()) if len(rows) else None


def objective_value(run_stats: pd.DataFrame, objective: Objective) -> float:
    """The trial's objective; a trial whose runs lack the metric is an error naming it."""
    value = metric_mean(run_stats, objective.metric, objective.split)
    if value is None:
        raise ValueError(f"no run of the trial has {objective.metric} on split {objective.split}")
    return value


def constraint_violations(run_stats: pd.DataFrame, constraints: Mapping[str, Bound]) -> dict[str, float]:
    """Optuna's constraint values (≤ 0 is feasible), named after their metric: how far each bound
    is exceeded (infinite when no run has the metric)."""
    values = {}
    for metric, bound in sorted(constraints.items()):
        mean = metric_mean(run_stats, metric, None)
        values[metric] = (
            math.inf
            if mean is None
            else max(
                mean - bound.max if bound.max is not None else -math.inf,
                bound.min - mean if bound.min is not None else -math.inf,
            )
        )
    return values


def fairness_gap(instance_stats: pd.DataFrame, objective: Objective, compliance: ComplianceSettings) -> float | None:
    """The largest gap between groups of the objective's metric and split over the trial's runs,
    from the compliance group's computation (`group_fairness_table`); None when no run has two
    groups of `min_group_size` instances."""
    outcomes = fairness.instance_outcomes(instance_stats, [objective.metric])
    _, gaps = fairness.group_fairness_table(
        outcomes[outcomes["split"] == objective.split],
        compliance.confidence,
        compliance.bootstrap_resamples,
        compliance.seed,
        compliance.min_group_size,
    )
    return float(gaps["gap"].max()) if len(gaps) else None


FAIRNESS_CONSTRAINT = "fairness_gap"


def trial_constraints(
    run_stats: pd.DataFrame, instance_stats: pd.DataFrame, settings: SweepSettings, compliance: ComplianceSettings
) -> tuple[dict[str, float], float | None]:
    """A finished trial's constraint values for `Trial.set_constraint` (metric bounds, and the
    fairness gap beyond its limit; ≤ 0 is feasible) and its fairness gap (None when not asked for
    or not measurable, which violates the constraint)."""
    values = constraint_violations(run_stats, settings.constraints)
    if settings.max_fairness_gap is None:
        return values, None
    gap = fairness_gap(instance_stats, settings.objective, compliance)
    values[FAIRNESS_CONSTRAINT] = math.inf if gap is None else gap - settings.max_fairness_gap
    return values, gap


def best_feasible(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best complete trial that meets every constraint (Optuna's own `best_trial`), or None."""
    try:
        return study.best_trial
    except ValueError:  # no complete trial, or none feasible
        return None


@contextlib.contextmanager
def study_lock(path: Path) -> Iterator[None]:
    """Hold the study's lock file, or raise StudyBusy at once (the OS frees it if we die)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise StudyBusy(f"study lock {path} is held by another sweep; try again when it has finished") from error
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _advisory_key(study: str) -> int:
    """A signed 64-bit key for PostgreSQL's advisory locks, the same on every machine."""
    digest = hashlib.blake2b(f"governance_assets sweep {study}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextlib.contextmanager
def database_study_lock(storage_url: str, study: str) -> Iterator[None]:
    """Hold a session advisory lock on the study in its PostgreSQL database, or raise StudyBusy at
    once; PostgreSQL frees it when the session ends, also when this process dies."""
    engine = sa.create_engine(storage_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            key = _advisory_key(study)
            if not connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
                raise StudyBusy(
                    f"study {study} is held by another sweep (advisory lock {key} in "
                    f"{hidden_url(storage_url)}); try again when it has finished"
                )
            try:
                yield
            finally:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


def sweep_lock(storage_url: str, study: str, lock_folder: Path) -> contextlib.AbstractContextManager[None]:
    """The lock that makes one sweep at a time run `study`: in the study's PostgreSQL database
    when it lives there (sweeps on any machine), else a lock file in `lock_folder` (one machine,
    where the SQLite store is)."""
    if sa.engine.make_url(storage_url).get_backend_name() == "postgresql":
        return database_study_lock(storage_url, study)
    return study_lock(lock_folder / f"{study}.lock")


@dataclass(frozen=True)
class SweepPaths:
    """Where a sweep's HELM output goes."""

    scratch: Path
    """Partial runs (pruning) and their tables: thrown away."""
    staging: Path
    """Full runs while they are written."""
    root: Path
    """Finished trial suites: an output root the platform ingests like any historical one."""
    local_path: Path
    """HELM's --local-path (its cache makes the full run reuse the partial run's requests)."""
    plugins: tuple[str, ...] = ()
    """HELM's --plugins (the project's scenarios), as the platform's own runs use them."""


def _recover_interrupted(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a killed sweep as failed and queue their settings again (we
    hold the lock, so nothing else is running them); how many."""
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    for trial in stale:
        study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return len(stale)


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Complete and pruned trials: what a resumed sweep does not run again."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [t for t in study.get_trials(deepcopy=False) if t.state in done]


def run_sweep(
    settings: SweepSettings,
    entries: Sequence[str],
    models: Sequence[str],
    storage_url: str,
    paths: SweepPaths,
    warehouse: Warehouse,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] = lambda trial: None,
    log: Callable[[str], None] = lambda line: None,
    compliance: ComplianceSettings | None = None,
) -> optuna.Study:
    """Run the study up to `settings.n_trials` finished trials (resuming a stored one); each
    finished trial is passed to `on_trial`. `compliance` sets how the fairness gap is computed."""
    with sweep_lock(storage_url, settings.study, paths.root.parent / "locks"):
        study = optuna.create_study(
            study_name=settings.study,
            storage=storage_url,
            direction=settings.objective.direction,
            sampler=optuna.samplers.TPESampler(seed=settings.seed),  # it reads the trials' constraints
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
            load_if_exists=True,
        )
        if recovered := _recover_interrupted(study):
            log(f"study {settings.study}: {recovered} interrupted trial(s) queued again")
        partial = max(1, math.floor(settings.max_eval_instances * settings.prune_fraction))

        def evaluate(trial: optuna.Trial) -> float:
            params = suggest(trial, settings.search_space)
            suite = trial_suite(settings.study, trial.number)
            trial.set_user_attr("suite", suite)
            run = trial_entries(entries, models, params)
            scratch = _run(run, suite, partial, paths.scratch, paths, Warehouse(paths.scratch / "warehouse"))
            shutil.rmtree(paths.scratch / "runs" / suite, ignore_errors=True)
            trial.report(objective_value(scratch, settings.objective), step=partial)
            if trial.should_prune():
                log(f"trial {trial.number} pruned after {partial} instances: {params}")
                raise optuna.TrialPruned
            shutil.rmtree(paths.staging / "runs" / suite, ignore_errors=True)
            _run(run, suite, settings.max_eval_instances, paths.staging, paths, None)
            (paths.root / "runs").mkdir(parents=True, exist_ok=True)
            (paths.staging / "runs" / suite).rename(paths.root / "runs" / suite)  # complete: visible to the platform
            full = _ingested_run_stats(suite, paths.root / "runs" / suite, warehouse)
            constraints, gap = trial_constraints(
                full, _table(warehouse, tidy.INSTANCE_STATS, suite), settings, compliance or ComplianceSettings()
            )
            for name, violation in constraints.items():
                trial.set_constraint(name, violation)
            if gap is not None:
                trial.set_user_attr("fairness_gap", gap)
            value = objective_value(full, settings.objective)
            feasible = "" if all(c <= 0 for c in constraints.values()) else ", infeasible (constraints)"
            log(f"trial {trial.number} ({suite}): {settings.objective.metric} = {value:.4f} with {params}{feasible}")
            return value

        def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if trial.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
                on_trial(trial)

        remaining = settings.n_trials - len(finished_trials(study))
        if remaining > 0:
            study.optimize(evaluate, n_trials=remaining, callbacks=[report])
        return study


def _run(
    entries: Sequence[str], suite: str, instances: int, output: Path, paths: SweepPaths, warehouse: Warehouse | None
) -> pd.DataFrame:
    """Run the entries into `output`/runs/`suite`; with a warehouse, ingest them and return the
    run stats. A failed entry fails the trial with HELM's reason."""
    settings = runner.HelmSettings(
        output_path=output, local_path=paths.local_path, max_eval_instances=instances, plugins=paths.plugins
    )
    outcomes = runner.run_entries(entries, suite, settings, lambda line: None)
    failed = [f"{o.entry}: {o.error}" for o in outcomes if o.status == "failed"]
    if failed:
        raise RuntimeError(f"trial suite {suite}: HELM failed: {'; '.join(failed)}")
    return pd.DataFrame() if warehouse is None else _ingested_run_stats(suite, output / "runs" / suite, warehouse)


def _ingested_run_stats(suite: str, suite_dir: Path, warehouse: Warehouse) -> pd.DataFrame:
    """Ingest a trial suite into the warehouse (the platform's own tables) and return its run stats."""
    tidy.ingest_suite(suite, suite_dir, warehouse)
    return _table(warehouse, tidy.RUN_STATS, suite)


def _table(warehouse: Warehouse, spec: tidy.TidyTable, suite: str) -> pd.DataFrame:
    table = warehouse.read(spec.key, suite)
    if table is None:
        raise RuntimeError(f"trial suite {suite}: {'/'.join(spec.key)} was not written")
    frame: pd.DataFrame = table.to_pandas()
    return frame
