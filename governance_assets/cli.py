"""`python -m governance_assets.cli demo|dev`: the demo run and the Dagster UI, fully offline."""

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from governance_assets.lib.helm_runner import helm_environment
from governance_assets.lib.storage import governance_home

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_SUITE = "demo-v1"


def prepare_environment() -> Path:
    """Set the variables every entry point needs; return GOVERNANCE_HOME."""
    home = governance_home()
    os.environ["GOVERNANCE_HOME"] = str(home)
    os.environ.setdefault("DAGSTER_HOME", str(home / "dagster"))
    for key, value in helm_environment().items():
        os.environ.setdefault(key, value)
    dagster_home = Path(os.environ["DAGSTER_HOME"])
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    return home


def run_demo(suite: str) -> int:
    """Materialise the whole graph for a demo suite of real HELM runs and say where it all is."""
    home = prepare_environment()
    from governance_assets.definitions import defs
    from governance_assets.defs.partitions import HELM_SUITES

    definitions = defs()
    with dg.DagsterInstance.get() as instance:
        if not instance.has_dynamic_partition(HELM_SUITES, suite):
            instance.add_dynamic_partitions(HELM_SUITES, [suite])
        job = definitions.resolve_job_def("evaluate_suite")
        result = job.execute_in_process(
            instance=instance, partition_key=suite, raise_on_error=False
        )
        print(f"\nDagster run {result.run_id}: {'succeeded' if result.success else 'FAILED'}")
        for evaluation in result.get_asset_check_evaluations():
            status = "passed" if evaluation.passed else f"failed ({evaluation.severity.value})"
            print(
                f"  check {evaluation.asset_key.to_user_string()}:{evaluation.check_name}: {status}"
            )
    warehouse = home / "warehouse"
    print(f"\nTables (Parquet, readable with pandas or DuckDB) under {warehouse}:")
    for path in sorted(warehouse.rglob(f"{suite}.parquet")):
        print(f"  {path.relative_to(warehouse)}: {pq.read_metadata(path).num_rows} rows")
    mlflow_db = home / "mlflow" / "mlflow.db"
    print("\nMLflow UI:  .venv/bin/mlflow ui --host 127.0.0.1 --port 5000 "
          f"--backend-store-uri sqlite:///{mlflow_db}")  # fmt: skip
    print("Dagster UI: make dev   (then open http://127.0.0.1:3000)")
    return 0 if result.success else 1


def run_dev(port: int) -> int:
    """Start `dagster dev` on loopback from Python, so that Ctrl-C and SIGTERM stop it."""
    prepare_environment()
    command = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
               "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip
    with subprocess.Popen(command, cwd=PROJECT_ROOT) as process:
        try:
            return process.wait()
        except KeyboardInterrupt:
            process.send_signal(signal.SIGINT)
            return process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(prog="governance_assets")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="evaluate a demo suite end to end")
    demo.add_argument("--suite", default=DEMO_SUITE)
    dev = commands.add_parser("dev", help="start the Dagster UI on 127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    if args.command == "demo":
        return run_demo(args.suite)
    return run_dev(args.port)


if __name__ == "__main__":
    sys.exit(main())
