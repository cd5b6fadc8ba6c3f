"""Running `helm-run` one run entry at a time, streaming its log, and recording what it made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from governance_assets.lib.core.storage import write_text_atomic
from governance_assets.lib.helm.output import list_run_folders
from governance_assets.lib.lineage.records import PROVENANCE_FILE, environment_provenance

PROJECT_ROOT = Path(__file__).resolve().parents[3]
PLAN_RECORD = ".governance_plan.json"
"""Kept in the suite folder: which run entry produced which run folder."""


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


def helm_error_summary(log_tail: Sequence[str]) -> str:
    """HELM's own error from the end of its log: the last exception line, else the last lines."""
    for line in reversed(log_tail):
        stripped = line.strip()
        if stripped and ("Error" in stripped or "Exception" in stripped) and not stripped.startswith("File "):
            return stripped
    return " | ".join(line.strip() for line in list(log_tail)[-3:] if line.strip()) or "no output"


def helm_run_command(entry: str, suite: str, settings: HelmSettings) -> list[str]:
    """The `helm-run` invocation for one entry (run as a module of this interpreter)."""
    command = [
        sys.executable,
        "-m",
        "helm.benchmark.run",
        "--run-entries",
        entry,
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
    """Run each entry not yet complete in `suite`; one failure does not stop the others."""
    settings.output_path.mkdir(parents=True, exist_ok=True)
    settings.local_path.mkdir(parents=True, exist_ok=True)
    suite_dir = settings.output_path / "runs" / suite
    plan_record = read_plan_record(suite_dir)
    outcomes = []
    for entry in entries:
        known = plan_record.get(entry)
        if known and (suite_dir / known).is_dir() and not _missing(suite_dir, known):
            outcomes.append(EntryOutcome(entry, known, "skipped"))
            continue
        outcome = _run_one(entry, suite, settings, log)
        outcomes.append(outcome)
        if outcome.run_name and outcome.status == "complete":
            plan_record[entry] = outcome.run_name
            write_text_atomic(suite_dir / PLAN_RECORD, json.dumps(plan_record, indent=2, sort_keys=True))
    return outcomes


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


def _run_one(entry: str, suite: str, settings: HelmSettings, log: Callable[[str], None]) -> EntryOutcome:
    suite_dir = settings.output_path / "runs" / suite
    before = _snapshot(suite_dir)
    env = {**os.environ, **helm_environment()}
    tail: deque[str] = deque(maxlen=60)
    log(f"helm-run {entry} (suite {suite})")
    with subprocess.Popen(
        helm_run_command(entry, suite, settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=settings.output_path.parent,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line.rstrip("\n"))
            log(line.rstrip("\n"))
        returncode = process.wait()
    after = _snapshot(suite_dir)
    touched = sorted(name for name in after if after[name] != before.get(name))
    complete = [name for name in touched if after[name] > 0]
    if returncode == 0 and len(complete) == 1:
        provenance = environment_provenance(PROJECT_ROOT) | {"command": helm_run_command(entry, suite, settings)[1:]}
        write_text_atomic(suite_dir / complete[0] / PROVENANCE_FILE, json.dumps(provenance, indent=2))
        return EntryOutcome(entry, complete[0], "complete")
    run_name = touched[0] if len(touched) == 1 else None
    reason = helm_error_summary(tail) if returncode != 0 else f"HELM wrote {len(complete)} complete runs, expected 1"
    return EntryOutcome(entry, run_name, "failed", f"helm-run {entry!r} exited {returncode}: {reason}")
