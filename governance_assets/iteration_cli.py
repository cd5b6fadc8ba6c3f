"""The command line's iteration parts: the demo's plan, sweep and labelling steps, and `plan apply
SUITE`, which turns a plan's deciding evaluation settings into a new policy file (never the one in force)."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import optuna
import yaml

from governance_assets.lib.core.policy import parse_policy, policy_source
from governance_assets.lib.core.storage import write_text_atomic
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.iteration import sweep

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


SWEEP_JOB = "sweep_adapter_settings"


def run_sweep_job() -> None:
    """Run (or resume) the policy's sweep in this process: the demo's child that it interrupts."""
    from governance_assets.definitions import defs

    with dg.DagsterInstance.get() as instance:
        defs().resolve_job_def(SWEEP_JOB).execute_in_process(instance=instance, raise_on_error=False, run_config=QUIET)


Finished = dict[int, tuple[str, float | None, str]]
"""A study's finished trials: number -> state, value, when it finished."""


def _study() -> tuple[str, str, int]:
    """The policy's sweep: its RDB storage URL (honours OPTUNA_STORAGE_URL), study name, trials."""
    from governance_assets.defs.iteration.sweep import storage_url
    from governance_assets.defs.resources import GovernanceState

    state = GovernanceState()
    settings = state.policy().iteration.sweep
    return storage_url(state), settings.study, settings.n_trials


def _finished(storage: str, study: str) -> Finished:
    try:
        loaded = optuna.load_study(study_name=study, storage=storage)
    except KeyError:  # not created yet
        return {}
    return {t.number: (t.state.name, t.value, str(t.datetime_complete)) for t in sweep.finished_trials(loaded)}


def _interrupt_sweep(instance: dg.DagsterInstance) -> Finished:
    """Start the sweep in a child process and kill it (SIGKILL, with its helm-run) once a trial
    more has finished, as a crash would; return the trials finished by then. A study that has all
    its trials already is left alone."""
    storage, study, n_trials = _study()
    before = _finished(storage, study)
    if len(before) >= n_trials:
        print(f"  study {study} already has its {n_trials} trials: nothing to interrupt")
        return before
    child = subprocess.Popen(
        [sys.executable, "-c", "from governance_assets.iteration_cli import run_sweep_job; run_sweep_job()"],
        start_new_session=True,  # its own process group: the kill takes helm-run with it
    )
    print(f"  sweep started in process {child.pid}; killed once one more trial has finished", flush=True)
    finished = before
    while child.poll() is None and len(finished) <= len(before):
        time.sleep(0.5)
        finished = _finished(storage, study)
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        print(f"  killed process {child.pid} (SIGKILL) with trials {sorted(finished)} finished", flush=True)
        for run in instance.get_runs(dg.RunsFilter(job_name=SWEEP_JOB, statuses=[dg.DagsterRunStatus.STARTED])):
            instance.report_run_failed(run, "killed by the demo (SIGKILL) to show the sweep resuming")
    return finished


def _print_resumed(interrupted: Finished) -> None:
    """Which finished trials the resumed sweep kept (same state, value and finishing time) and which it ran."""
    storage, study, _ = _study()
    after = _finished(storage, study)
    kept = sorted(n for n, trial in interrupted.items() if after.get(n) == trial)
    ran = sorted(set(after) - set(interrupted))
    print(f"  resumed: trials {kept} kept as they finished before the kill (not re-run); trials {ran} run after it")
    for trial in optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False):
        if "retry_of" in trial.user_attrs:
            print(f"  trial {trial.user_attrs['retry_of']}, killed mid-run, was run again as trial {trial.number}")


LABELED_SUITE = "demo-labeled"
"""The demo's suite that evaluates the labelled scenario."""


def _label_like_a_person(home: Path, suite: str) -> Path:
    """The demo's stand-in for a person: label the suite's queue with each item's correct reference
    (items without one are left unlabelled and rejected) and drop the file into landing/labels."""
    queue = home / "iteration" / "labeling" / suite / "queue.jsonl"
    rows = [json.loads(line) for line in queue.read_text("utf-8").splitlines() if line.strip()]
    for row in rows:
        references = json.loads(row["references"] or "[]")
        row["label"] = references[0] if references else ""
    landing = home / "landing" / "labels"
    write_text_atomic(landing / f"{suite}-labels.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    return landing / f"{suite}-labels.jsonl"


def run_iteration_demo(instance: dg.DagsterInstance, definitions: dg.Definitions, home: Path, suite: str) -> bool:
    """A guided sweep of real HELM trials, then the suite's labelling queue labelled, turned into
    the scenario governance_labeled and evaluated in a new suite through the same gates."""
    from governance_assets.defs.helm.assets import PLANNED_SUITE_TAGS
    from governance_assets.defs.partitions import HELM_SUITES

    print("\n=== guided sweep (iteration/sweep): real HELM trials over adapter settings ===", flush=True)
    interrupted = _interrupt_sweep(instance)
    print("  resuming the study in this process", flush=True)
    sweep_run = definitions.resolve_job_def(SWEEP_JOB).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET
    )
    for event in sweep_run.get_asset_materialization_events():
        metadata = event.materialization.metadata
        trials: list[dict[str, Any]] = metadata["trials"].value  # type: ignore[assignment]
        for trial in trials:
            print(f"  trial {trial['trial']}: {trial['state']}, value {trial['value']}, suite {trial['suite']}")
        if "best_params" in metadata:
            print(
                f"  best: {metadata['best_params'].value} -> {metadata['best_value'].value:.3f} (proposed, not applied)"
            )
    _print_resumed(interrupted)
    print("  run it again to see it resume: finished trials are kept, never re-run")

    print(f"\n=== labelling: suite {suite}'s queue labelled and evaluated as a new scenario ===", flush=True)
    labelled = _label_like_a_person(home, suite)
    build = definitions.resolve_job_def("build_labeled_scenario").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET
    )
    [event] = build.get_asset_materialization_events()
    entry = str(event.materialization.metadata["run_entry"].value)
    print(f"  {labelled.name}: {event.materialization.metadata['rows_rejected'].value} rows rejected; scenario {entry}")
    text, _ = policy_source()
    document = yaml.safe_load(text)
    document["evaluation_plan"]["run_entries"] = [entry.split(",")[0]]
    policy_path = home / "iteration" / "labeled-policy.yaml"
    write_text_atomic(policy_path, yaml.safe_dump(document, sort_keys=False))
    previous = os.environ.get("GOVERNANCE_POLICY")
    os.environ["GOVERNANCE_POLICY"] = str(policy_path)  # the helm runner reads the plan at run time
    try:
        if not instance.has_dynamic_partition(HELM_SUITES, LABELED_SUITE):
            instance.add_dynamic_partitions(HELM_SUITES, [LABELED_SUITE])
        result = definitions.resolve_job_def("evaluate_suite").execute_in_process(
            instance=instance,
            partition_key=LABELED_SUITE,
            tags=PLANNED_SUITE_TAGS,
            raise_on_error=False,
            run_config=QUIET,
        )
    finally:
        if previous is None:
            os.environ.pop("GOVERNANCE_POLICY", None)
        else:
            os.environ["GOVERNANCE_POLICY"] = previous
    verdicts = Warehouse(home / "warehouse").read(("gates", "verdicts"), LABELED_SUITE)
    for row in verdicts.to_pylist() if verdicts is not None else []:
        print(f"  {LABELED_SUITE} {row['gate']}: {row['status']} ({row['reason'][:120]})")
    return sweep_run.success and build.success and verdicts is not None and result is not None
