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
