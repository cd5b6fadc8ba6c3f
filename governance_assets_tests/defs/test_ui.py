"""What the Dagster UI shows: descriptions of every sensor and schedule, table schemas and row counts."""

import warnings
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest

import governance_assets
from governance_assets.definitions import defs
from governance_assets.defs.lineage.sensors import openlineage_events
from governance_assets.defs.resources import GovernanceState
from governance_assets_tests.conftest import MMLU_ROOT, copy_suite, governance_defs, governance_resources


def test_every_sensor_and_schedule_has_a_description() -> None:
    definitions = defs()
    automations = [*(definitions.sensors or []), *(definitions.schedules or [])]
    assert len(automations) >= 8
    missing = [automation.name for automation in automations if not (automation.description or "").strip()]
    assert missing == []


def test_no_deprecated_event_log_query_is_left(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    """`get_event_records` warned on every call (every sensor tick in the daemon's log)."""
    package = Path(governance_assets.__file__).parent
    callers = [
        str(path.relative_to(package)) for path in package.rglob("*.py") if "get_event_records(" in path.read_text()
    ]
    assert callers == []
    context = dg.build_sensor_context(
        instance=instance, resources={"state": GovernanceState(home=str(tmp_path))}, definitions=defs()
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        skipped = openlineage_events(context)
    assert isinstance(skipped, dg.SkipReason) and skipped.skip_message == "no new materialisations"


LINEAGE = [("lineage", "records"), ("lineage", "reproducibility")]
COMPLIANCE = [
    ("compliance", "bias_fairness"),
    ("compliance", "pii"),
    ("compliance", "toxicity"),
    ("compliance", "slices"),
]


def test_tables_carry_their_schema_and_row_count_and_mlflow_runs_link_to_dagster(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("evaluation_plan: {run_entries: [simple1], models: [simple/model1]}\n")
    monkeypatch.setenv("GOVERNANCE_POLICY", str(policy))
    monkeypatch.setenv("DAGSTER_UI_URL", "http://127.0.0.1:3999")
    copy_suite(MMLU_ROOT / "runs" / "v1", tmp_path / "roots", "v1", runs=2)
    home = tmp_path / "governance"
    instance.add_dynamic_partitions("helm_suites", ["v1"])
    tables = [("helm", "runs"), ("helm", "run_stats"), ("helm", "instance_stats"), ("helm", "predictions")]
    result = dg.materialize(
        governance_defs(),
        selection=[dg.AssetKey(list(key)) for key in [*tables, *LINEAGE, *COMPLIANCE]],
        partition_key="v1",
        instance=instance,
        resources=governance_resources(home, str(tmp_path / "roots")),
    )
    for key in [*tables, *LINEAGE, *COMPLIANCE]:
        [event] = result.asset_materializations_for_node("__".join(key))
        frame = pd.read_parquet(home / "warehouse" / Path(*key) / "v1.parquet")
        schema = event.metadata["dagster/column_schema"].value
        assert [column.name for column in schema.columns] == list(frame.columns), key
        assert event.metadata["dagster/row_count"].value == len(frame), key
        assert len(frame) > 0 or key in COMPLIANCE, key  # MMLU has no bias stats: an empty table is right
    [stats] = result.asset_materializations_for_node("helm__run_stats")
    assert stats.metadata["mlflow_experiment"].value.endswith("/runs")  # the runs list, not the GenAI overview
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) >= 4  # two HELM runs, the lineage and the reproducibility reports
    link = f"[{result.run_id}](http://127.0.0.1:3999/runs/{result.run_id})"
    assert all(link in run.data.tags["mlflow.note.content"] for run in runs)
