"""Guided sweeps with real helm-run trials: a study that runs, is killed half-way and resumes
without repeating a finished trial, and a second sweep of the same study refused while one runs."""

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.iteration import sweep
from governance_assets.lib.iteration.settings import Bound, Objective, SearchParameter, SweepSettings

pytestmark = pytest.mark.integration

SETTINGS = SweepSettings(
    study="t",
    search_space={"max_train_instances": SearchParameter(kind="int", low=0, high=2)},
    objective=Objective(metric="exact_match", split="test"),
    n_trials=3,
    max_eval_instances=4,
)
ENTRIES, MODELS = ["simple_mcqa"], ["simple/model1"]


def _paths(home: Path) -> sweep.SweepPaths:
    base = home / "iteration"
    return sweep.SweepPaths(base / "scratch", base / "staging", base / "sweeps", home / "helm" / "prod_env")


SCRIPT = """
import sys
from pathlib import Path
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.iteration import sweep
from governance_assets_tests.lib.iteration.test_sweep import ENTRIES, MODELS, SETTINGS, _paths
home = Path(sys.argv[1])
sweep.run_sweep(SETTINGS, ENTRIES, MODELS, sys.argv[2], _paths(home), Warehouse(home / "warehouse"))
"""


def test_a_sweep_killed_half_way_resumes_without_repeating_finished_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    paths = _paths(tmp_path)
    process = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path), storage], env=os.environ.copy())
    first_suite = paths.root / "runs" / sweep.trial_suite("t", 0)
    deadline = time.monotonic() + 600
    while not first_suite.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # into the second trial
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first_suite.exists()
    finished_before = {
        t.number: t.value for t in sweep.finished_trials(optuna.load_study(study_name="t", storage=storage))
    }
    first_written = (first_suite / ".governance_plan.json").stat().st_mtime_ns

    seen: list[optuna.trial.FrozenTrial] = []
    study = sweep.run_sweep(SETTINGS, ENTRIES, MODELS, storage, paths, Warehouse(tmp_path / "warehouse"), seen.append)
    finished = sweep.finished_trials(study)
    assert len(finished) == SETTINGS.n_trials
    assert {t.number: t.value for t in finished if t.number in finished_before} == finished_before  # kept, not re-run
    assert (first_suite / ".governance_plan.json").stat().st_mtime_ns == first_written
    assert len(seen) == SETTINGS.n_trials - len(finished_before)
    states = [t.state for t in study.get_trials()]
    assert optuna.trial.TrialState.RUNNING not in states
    if optuna.trial.TrialState.FAIL in states:  # killed mid-trial: its settings were run again first
        retried = [t for t in study.get_trials() if "retry_of" in t.user_attrs]
        assert retried and retried[0].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for trial in study.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
        suite = trial.user_attrs["suite"]
        run_stats = pd.read_parquet(tmp_path / "warehouse" / "helm" / "run_stats" / f"{suite}.parquet")
        assert trial.value == pytest.approx(sweep.metric_mean(run_stats, "exact_match", "test"))
        [run] = [p.name for p in (paths.root / "runs" / suite).iterdir() if p.is_dir() and p.name != "eval_cache"]
        assert f"max_train_instances={trial.params['max_train_instances']}" in run
    assert not list((paths.staging / "runs").glob("*")) if (paths.staging / "runs").exists() else True


def test_a_second_sweep_of_a_running_study_is_refused(tmp_path: Path) -> None:
    paths = _paths(tmp_path)
    with (
        sweep.study_lock(paths.root.parent / "locks" / "t.lock"),
        pytest.raises(sweep.StudyBusy, match="held by another sweep"),
    ):
        sweep.run_sweep(SETTINGS, ENTRIES, MODELS, f"sqlite:///{tmp_path / 'o.db'}", paths, Warehouse(tmp_path / "w"))


def test_constraints_and_entries() -> None:
    stats = pd.DataFrame(
        {
            "metric": ["num_output_tokens", "exact_match"],
            "split": ["test", "test"],
            "perturbation": [None, None],
            "count": [3, 3],
            "mean": [40.0, 0.5],
        }
    )
    assert sweep.constraint_violations(stats, {"num_output_tokens": Bound(max=30)}) == {"num_output_tokens": 10.0}
    assert sweep.constraint_violations(stats, {"num_output_tokens": Bound(max=50)}) == {"num_output_tokens": -10.0}
    assert sweep.constraint_violations(stats, {"num_prompt_tokens": Bound(min=1)}) == {"num_prompt_tokens": math.inf}
    assert sweep.trial_entries(
        ["simple1", "mmlu:subject=a"], ["m/1"], {"temperature": 0.5, "instructions": "expert"}
    ) == [
        "simple1:model=m/1,instructions=expert,temperature=0.5",
        "mmlu:subject=a,model=m/1,instructions=expert,temperature=0.5",
    ]


FAIR = SweepSettings(
    study="fair",
    # HELM's max_eval_instances run expander overrides the command line: each trial draws another
    # sample of the bias probe, so the trials differ in exact match and in the gap between groups
    search_space={"max_eval_instances": SearchParameter(kind="categorical", choices=[16, 30, 100])},
    objective=Objective(metric="exact_match", split="test"),
    max_fairness_gap=0.05,
    n_trials=3,
    max_eval_instances=20,
)


def test_a_trial_beyond_the_fairness_gap_is_never_the_best(tmp_path: Path) -> None:
    """Real HELM trials on the bias probe (sub_split = gender): the gap of each trial is the one
    pandas finds between the two groups' mean exact match; the trial with the highest exact match
    has a gap beyond the limit, so Optuna's best (constraints_func) is the best feasible one."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    paths = dataclasses.replace(_paths(tmp_path), plugins=("governance_assets.lib.compliance.bias_probe",))
    queued = optuna.create_study(study_name="fair", storage=storage, direction="maximize")
    for size in (30, 100, 16):  # the best-scoring one last: never below the median, never pruned
        queued.enqueue_trial({"max_eval_instances": size})
    study = sweep.run_sweep(FAIR, ["governance_bias_probe"], MODELS, storage, paths, Warehouse(tmp_path / "warehouse"))
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(complete) == 3
    gaps = {}
    for trial in complete:
        stats = pd.read_parquet(
            tmp_path / "warehouse" / "helm" / "instance_stats" / f"{trial.user_attrs['suite']}.parquet"
        )
        plain = stats[(stats["metric"] == "exact_match") & stats["perturbation"].isna() & (stats["split"] == "test")]
        means = plain.groupby("sub_split")["value"].mean()
        gaps[trial.number] = float(means.max() - means.min())
        assert trial.user_attrs["fairness_gap"] == pytest.approx(gaps[trial.number])
        assert trial.constraints == {"fairness_gap": pytest.approx(gaps[trial.number] - 0.05)}
    top = max(complete, key=lambda t: t.value or 0.0)
    feasible = [t for t in complete if gaps[t.number] <= 0.05]
    assert gaps[top.number] > 0.05 and feasible  # the data make the constraint matter
    best = sweep.best_feasible(study)
    assert best is not None and best.number == max(feasible, key=lambda t: t.value or 0.0).number != top.number


def test_no_feasible_trial_means_no_best() -> None:
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: (t.set_constraint("fairness_gap", 0.2), 1.0)[1], n_trials=2)
    assert sweep.best_feasible(study) is None
