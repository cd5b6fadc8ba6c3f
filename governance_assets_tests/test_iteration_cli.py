"""`cli plan apply`: the deciding evaluation plan written to a new policy file, never the one in force."""

import argparse
from pathlib import Path

import pyarrow as pa
import pytest

from governance_assets.iteration_cli import PLAN_KEY, apply_plan
from governance_assets.lib.core.policy import default_policy_text, load_policy
from governance_assets.lib.core.warehouse import Warehouse


def test_plan_apply_writes_a_new_policy_and_says_what_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Warehouse(tmp_path / "warehouse").write(
        PLAN_KEY, "v2", pa.table({"rank": [1]}), {"evaluation_plan": {"max_eval_instances": 133, "num_train_trials": 3}}
    )
    output = tmp_path / "decide.yaml"
    assert apply_plan(argparse.Namespace(suite="v2", output=output), tmp_path) == 0
    printed = capsys.readouterr().out
    assert "evaluation_plan.max_eval_instances: 10 -> 133" in printed and "num_train_trials: None -> 3" in printed
    plan = load_policy(output).evaluation_plan
    assert (plan.max_eval_instances, plan.num_train_trials) == (133, 3)
    assert load_policy().evaluation_plan.max_eval_instances == 10  # the policy in force is untouched
    assert "max_eval_instances: 10" in default_policy_text()


def test_plan_apply_without_a_plan_names_the_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert apply_plan(argparse.Namespace(suite="nope", output=tmp_path / "x.yaml"), tmp_path) == 1
    assert "no iteration plan for suite nope" in capsys.readouterr().out and not (tmp_path / "x.yaml").exists()


SWEEP_POLICY = """
evaluation_plan: {run_entries: [simple_mcqa], models: [simple/model1], max_eval_instances: 4}
iteration:
  sweep: {study: demo, n_trials: 2, max_eval_instances: 4, search_space: {max_train_instances: {kind: int, low: 0, high: 2}}}
"""


@pytest.mark.integration
def test_the_demo_kills_its_sweep_after_a_finished_trial_and_the_resume_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's sweep step: a child process runs real HELM trials and is killed (SIGKILL) after
    its first finished trial; its Dagster run is marked failed; the resumed sweep keeps that trial
    (same value and finishing time) and runs only the rest."""
    import dagster as dg
    import optuna

    from governance_assets.iteration_cli import (
        SWEEP_JOB,
        _finished,
        _interrupt_sweep,
        _print_resumed,
        _study,
        run_sweep_job,
    )

    (tmp_path / "policy.yaml").write_text(SWEEP_POLICY)
    monkeypatch.setenv("GOVERNANCE_POLICY", str(tmp_path / "policy.yaml"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.delenv("OPTUNA_STORAGE_URL", raising=False)
    (tmp_path / "dagster").mkdir()
    with dg.DagsterInstance.get() as instance:
        interrupted = _interrupt_sweep(instance)
        assert len(interrupted) == 1, interrupted  # killed after the first finished trial, before the second
        assert "killed process" in capsys.readouterr().out
        [killed] = instance.get_runs(dg.RunsFilter(job_name=SWEEP_JOB))
        assert killed.status == dg.DagsterRunStatus.FAILURE
        run_sweep_job()
    storage, study, n_trials = _study()
    after = _finished(storage, study)
    assert len(after) == n_trials and all(after[number] == trial for number, trial in interrupted.items())
    _print_resumed(interrupted)
    printed = capsys.readouterr().out
    assert (
        f"trials {sorted(interrupted)} kept" in printed
        and f"trials {sorted(set(after) - set(interrupted))} run" in printed
    )
    killed_mid_run = [
        t for t in optuna.load_study(study_name=study, storage=storage).get_trials() if t.state.name == "FAIL"
    ]
    assert all(f"trial {t.number}, killed mid-run, was run again" in printed for t in killed_mid_run)
