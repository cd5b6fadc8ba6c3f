"""The demo's feedback step: two weeks of experiment traffic and user feedback (one experiment with
a known effect, one without) land in the drop zones and go through the traffic and feedback sensors
as the daemon would run them; the last day's A/B table and online evaluation are printed; a
challenger registered in the MLflow Model Registry is evaluated and its decision written back; and
a new suite evaluates simple/model1 on the scenario built from the failures."""

import math
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
from mlflow import MlflowClient

from governance_assets.defs.feedback.assets import (
    AB_COLUMNS_SHOWN,
    AB_TESTS_KEY,
    ONLINE_EVAL_KEY,
    RESULTS_ANNOTATION,
    SCENARIO_KEY,
)
from governance_assets.defs.gates.assets import DECISION_KEY
from governance_assets.defs.helm.assets import PLANNED_SUITE_TAGS
from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.defs.resources import GovernanceState, HelmRunner, MlflowTracking
from governance_assets.demo_sensors import drain_sensor
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.feedback import generator
from governance_assets.lib.feedback.scenario import run_entry

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
DEMO_DAYS = 14
DEMO_MODEL = "assistant"
SCENARIO_SUITE = "demo-feedback"


def _cell(value: object) -> str:
    """A table cell as the demo prints it: a missing or non-finite number is '-'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def print_ab_table(home: Path, day: str) -> None:
    """The day's A/B results: outcome and reasons per experiment, then the per-metric table."""
    warehouse = Warehouse(home / "warehouse")
    results = warehouse.read_annotation(AB_TESTS_KEY, day, RESULTS_ANNOTATION) or []
    for result in results:
        print(
            f"  {result['experiment']}: {result['outcome'].upper()} ({result['requests']} requests, SRM p={result['srm_p_value']:.3g})"
        )
        for reason in result["reasons"]:
            print(f"    - {reason}")
    path = warehouse.path(AB_TESTS_KEY, day)
    if not path.exists():
        return
    columns = AB_COLUMNS_SHOWN
    rows = pq.read_table(path, columns=columns).to_pylist()
    print("  | " + " | ".join(columns) + " |")
    for row in rows:
        print("  | " + " | ".join(_cell(row[c]) for c in columns) + " |")


def run_feedback_demo(instance: dg.DagsterInstance, definitions: dg.Definitions, home: Path, first_day: date) -> bool:
    """Land the generated traffic and feedback, drain both sensors, print the last day's A/B table."""
    landed = generator.write_landing(first_day, DEMO_DAYS, home)
    last = (first_day + timedelta(days=DEMO_DAYS - 1)).isoformat()
    print(
        f"\n=== feedback: {DEMO_DAYS} days of experiment traffic from {first_day} ({len(landed.traffic)} requests), "
        f"{len(landed.feedback_files)} feedback files (one of bad rows) ===",
        flush=True,
    )
    print(f"  true effects on positive_feedback: {generator.TRUE_EFFECTS}; bad rows planted: {generator.BAD_ROWS}")
    ok = drain_sensor(instance, definitions, "traffic_landing")[0]
    ok &= drain_sensor(instance, definitions, "feedback_landing")[0]
    print(f"A/B tests on {last} (mSPRT, always valid under daily looks):")
    print_ab_table(home, last)
    _print_online_eval(home, last)
    ok &= _registry_demo(instance, definitions)
    ok &= _scenario_suite(instance, definitions, home, last)
    return ok


def _print_online_eval(home: Path, day: str) -> None:
    table = Warehouse(home / "warehouse").read(ONLINE_EVAL_KEY, day)
    print(f"Online evaluation on {day} (live sample vs the newest suite's HELM scores):")
    for row in [] if table is None else table.to_pylist():
        state = {True: "DIVERGES", False: "within bound", None: "no data"}[row["diverged"]]
        print(
            f"  {row['model']} {row['comparison']}: production {_cell(row['production_value'])} vs HELM "
            f"{_cell(row['helm_value'])} ({row['helm_suite']}), gap {_cell(row['gap'])} (bound {row['max_gap']:g}): {state}"
        )


def _registry_demo(instance: dg.DagsterInstance, definitions: dg.Definitions) -> bool:
    """Register a challenger in the MLflow Model Registry; the sensors evaluate it and write back."""
    client = MlflowClient(tracking_uri=MlflowTracking().resolved_uri(GovernanceState()))
    if not client.search_registered_models(filter_string=f"name='{DEMO_MODEL}'"):
        client.create_registered_model(DEMO_MODEL)
    version = client.create_model_version(DEMO_MODEL, source="demo://assistant", tags={"helm.model": "simple/model1"})
    client.set_registered_model_alias(DEMO_MODEL, "challenger", version.version)
    print(
        f"\n=== model registry: {DEMO_MODEL} v{version.version} registered as challenger; evaluating it ===", flush=True
    )
    ok = drain_sensor(instance, definitions, "model_registry")[0]
    ok &= drain_sensor(instance, definitions, "registry_writeback")[0]
    tags = client.get_model_version(DEMO_MODEL, version.version).tags
    aliases = client.get_registered_model(DEMO_MODEL).aliases
    print(
        f"  written back: governance.decision={tags.get('governance.decision')} (suite {tags.get('governance.suite')}): "
        f"{tags.get('governance.reasons')}; champion -> {aliases.get('champion', 'not moved')}"
    )
    return ok


def _scenario_suite(instance: dg.DagsterInstance, definitions: dg.Definitions, home: Path, day: str) -> bool:
    """A new suite evaluates simple/model1 on the scenario built from the failures, beside the policy's
    plan (a suite the platform creates runs its plan), and the whole suite goes through the gates."""
    table = Warehouse(home / "warehouse").read(SCENARIO_KEY, day)
    if table is None or table.num_rows == 0:
        print("  feedback/scenario: no examples")
        return False
    version = str(table.column("version")[0])
    entry = f"{run_entry(version)},model=simple/model1"
    print(
        f"\n=== suite {SCENARIO_SUITE}: simple/model1 on {table.num_rows} production failures ({entry}) ===", flush=True
    )
    state = GovernanceState()
    outcomes = HelmRunner().run([entry], SCENARIO_SUITE, state, 10, lambda _: None)
    if not instance.has_dynamic_partition(HELM_SUITES, SCENARIO_SUITE):
        instance.add_dynamic_partitions(HELM_SUITES, [SCENARIO_SUITE])
    result = definitions.resolve_job_def("evaluate_suite").execute_in_process(  # the plan runs beside it
        instance=instance, partition_key=SCENARIO_SUITE, tags=PLANNED_SUITE_TAGS, raise_on_error=False, run_config=QUIET
    )
    decision = Warehouse(home / "warehouse").read(DECISION_KEY, SCENARIO_SUITE)
    for row in [] if decision is None else decision.to_pylist():
        print(f"  release decision {row['model']}: {row['decision']} {'; '.join(row['reasons'])}")
    return result.success and all(o.status != "failed" for o in outcomes) and decision is not None
