"""The command line's iteration parts: the demo's plan step, and `plan apply SUITE`, which turns
a plan's deciding evaluation settings into a new policy file (never the one in force)."""

import argparse
from pathlib import Path

import dagster as dg
import yaml

from governance_assets.lib.core.policy import parse_policy, policy_source
from governance_assets.lib.core.storage import write_text_atomic
from governance_assets.lib.core.warehouse import Warehouse

PLAN_KEY = ("iteration", "plan")

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
SHOWN_ITEMS = 5


def _print_plan(home: Path, suite: str) -> None:
    table = Warehouse(home / "warehouse").read(PLAN_KEY, suite)
    if table is None:
        print("  iteration/plan: not written")
        return
    rows = table.to_pylist()
    for row in rows[:SHOWN_ITEMS]:
        blocking = " [blocks release]" if row["blocks_release"] else ""
        print(f"  {row['rank']}. {row['kind']}{blocking}: {row['problem'][:150]}")
        print(f"     -> {row['action'][:150]} (cost: {row['instances']} instances, {row['model_calls']} model calls)")
    if len(rows) > SHOWN_ITEMS:
        print(
            f"  ... and {len(rows) - SHOWN_ITEMS} more items; report: {home / 'reports' / 'iteration' / f'{suite}.html'}"
        )


def run_plans(instance: dg.DagsterInstance, definitions: dg.Definitions, home: Path, suites: list[str]) -> bool:
    """Materialise `iteration/plan` for each suite (as `plan_after_evaluation` would request it) and print it."""
    job = definitions.resolve_job_def("plan_iteration")
    ok = True
    for suite in suites:
        print(f"\n=== suite {suite}: iteration plan ===", flush=True)
        result = job.execute_in_process(instance=instance, partition_key=suite, raise_on_error=False, run_config=QUIET)
        ok &= result.success
        _print_plan(home, suite)
    print("  apply a plan's evaluation settings: python -m governance_assets.cli plan apply SUITE --output policy.yaml")
    return ok


def apply_plan(args: argparse.Namespace, home: Path) -> int:
    """Write the policy in force with the evaluation-plan settings that decide the suite's
    inconclusive comparisons to `--output`, and print what changed; the policy in force is not
    touched (point GOVERNANCE_POLICY at the new file to use it)."""
    warehouse = Warehouse(home / "warehouse")
    if not warehouse.path(PLAN_KEY, args.suite).exists():
        print(
            f"{warehouse.path(PLAN_KEY, args.suite)}: no iteration plan for suite {args.suite}; materialise iteration/plan first"
        )
        return 1
    needed = warehouse.read_annotation(PLAN_KEY, args.suite, "evaluation_plan") or {}
    if not needed:
        print(f"suite {args.suite}: the plan needs no change to the evaluation plan")
        return 0
    text, source = policy_source()
    document = yaml.safe_load(text)
    current = document["evaluation_plan"]
    changes = {key: (current.get(key), value) for key, value in needed.items() if current.get(key) != value}
    document["evaluation_plan"] = {**current, **needed}
    new_text = f"# {source} with the evaluation plan of iteration/plan for suite {args.suite}\n" + yaml.safe_dump(
        document, sort_keys=False
    )
    parse_policy(new_text, str(args.output))  # never write a policy that does not load
    write_text_atomic(Path(args.output), new_text)
    for key, (old, new) in changes.items():
        print(f"evaluation_plan.{key}: {old} -> {new}")
    print(f"written to {args.output}; use it with GOVERNANCE_POLICY={Path(args.output).absolute()}")
    return 0
