"""Lineage of HELM runs: what produced each number (software, data, settings), as records."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from governance_assets.lib.helm.output import HelmOutputError, load_json

PROVENANCE_FILE = "governance_provenance.json"
"""Written by this platform into the run folders of the HELM runs it starts (never into
historical output trees)."""
KEY_PACKAGES = ("crfm-helm", "torch", "numpy", "pandas", "transformers", "dagster", "mlflow")
UNKNOWN = "unknown"


def canonical_hash(value: Any) -> str:
    """SHA-256 of a JSON value with sorted keys: equal content, equal hash."""
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def package_versions(packages: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that decide HELM's numbers."""
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state(project_root: Path) -> tuple[str, bool | None]:
    """The project's commit and whether the work tree had uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root, capture_output=True, text=True, check=True
        )
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=project_root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN, None
    return commit.stdout.strip(), bool(status.stdout.strip())


def environment_provenance(project_root: Path) -> dict[str, Any]:
    """Software provenance of a HELM run started now from this environment."""
    commit, dirty = git_state(project_root)
    return {
        "helm_version": package_versions(("crfm-helm",))["crfm-helm"],
        "python_version": platform.python_version(),
        "packages": package_versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def instances_hash(scenario_state: Mapping[str, Any]) -> str:
    """Content hash of the scenario's instances (id, split, input, references and their tags,
    perturbation), independent of model outputs and of the order HELM wrote them in."""
    seen = {}
    for state in scenario_state.get("request_states", []):
        instance = state.get("instance", {})
        seen[(instance.get("id"), str(instance.get("perturbation")))] = {
            "id": instance.get("id"),
            "split": instance.get("split"),
            "sub_split": instance.get("sub_split"),
            "input": instance.get("input"),
            "references": instance.get("references"),
            "perturbation": instance.get("perturbation"),
        }
    return canonical_hash([seen[key] for key in sorted(seen, key=str)])


def request_hashes(scenario_state: Mapping[str, Any]) -> dict[str, str]:
    """One hash per request HELM sent (prompt and decoding settings), keyed by instance, trial
    and perturbation, so that two runs' prompts can be compared one by one."""
    hashes = {}
    for state in scenario_state.get("request_states", []):
        instance = state.get("instance", {})
        key = f"{instance.get('id')}|{state.get('train_trial_index', 0)}|{instance.get('perturbation')}"
        hashes[key] = canonical_hash(state.get("request", {}))
    return hashes


def seeds(run_spec: Mapping[str, Any]) -> dict[str, Any]:
    """What decides HELM's sampling: train-example sampling and perturbation seeds."""
    adapter = run_spec.get("adapter_spec", {})
    augmenter = run_spec.get("data_augmenter_spec") or {}
    return {
        "sample_train": adapter.get("sample_train"),
        "num_train_trials": adapter.get("num_train_trials"),
        "seeds_per_instance": augmenter.get("seeds_per_instance"),
        "perturbation_seeds": [p.get("args", {}).get("seed") for p in augmenter.get("perturbation_specs", [])],
        "temperature": adapter.get("temperature"),
    }


def read_provenance(run_dir: Path) -> dict[str, Any] | None:
    """The provenance this platform recorded when it ran HELM, or None for other runs."""
    path = run_dir / PROVENANCE_FILE
    if not path.exists():
        return None
    value = load_json(path)
    if not isinstance(value, dict):
        raise HelmOutputError(path, "expected a JSON object")
    return value


def run_lineage(run_dir: Path, context: Mapping[str, Any]) -> dict[str, Any]:
    """The lineage record of one HELM run. `context` adds what the run folder cannot know
    (suite, Dagster run id, policy hash, code and data versions, MLflow run id). Fields that
    the files do not allow are set to "unknown" and named in `unknown_fields`."""
    run_spec = load_json(run_dir / "run_spec.json")
    scenario_state = load_json(run_dir / "scenario_state.json")
    provenance = read_provenance(run_dir) or {}
    adapter = run_spec.get("adapter_spec", {})
    record: dict[str, Any] = {
        **context,
        "run_name": run_dir.name,
        "model": adapter.get("model"),
        "model_deployment": adapter.get("model_deployment") or UNKNOWN,
        "helm_version": provenance.get("helm_version", UNKNOWN),
        "python_version": provenance.get("python_version", UNKNOWN),
        "packages": provenance.get("packages", UNKNOWN),
        "git_commit": provenance.get("git_commit", UNKNOWN),
        "git_dirty": provenance.get("git_dirty", UNKNOWN),
        "helm_command": provenance.get("command", UNKNOWN),
        "run_spec_hash": canonical_hash(run_spec),
        "instances_hash": instances_hash(scenario_state),
        "adapter_spec": adapter,
        "seeds": seeds(run_spec),
    }
    record["unknown_fields"] = sorted(key for key, value in record.items() if value == UNKNOWN)
    record["source"] = "run by this platform" if provenance else "historical output (files only)"
    return record
