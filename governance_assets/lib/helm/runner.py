"""Running `helm-run` (one process for all entries), streaming its log, and recording what it made."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from governance_assets.lib.core.storage import write_text_atomic
from governance_assets.lib.helm.output import list_run_folders
from governance_assets.lib.lineage.records import PROVENANCE_FILE, environment_provenance

PROJECT_ROOT = Path(__file__).resolve().parents[3]
PLAN_RECORD = ".governance_plan.json"
"""Kept in the suite folder: which run entry produced which run folder."""
_RUN_STARTED = re.compile(r"Running (.+) \{$")
_RUN_FAILED = re.compile(r"Error when running (.+):$")
"""HELM's log lines that open a run's block and report its failure."""
_FAILED_RUNS_LIST = re.compile(r"RunnerError: Failed runs: \[")
"""HELM's last line when runs failed: their names, not why they failed."""
_EXCEPTION_LINE = re.compile(r"^(?:\w+\.)*\w*(?:Error|Exception|Timeout)\w*(?::|$)")
"""The last line of a Python traceback: the exception's (dotted) name, then its message."""
_QUOTED_REQUEST = " Request: Request("
RUN_ERROR_LINES = 200
"""Lines kept after a run's `Error when running …:` (its traceback, then the reason)."""


PLANNED_MARKER = ".governance_planned"
"""In the platform's own suite folder: the suite was created by the platform (schedule, demo,
sweep), so `helm-run` may run its evaluation plan into it. Historical suites never have one."""


def mark_planned(suite_dir: Path) -> None:
    """Mark `suite_dir` (in the platform's own output) as a suite the platform evaluates."""
    write_text_atomic(suite_dir / PLANNED_MARKER, "created by the governance platform\n")


def is_planned(suite_dir: Path) -> bool:
    """Whether the platform created this suite (see `PLANNED_MARKER`)."""
    return (suite_dir / PLANNED_MARKER).is_file()


@dataclass(frozen=True)
class HelmSettings:
    """Where HELM writes and how it is invoked."""

    output_path: Path
    """HELM's `-o` (the `benchmark_output` folder)."""
    local_path: Path
    """HELM's `--local-path` (cache, credentials, model_deployments.yaml)."""
    max_eval_instances: int
    num_threads: int = 1
    plugins: tuple[str, ...] = ()
    num_train_trials: int | None = None
    """HELM's `--num-train-trials` (None: each run spec's own)."""
    dry_run: bool = False
    """HELM's `--dry-run`: build the prompts, query no model."""
    disable_cache: bool = False
    """HELM's `--disable-cache`: query the model again instead of reading its cache."""


@dataclass(frozen=True)
class EntryOutcome:
    """What became of one run entry."""

    entry: str
    run_name: str | None
    status: str
    """`complete`, `skipped` (already complete) or `failed`."""
    error: str | None = None


def helm_environment() -> dict[str, str]:
    """Variables that keep HELM offline: the shipped NLTK data, and no hub look-ups."""
    nltk_data = resources.files("governance_assets").joinpath("nltk_data")
    return {
        "NLTK_DATA": str(nltk_data),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }


def read_plan_record(suite_dir: Path) -> dict[str, str]:
    """Run entry -> run folder name, for entries this platform already ran into the suite."""
    path = suite_dir / PLAN_RECORD
    return dict(json.loads(path.read_text("utf-8"))) if path.exists() else {}


def helm_error_summary(log_lines: Sequence[str]) -> str:
    """HELM's reason from its log: the last exception line that says why (the client's HTTP error
    or timeout), not HELM's closing `RunnerError: Failed runs: [...]`, which only lists the failed
    runs; the request HELM quotes after the reason (its whole prompt) is left out."""
    raised = [line.strip() for line in log_lines if _EXCEPTION_LINE.match(line)]
    mentioned = [
        line.strip()
        for line in log_lines
        if ("Error" in line or "Exception" in line) and not line.strip().startswith(("File ", "raise "))
    ]
    reasons = [line for line in raised if not _FAILED_RUNS_LIST.search(line)] or raised or mentioned
    if reasons:
        return reasons[-1].split(_QUOTED_REQUEST, 1)[0]
    return " | ".join(line.strip() for line in list(log_lines)[-3:] if line.strip()) or "no output"


def helm_run_command(entries: Sequence[str], suite: str, settings: HelmSettings) -> list[str]:
    """The `helm-run` arguments for `entries` (one process for all of them)."""
    command = [
        "helm-run",
        "--run-entries",
        *entries,
        "--suite",
        suite,
        "--max-eval-instances",
        str(settings.max_eval_instances),
        "--num-threads",
        str(settings.num_threads),
        "--output-path",
        str(settings.output_path),
        "--local-path",
        str(settings.local_path),
        "--skip-completed-runs",
    ]
    if settings.num_train_trials is not None:
        command += ["--num-train-trials", str(settings.num_train_trials)]
    if settings.plugins:
        command += ["--plugins", *settings.plugins]
    if settings.dry_run:
        command.append("--dry-run")
    if settings.disable_cache:
        command.append("--disable-cache")
    return command


def run_entries(
    entries: Sequence[str],
    suite: str,
    settings: HelmSettings,
    log: Callable[[str], None],
) -> list[EntryOutcome]:
    """Run every entry not yet complete in `suite`, all in one `helm-run` process; one failing
    entry does not stop the others. Outcomes in the order of `entries`. `log` gets the command,
    each run's start and failure; HELM's whole output goes to `<output>/logs/helm-run-<suite>.log`
    (sent line by line to Dagster's event log, it slowed HELM down by seconds)."""
    settings.output_path.mkdir(parents=True, exist_ok=True)
    settings.local_path.mkdir(parents=True, exist_ok=True)
    suite_dir = settings.output_path / "runs" / suite
    plan_record = read_plan_record(suite_dir)
    outcomes: dict[str, EntryOutcome] = {}
    for entry in entries:
        known = plan_record.get(entry)
        if known and (suite_dir / known).is_dir() and not _missing(suite_dir, known):
            outcomes[entry] = EntryOutcome(entry, known, "skipped")
    pending = [entry for entry in dict.fromkeys(entries) if entry not in outcomes]
    if pending:
        for outcome in _run_batch(pending, suite, settings, log):
            outcomes[outcome.entry] = outcome
            if outcome.run_name and outcome.status == "complete":
                plan_record[outcome.entry] = outcome.run_name
        write_text_atomic(suite_dir / PLAN_RECORD, json.dumps(plan_record, indent=2, sort_keys=True))
    return [outcomes[entry] for entry in entries]


def _missing(suite_dir: Path, run_name: str) -> tuple[str, ...]:
    for run in list_run_folders(suite_dir):
        if run.run_name == run_name:
            return run.missing_files
    return ("run folder",)


def _snapshot(suite_dir: Path) -> dict[str, float]:
    if not suite_dir.is_dir():
        return {}
    return {
        run.run_name: (run.path / "run_spec.json").stat().st_mtime if run.complete else 0.0
        for run in list_run_folders(suite_dir)
    }


def _run_batch(
    entries: Sequence[str], suite: str, settings: HelmSettings, log: Callable[[str], None]
) -> list[EntryOutcome]:
    """One `helm-run` for `entries`; each entry's outcome from the runs it produced."""
    suite_dir = settings.output_path / "runs" / suite
    before = _snapshot(suite_dir)
    env = {**os.environ, **helm_environment()}
    tail: deque[str] = deque(maxlen=60)
    run_errors: dict[str, list[str]] = {}
    failing: list[str] | None = None
    command = helm_run_command(entries, suite, settings)
    log_path = settings.output_path / "logs" / f"helm-run-{suite}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log(f"helm-run (suite {suite}): {', '.join(entries)}")
    log(f"HELM's full output: {log_path}")  # the runs' starts and failures are logged here too
    with tempfile.TemporaryDirectory() as scratch:
        produced_path = Path(scratch) / "produced.json"
        with subprocess.Popen(
            [sys.executable, "-m", "governance_assets.lib.helm.batch_run", str(produced_path), *command[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=settings.output_path.parent,
        ) as process:
            assert process.stdout is not None
            with log_path.open("a", encoding="utf-8") as full_log:
                full_log.write(f"$ {' '.join(command)}\n")
                for line in process.stdout:
                    full_log.write(line)
                    line = line.rstrip("\n")
                    tail.append(line)
                    failed = _RUN_FAILED.search(line)
                    if failed:
                        failing = run_errors[failed.group(1)] = []
                        log(line)
                    elif _RUN_STARTED.search(line):
                        failing = None
                        log(line.strip())
                    elif failing is not None and len(failing) < RUN_ERROR_LINES:
                        failing.append(line)
            returncode = process.wait()
        produced = _read_produced(produced_path)
    after = _snapshot(suite_dir)
    outcomes = []
    for entry in entries:
        what = produced.get(entry, {})
        names = what.get("run_names")
        if "error" in what:
            outcomes.append(EntryOutcome(entry, None, "failed", f"helm-run {entry!r}: {what['error']}"))
        elif names is None:
            reason = helm_error_summary(tail)
            outcomes.append(EntryOutcome(entry, None, "failed", f"helm-run {entry!r} exited {returncode}: {reason}"))
        elif len(names) != 1:
            reason = f"it makes {len(names)} runs ({', '.join(names)}), expected 1"
            outcomes.append(EntryOutcome(entry, None, "failed", f"helm-run {entry!r}: {reason}"))
        elif after.get(names[0], 0.0) > 0:
            if after[names[0]] != before.get(names[0]):
                provenance = environment_provenance(PROJECT_ROOT) | {
                    "command": helm_run_command([entry], suite, settings)
                }
                write_text_atomic(suite_dir / names[0] / PROVENANCE_FILE, json.dumps(provenance, indent=2))
            outcomes.append(EntryOutcome(entry, names[0], "complete"))
        else:
            reason = helm_error_summary(run_errors.get(names[0]) or tail)
            run_name = names[0] if names[0] in after else None
            outcomes.append(
                EntryOutcome(entry, run_name, "failed", f"helm-run {entry!r} exited {returncode}: {reason}")
            )
    return outcomes


def _read_produced(path: Path) -> dict[str, dict[str, Any]]:
    """What `batch_run` wrote, or nothing if HELM stopped before turning entries into runs."""
    try:
        return dict(json.loads(path.read_text("utf-8")))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
