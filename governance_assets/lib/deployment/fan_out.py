"""A suite's HELM runs as independent steps (one per run entry × model) that workers may run at the
same time, each `helm-run` in its own scratch output folder, its run folder then moved into the
suite: concurrent runs never see each other's folders, and a step that is run again (a worker
died) starts from a clean folder."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from governance_assets.lib.core.policy import ScaleOutSettings
from governance_assets.lib.core.storage import write_text_atomic
from governance_assets.lib.deployment.shared_root import SharedRoot
from governance_assets.lib.helm.output import list_run_folders
from governance_assets.lib.helm.runner import PLAN_RECORD, EntryOutcome, HelmSettings, read_plan_record, run_entries

_MODEL = re.compile(r"(?:^|[:,])model=([^,]+)")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def model_of(entry: str) -> str:
    """The model deployment an entry names (`simple1:model=simple/model1` -> `simple/model1`)."""
    found = _MODEL.search(entry)
    if found is None:
        raise ValueError(f"run entry {entry!r} names no model (model=…)")
    return found.group(1)


def provider_of(entry: str) -> str:
    """The provider whose rate limits an entry's requests count against: the model's organisation."""
    return model_of(entry).split("/", 1)[0]


def pool_name(provider: str) -> str:
    """The Dagster pool that limits a provider's concurrent HELM runs."""
    return f"helm_{_UNSAFE.sub('_', provider)}"


def step_key(entry: str) -> str:
    """A Dagster mapping key for an entry: readable, and unique by a digest of the exact entry."""
    return f"{_UNSAFE.sub('_', entry)[:48]}_{hashlib.sha1(entry.encode()).hexdigest()[:8]}"


def pool_limits(providers: Iterable[str], settings: ScaleOutSettings) -> dict[str, int]:
    """Pool -> concurrent HELM runs allowed, for every provider of the plan."""
    return {
        pool_name(p): settings.provider_concurrency.get(p, settings.default_provider_concurrency) for p in providers
    }


def completed_entries(suite_dir: Path) -> dict[str, str]:
    """Entries of the plan record whose run folders are complete (nothing to run again)."""
    complete = {run.run_name for run in list_run_folders(suite_dir) if run.complete} if suite_dir.is_dir() else set()
    return {entry: name for entry, name in read_plan_record(suite_dir).items() if name in complete}


def run_entry_isolated(
    entry: str, suite: str, settings: HelmSettings, suite_dir: Path, scratch_root: Path, log: Callable[[str], None]
) -> EntryOutcome:
    """Run one entry into a fresh scratch folder, then move its run folder into `suite_dir`."""
    known = completed_entries(suite_dir).get(entry)
    if known is not None:
        return EntryOutcome(entry, known, "skipped")
    scratch = scratch_root / uuid.uuid4().hex
    try:
        outcome = run_entries([entry], suite, replace(settings, output_path=scratch / "benchmark_output"), log)[0]
        if outcome.run_name is not None:
            made = scratch / "benchmark_output" / "runs" / suite / outcome.run_name
            target = suite_dir / outcome.run_name
            suite_dir.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)  # an incomplete folder left by an earlier attempt
            made.rename(target)
        return outcome
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def pull_entry_state(shared: SharedRoot, home: Path, suite_dir: Path, entry: str) -> None:
    """From the shared root: the suite's plan record and the run folder it names for `entry`, so
    that a run another machine completed is not run again here."""
    relative = suite_dir.relative_to(home)
    shared.pull(relative / PLAN_RECORD, home)
    known = read_plan_record(suite_dir).get(entry)
    if known is not None:
        shared.pull(relative / known, home)


def publish_outcome(shared: SharedRoot, home: Path, suite_dir: Path, outcome: EntryOutcome) -> None:
    """A run folder this machine completed, to the shared root (where the collecting step and the
    evaluation, on any machine, read it)."""
    if outcome.status == "complete" and outcome.run_name is not None:
        shared.publish(home, suite_dir.relative_to(home) / outcome.run_name)


def record_outcomes(suite_dir: Path, outcomes: Iterable[EntryOutcome]) -> dict[str, str]:
    """Add the completed entries to the suite's plan record (one writer: the step that collects)."""
    record = read_plan_record(suite_dir) | {
        o.entry: o.run_name for o in outcomes if o.status == "complete" and o.run_name is not None
    }
    write_text_atomic(suite_dir / PLAN_RECORD, json.dumps(record, indent=2, sort_keys=True))
    return record
