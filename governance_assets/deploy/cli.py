"""`services up|down|status` and `demo-team`: the team deployment from the command line."""

import argparse
import os
from pathlib import Path

import dagster as dg

from governance_assets.lib.deployment import services
from governance_assets.lib.deployment.shared_root import SHARED_ROOT_VARIABLE, SharedRoot

TEAM_DEMO_SUITES = ["team-v1", "team-v2"]
"""The demo's plan run again on the deployment, into suites of their own (the second judged
against the first)."""


def add_parsers(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    up_down = commands.add_parser("services", help="the team deployment's servers on 127.0.0.1")
    actions = up_down.add_subparsers(dest="services_command", required=True)
    up = actions.add_parser("up", help="start PostgreSQL, Redis, the MLflow server and the Celery workers")
    up.add_argument("--workers", type=int, default=2)
    actions.add_parser("down", help="stop everything `services up` started")
    actions.add_parser("status", help="what runs, and where")
    for action, what in (("publish", "copy a suite's state to"), ("pull", "copy a suite's state from")):
        sync = actions.add_parser(action, help=f"{what} the shared root ({SHARED_ROOT_VARIABLE})")
        sync.add_argument("suite")
    team = commands.add_parser("demo-team", help="evaluate the demo suites on the team deployment")
    team.add_argument("--down", action="store_true", help="stop the services at the end")


def _new_deployment(home: Path, workers: int) -> services.Deployment:
    ports = services.ServicePorts.from_environment()
    return services.Deployment(home, ports, workers, shared_root=os.environ.get(SHARED_ROOT_VARIABLE, "").strip())


def _sync(action: str, suite: str, home: Path) -> int:
    """`services publish|pull SUITE`: the suite's HELM runs, tables and reports to or from the shared root."""
    shared = SharedRoot.from_environment()
    if shared is None:
        print(f"{SHARED_ROOT_VARIABLE} is not set: there is no shared root")
        return 1
    copied = shared.publish_suite(home, suite) if action == "publish" else shared.pull_suite(suite, home)
    print(f"{action}: {len(copied)} file(s) of suite {suite} ({shared.url})")
    return 0


def run_services(args: argparse.Namespace, home: Path) -> int:
    if args.services_command == "up":
        _print_locations(services.start(_new_deployment(home, args.workers)))
        return 0
    if args.services_command in ("publish", "pull"):
        return _sync(args.services_command, args.suite, home)
    if args.services_command == "down":
        stopped = services.stop(home)
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    deployment = services.Deployment.load(home)
    if deployment is None or not deployment.processes:
        print(f"no team deployment runs under {home / 'services'}")
        return 1
    for process in deployment.processes:
        print(f"{process.name:<8} pid {process.pid}: {'running' if services.group_alive(process.pid) else 'STOPPED'}")
    postgres = services.postgres_pid(deployment)
    print(f"postgres pid {postgres}: running" if postgres else "postgres: STOPPED")
    return 0


def _print_locations(deployment: services.Deployment) -> None:
    ports = deployment.ports
    print(f"MLflow UI:   {deployment.mlflow_url}")
    print("Dagster UI:  GOVERNANCE_DEPLOYMENT=team make dev   (then open http://127.0.0.1:3000)")
    print(
        f"PostgreSQL:  {services.LOOPBACK}:{ports.postgres} (databases dagster, mlflow; user {services.DATABASE_USER})"
    )
    print(f"Redis:       {services.LOOPBACK}:{ports.redis} (Celery broker)")
    print(f"Workers:     {deployment.workers}, logs in {deployment.logs}")
    if deployment.shared_root:
        print(
            f"Shared root: {deployment.shared_root} (MLflow artifacts in {deployment.mlflow_artifacts_destination()})"
        )
    print("Stop:        make services-down")


def run_team_demo(home: Path, stop_after: bool) -> int:
    """Services up (two workers), then each demo suite: HELM fanned out on the workers, evaluated
    on the PostgreSQL-backed instance, recorded in the MLflow server; prints where each UI is."""
    from governance_assets.cli import (
        QUIET_CONSOLE,
        _print_decision,
        _print_gates,
        prepare_environment,
        summarize_suite,
    )
    from governance_assets.defs.partitions import HELM_SUITES
    from governance_assets.deploy import jobs

    running = services.Deployment.load(home)
    if running is not None and any(services.group_alive(p.pid) for p in running.processes):
        deployment = running
    else:
        print("=== services up ===", flush=True)
        deployment = services.start(_new_deployment(home, workers=2))
    os.environ["GOVERNANCE_DEPLOYMENT"] = "team"
    prepare_environment()
    ok = True
    with dg.DagsterInstance.get() as instance:
        for suite in TEAM_DEMO_SUITES:
            if not instance.has_dynamic_partition(HELM_SUITES, suite):
                instance.add_dynamic_partitions(HELM_SUITES, [suite])
            print(f"\n=== suite {suite}: HELM on {deployment.workers} Celery workers ===", flush=True)
            fan_out = jobs.run_fan_out(instance, suite)
            print(f"Dagster run {fan_out.run_id} (helm_fan_out): {'succeeded' if fan_out.success else 'FAILED'}")
            ok &= fan_out.success
            if not fan_out.success:
                continue
            if SharedRoot.from_environment() is None:  # the workers wrote into this home: summarise as the demo does
                summarize_suite(home, suite)
            # With a shared root, the run pulls the workers' HELM runs and publishes what it writes.
            result = jobs.evaluate_suite().execute_in_process(
                instance=instance, partition_key=suite, raise_on_error=False, run_config=QUIET_CONSOLE
            )
            ok &= result.success
            print(f"Dagster run {result.run_id} (evaluate_suite): {'succeeded' if result.success else 'FAILED'}")
            print("Gates and checks:")
            _print_gates(result.get_asset_check_evaluations())
            print("Release decision:")
            _print_decision(home, suite, result)
    print()
    _print_locations(deployment)
    if stop_after:
        services.stop(home)
    return 0 if ok else 1
