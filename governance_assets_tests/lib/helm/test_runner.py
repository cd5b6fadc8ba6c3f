"""helm-run for a whole plan in one process (real HELM, `simple/model1`)."""

import json
from pathlib import Path

import pytest

from governance_assets.lib.helm import runner
from governance_assets.lib.helm.output import list_run_folders
from governance_assets.lib.lineage.records import PROVENANCE_FILE

pytestmark = pytest.mark.integration

GOOD = ["simple1:model=simple/model1", "synthetic_reasoning:mode=pattern_match,model=simple/model1"]
BAD = "no_such_scenario:model=simple/model1"


def test_one_helm_run_for_all_entries_and_a_bad_entry_fails_alone(tmp_path: Path) -> None:
    settings = runner.HelmSettings(tmp_path / "benchmark_output", tmp_path / "prod_env", max_eval_instances=3)
    lines: list[str] = []
    outcomes = runner.run_entries([GOOD[0], BAD, GOOD[1]], "s1", settings, lines.append)

    assert [o.entry for o in outcomes] == [GOOD[0], BAD, GOOD[1]]
    assert [o.status for o in outcomes] == ["complete", "failed", "complete"]
    assert outcomes[1].error is not None and "Unknown run spec name: no_such_scenario" in outcomes[1].error
    assert [line for line in lines if line.startswith("helm-run (suite s1)")] == [
        f"helm-run (suite s1): {GOOD[0]}, {BAD}, {GOOD[1]}"
    ]  # one process for the three entries
    assert any(line.endswith("Running simple1:model=simple_model1 {") for line in lines)  # each run's start
    full_log = settings.output_path / "logs" / "helm-run-s1.log"
    assert f"HELM's full output: {full_log}" in lines and "Processed" in full_log.read_text()
    assert not any("Processed" in line for line in lines)
    suite_dir = settings.output_path / "runs" / "s1"
    folders = {run.run_name: run for run in list_run_folders(suite_dir)}
    assert {outcomes[0].run_name, outcomes[2].run_name} == {name for name, run in folders.items() if run.complete}
    for outcome in (outcomes[0], outcomes[2]):
        assert outcome.run_name is not None
        provenance = json.loads((suite_dir / outcome.run_name / PROVENANCE_FILE).read_text())
        assert provenance["command"][:3] == ["helm-run", "--run-entries", outcome.entry]  # what re-makes this run
    assert runner.read_plan_record(suite_dir) == {o.entry: o.run_name for o in outcomes if o.status == "complete"}

    lines.clear()
    again = runner.run_entries([*GOOD, BAD], "s1", settings, lines.append)
    assert [o.status for o in again] == ["skipped", "skipped", "failed"]
    assert [line for line in lines if line.startswith("helm-run (suite s1)")] == [f"helm-run (suite s1): {BAD}"]


def test_num_train_trials_reaches_helm_run_without_renaming_the_run(tmp_path: Path) -> None:
    """The evaluation plan's num_train_trials (what iteration/plan may recommend) makes HELM
    sample that many sets of in-context examples; the run keeps its name, so it still pairs
    with its baseline suite."""
    settings = runner.HelmSettings(
        tmp_path / "benchmark_output", tmp_path / "prod_env", max_eval_instances=3, num_train_trials=2
    )
    [outcome] = runner.run_entries([GOOD[1]], "trials", settings, lambda line: None)
    assert (
        outcome.status == "complete"
        and outcome.run_name == "synthetic_reasoning:mode=pattern_match,model=simple_model1"
    )
    entries = json.loads(
        (settings.output_path / "runs" / "trials" / outcome.run_name / "per_instance_stats.json").read_text()
    )
    assert {entry["train_trial_index"] for entry in entries} == {0, 1}
