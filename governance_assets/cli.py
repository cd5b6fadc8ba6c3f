"""`python -m governance_assets.cli demo|dev`: the demo run and the Dagster UI, fully offline."""

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from governance_assets.deploy import cli as deploy_cli
from governance_assets.lib.compliance import audit_cli
from governance_assets.lib.core.storage import governance_home
from governance_assets.lib.helm.runner import helm_environment

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_SUITES = ["demo-v1", "demo-v2"]
"""The second suite is judged against the first (regression gates need a baseline)."""
DEMO_TRAFFIC_DAYS = 14
DEMO_DRIFT_DAY = 11
"""The synthetic traffic drifts from this day (1-based) on; the reference is the first 7 days."""
DEMO_ROWS_PER_DAY = 1500


def prepare_environment() -> Path:
    """Set the variables every entry point needs; return GOVERNANCE_HOME."""
    home = governance_home()
    os.environ["GOVERNANCE_HOME"] = str(home)
    if os.environ.get("GOVERNANCE_DEPLOYMENT") == "team":  # the servers `services up` started
        from governance_assets.lib.deployment.services import team_environment

        os.environ.update(team_environment(home))
    os.environ.setdefault("DAGSTER_HOME", str(home / "dagster"))
    for key, value in helm_environment().items():
        os.environ.setdefault(key, value)
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    return home


QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
"""The demo prints its own summary; the full run log is in the Dagster UI."""


def _print_gates(evaluations: Sequence[dg.AssetCheckEvaluation]) -> None:
    for evaluation in sorted(evaluations, key=lambda e: (e.asset_key.to_user_string(), e.check_name)):
        outcome = evaluation.metadata.get("outcome")
        reason = evaluation.metadata.get("reason")
        status = "passed" if evaluation.passed else f"FAILED at {evaluation.severity.value}"
        detail = f" ({outcome.value})" if outcome is not None and outcome.value != "pass" else ""
        name = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
        print(f"  {name:<54} {status}{detail}")
        if reason is not None and not evaluation.passed:
            print(f"      {str(reason.value)[:300]}")


def _print_decision(home: Path, suite: str, result: dg.ExecuteInProcessResult) -> None:
    decision = home / "warehouse" / "release" / "decision" / f"{suite}.parquet"
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events() if e.asset_key}
    if "release/decision" not in materialized or not decision.exists():
        verdicts = home / "warehouse" / "gates" / "verdicts" / f"{suite}.parquet"
        print("  release/decision: NOT MATERIALISED: a blocking gate failed; the verdicts say why:")
        if verdicts.exists():
            for row in pq.read_table(verdicts).to_pylist():
                if row["blocks_release"]:
                    print(f"    {row['model']}: BLOCK by {row['gate']}: {row['reason'][:200]}")
        return
    for row in pq.read_table(decision).to_pylist():
        print(f"  {row['model']}: {row['decision'].upper()}")
        for reason in row["reasons"]:
            print(f"    blocked by {reason}")
        for warning in row["warnings"]:
            print(f"    warning: {warning}")


def run_traffic_demo(
    instance: dg.DagsterInstance, home: Path, first_day: date, rows_per_day: int = DEMO_ROWS_PER_DAY
) -> bool:
    """Synthetic traffic with a drift on a known day, ingested through the sensor: the first week
    lands and becomes the reference, the second week lands and is tested as it arrives."""
    from governance_assets.definitions import defs
    from governance_assets.demo_sensors import drain_sensor
    from governance_assets.lib.monitoring.traffic_generator import generate_traffic, write_landing_files

    definitions = defs()
    landing = home / "landing" / "traffic"
    landing.mkdir(parents=True, exist_ok=True)
    drift_day = first_day + timedelta(days=DEMO_DRIFT_DAY - 1)
    frame = generate_traffic(first_day, DEMO_TRAFFIC_DAYS, rows_per_day, drift_day, seed=7)
    days = frame["timestamp"].dt.strftime("%Y-%m-%d")
    week_one = frame[days < (first_day + timedelta(days=7)).isoformat()]
    print(f"\n=== traffic: {DEMO_TRAFFIC_DAYS} days from {first_day}, drift injected on {drift_day} ===", flush=True)
    write_landing_files(week_one, landing, "jsonl")
    ok, made = drain_sensor(instance, definitions, "traffic_landing")
    staged_days = [r.partition_key for r in made if r.partition_key is not None]
    print(f"week 1: sensor staged {len(staged_days)} day(s); building the reference from them")
    reference = dg.materialize(
        [definitions.get_assets_def(dg.AssetKey(["monitoring", "reference"]))],
        instance=instance,
        resources=_resources(),
        raise_on_error=False,
        run_config=QUIET_CONSOLE,
    )
    ok &= reference.success
    for day in staged_days:  # week 1 again, now with its reference (a backfill, not the sensor's runs)
        again = definitions.resolve_job_def("monitor_traffic").execute_in_process(
            instance=instance, partition_key=day, raise_on_error=False, run_config=QUIET_CONSOLE
        )
        ok &= again.success
    write_landing_files(frame[days >= (first_day + timedelta(days=7)).isoformat()], landing, "parquet")
    more_ok, made = drain_sensor(instance, definitions, "traffic_landing")
    ok &= more_ok
    print(f"week 2: sensor staged {sum(r.partition_key is not None for r in made)} more day(s)")
    trends = definitions.resolve_job_def("monitoring_trends").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET_CONSOLE
    )
    ok &= trends.success
    _print_drift(home, first_day)
    _print_trends(home)
    return ok


def _resources() -> dict[str, object]:
    from governance_assets.defs.resources import GovernanceState, MlflowTracking

    return {"state": GovernanceState(), "mlflow": MlflowTracking()}


def _print_drift(home: Path, first_day: date) -> None:
    from governance_assets.lib.core.warehouse import Warehouse

    warehouse = Warehouse(home / "warehouse")
    print("Traffic drift per day (share of drifted features; WARN at 0.5):")
    for offset in range(DEMO_TRAFFIC_DAYS):
        day = (first_day + timedelta(days=offset)).isoformat()
        share = warehouse.read_annotation(("monitoring", "traffic_drift"), day, "drifted_share")
        table = warehouse.read(("monitoring", "traffic_drift"), day)
        drifted = [r["feature"] for r in table.to_pylist() if r["drifted"]] if table is not None else []
        verdict = "no reference" if share is None else ("DRIFT" if share >= 0.5 else "ok")
        shown = "  -  " if share is None else f"{share:.2f}"
        print(f"  {day}: {verdict:<12} share {shown}  {', '.join(drifted)}")


def _print_trends(home: Path) -> None:
    from governance_assets.lib.core.warehouse import Warehouse

    table = Warehouse(home / "warehouse").read(("monitoring", "trends"))
    if table is None:
        print("Trends: not built")
        return
    print("Trends (change points found by the policy's detector):")
    frame = table.to_pandas()
    for series, rows in frame.groupby("series", sort=True):
        points = ", ".join(rows.loc[rows["change_point"], "label"]) or "none"
        print(f"  {series:<36} change points: {points}")


SUMMARY_SCHEMA = "schema_classic.yaml"
"""The packaged HELM schema whose run groups cover the demo plan's scenarios (simple1, simple_mcqa,
synthetic_reasoning), for `helm-summarize`."""


def summarize_suite(home: Path, suite: str) -> bool:
    """Run HELM's own `helm-summarize` on a suite this platform ran, so that its `runs.json` is
    there for `helm/run_stats:agrees_with_helm_summary` to compare with."""
    from importlib import resources

    schema = resources.files("helm.benchmark.static").joinpath(SUMMARY_SCHEMA)
    command = [
        str(Path(sys.executable).with_name("helm-summarize")),
        "--suite",
        suite,
        "-o",
        str(home / "helm" / "benchmark_output"),
        "-n",
        "1",  # its default of 8 processes crashes on Python 3.11.7 (mako recursion-depth mismatch)
        "--schema-path",
        str(schema),
    ]
    result = subprocess.run(
        command, cwd=home, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        print(f"  helm-summarize failed (exit {result.returncode}): {result.stderr[-500:]}")
    return result.returncode == 0


def run_demo(suites: list[str]) -> int:
    """Evaluate demo suites end to end (the later ones judged against the earlier) and report."""
    home = prepare_environment()
    from governance_assets.compliance_cli import run_compliance
    from governance_assets.definitions import defs
    from governance_assets.defs.helm.assets import PLANNED_SUITE_TAGS
    from governance_assets.defs.partitions import HELM_SUITES
    from governance_assets.demo_sensors import drain_sensor
    from governance_assets.feedback_cli import run_feedback_demo
    from governance_assets.iteration_cli import run_iteration_demo, run_plans

    job = defs().resolve_job_def("evaluate_suite")
    ok = True
    with dg.DagsterInstance.get() as instance:
        for suite in suites:
            if not instance.has_dynamic_partition(HELM_SUITES, suite):
                instance.add_dynamic_partitions(HELM_SUITES, [suite])
            print(f"\n=== suite {suite}: running HELM, helm-summarize and the governance graph ===", flush=True)
            runs = job.execute_in_process(
                instance=instance,
                partition_key=suite,
                asset_selection=[dg.AssetKey(["helm", "runs"])],
                tags=PLANNED_SUITE_TAGS,  # a suite the demo creates: helm-run evaluates the plan into it
                raise_on_error=False,
                run_config=QUIET_CONSOLE,
            )
            if runs.success:  # HELM's own aggregates first, for helm/run_stats:agrees_with_helm_summary
                summarize_suite(home, suite)
            result = job.execute_in_process(
                instance=instance, partition_key=suite, raise_on_error=False, run_config=QUIET_CONSOLE
            )
            ok &= result.success
            print(f"\nDagster run {result.run_id}: {'succeeded' if result.success else 'FAILED'}")
            print("Gates and checks:")
            _print_gates(result.get_asset_check_evaluations())
            print("Release decision:")
            _print_decision(home, suite, result)
        ok &= run_compliance(instance, defs(), home, suites)
        ok &= run_plans(instance, defs(), home, suites)
        ok &= run_iteration_demo(instance, defs(), home, suites[-1])
        ok &= drain_sensor(instance, defs(), "helm_suite_discovery")[0]  # the sweep's trial suites, ingested once
        first_day = datetime.now(UTC).date() - timedelta(days=DEMO_TRAFFIC_DAYS)
        ok &= run_traffic_demo(instance, home, first_day)
        # the A/B experiments' traffic lands on the two weeks before (undrifted, so the drift demo keeps its days)
        ok &= run_feedback_demo(instance, defs(), home, first_day - timedelta(days=DEMO_TRAFFIC_DAYS))
    warehouse = home / "warehouse"
    print(f"\nTables (Parquet, readable with pandas or DuckDB) under {warehouse}:")
    for path in sorted(p for suite in suites for p in warehouse.rglob(f"{suite}.parquet")):
        print(f"  {path.relative_to(warehouse)}: {pq.read_metadata(path).num_rows} rows")
    for daily in ("traffic", "traffic_drift"):
        days = sorted((warehouse / "monitoring" / daily).glob("*.parquet"))
        rows = sum(pq.read_metadata(path).num_rows for path in days)
        print(f"  monitoring/{daily}/<day>.parquet: {len(days)} days, {rows} rows")
    for single in ("reference", "trends"):
        path = warehouse / "monitoring" / f"{single}.parquet"
        if path.exists():
            print(f"  monitoring/{single}.parquet: {pq.read_metadata(path).num_rows} rows")
    print(f"Trend plots: {home / 'monitoring' / 'trends'}")
    mlflow_db = home / "mlflow" / "mlflow.db"
    print(f"\nMLflow UI:  .venv/bin/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///{mlflow_db}")
    print("Dagster UI: make dev   (then open http://127.0.0.1:3000)")
    return 0 if ok else 1


STOP_GRACE_SECONDS = 20.0
"""How long `dagster dev` gets to stop its webserver, daemon and code servers before they are killed."""


def run_dev(port: int) -> int:
    """Start `dagster dev` on loopback in its own process group; Ctrl-C, SIGTERM or SIGHUP stop it
    and every process it started (webserver, daemon, code servers), then the port is free."""
    prepare_environment()
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Installed before the start, so that the child gets default dispositions even when this
    # process was started with SIGINT ignored (a background job of a script): exec resets caught
    # signals to their default but keeps ignored ones ignored.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, start_new_session=True)
    try:
        return process.wait()
    except KeyboardInterrupt:
        return _stop_group(process)
    finally:
        _kill_group(process.pid)


def _stop_group(process: subprocess.Popen[bytes]) -> int:
    """Ask `dagster dev` to stop (SIGINT, as Ctrl-C does), then SIGTERM, then SIGKILL its group."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            return process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            continue
    _kill_group(process.pid)
    return process.wait()


def _kill_group(group: int) -> None:
    """SIGKILL whatever is left of the process group (a code server that outlived its parent)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(prog="governance_assets")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="evaluate a demo suite end to end")
    demo.add_argument("--suite", action="append", dest="suites", help="suite to evaluate (repeatable)")
    dev = commands.add_parser("dev", help="start the Dagster UI on 127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    audit_cli.add_parser(commands)
    deploy_cli.add_parsers(commands)
    plan = commands.add_parser("plan", help="iteration plans").add_subparsers(dest="plan_command", required=True)
    apply = plan.add_parser("apply", help="write the policy with a suite's deciding evaluation plan to a new file")
    apply.add_argument("suite")
    apply.add_argument("--output", required=True, type=Path, help="the new policy file (never the one in force)")
    args = parser.parse_args()
    if args.command == "demo":
        return run_demo(args.suites or DEMO_SUITES)
    if args.command == "services":
        return deploy_cli.run_services(args, governance_home())
    if args.command == "demo-team":
        return deploy_cli.run_team_demo(governance_home(), args.down)
    if args.command == "audit":
        from governance_assets.compliance_cli import run_audit

        return run_audit(args, prepare_environment())
    if args.command == "plan":
        from governance_assets.iteration_cli import apply_plan

        return apply_plan(args, prepare_environment())
    return run_dev(args.port)


if __name__ == "__main__":
    sys.exit(main())
