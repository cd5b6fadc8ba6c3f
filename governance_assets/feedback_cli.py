"""The demo's feedback step: two weeks of experiment traffic and user feedback (one experiment with
a known effect, one without) land in the drop zones and go through the traffic and feedback sensors
as the daemon would run them; then the A/B table of the last day is printed."""

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from governance_assets.defs.feedback.assets import AB_TESTS_KEY, RESULTS_ANNOTATION
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.feedback import generator

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
DEMO_DAYS = 14


def _launched(instance: dg.DagsterInstance, sensor: str, run_key: str) -> bool:
    tags = {"dagster/sensor_name": sensor, "dagster/run_key": run_key}
    return bool(instance.get_run_records(dg.RunsFilter(tags=tags), limit=1))


def drain_sensor(instance: dg.DagsterInstance, definitions: dg.Definitions, sensor_name: str) -> bool:
    """Tick `sensor_name` from an empty cursor and run what it requests until it requests nothing,
    skipping run keys already launched (as the daemon does), tagged as the daemon tags them."""
    sensor = definitions.get_sensor_def(sensor_name)
    cursor: str | None = None
    ok = True
    while True:
        tick = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={"state": GovernanceState()}))
        assert isinstance(tick, dg.SensorResult)
        for added in tick.dynamic_partitions_requests or []:
            if isinstance(added, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(added.partitions_def_name, list(added.partition_keys))
        cursor = tick.cursor
        if not tick.run_requests:
            return ok
        for request in tick.run_requests:
            assert request.job_name is not None and request.run_key is not None
            if _launched(instance, sensor_name, request.run_key):
                continue
            result = definitions.resolve_job_def(request.job_name).execute_in_process(
                instance=instance,
                partition_key=request.partition_key,
                tags={**request.tags, "dagster/sensor_name": sensor_name, "dagster/run_key": request.run_key},
                raise_on_error=False,
                run_config={**request.run_config, **QUIET},
            )
            ok &= result.success


def _cell(value: object) -> str:
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
    columns = [
        "experiment",
        "metric",
        "variant",
        "versus",
        "n",
        "estimate",
        "ci_low",
        "ci_high",
        "cs_low",
        "cs_high",
        "always_valid_p",
        "call",
    ]
    rows = pq.read_table(path, columns=columns).to_pylist()
    print("  | " + " | ".join(columns) + " |")
    for row in rows:
        print("  | " + " | ".join(_cell(row[c]) if row[c] is not None else "" for c in columns) + " |")


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
    ok = drain_sensor(instance, definitions, "traffic_landing")
    ok &= drain_sensor(instance, definitions, "feedback_landing")
    print(f"A/B tests on {last} (mSPRT, always valid under daily looks):")
    print_ab_table(home, last)
    return ok
