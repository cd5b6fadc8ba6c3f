"""The MLflow record of HELM runs: one MLflow run per (suite, HELM run), never duplicated."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from governance_assets.lib.helm.output import read_run_spec

_ILLEGAL_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
MAX_PARAM_LENGTH = 6000
METRIC_MAP_ARTIFACT = "metric_name_map.json"


def metric_key(metric: str, split: str | None, sub_split: str | None = None) -> str:
    """An MLflow-legal key for a HELM stat: `<split>/<metric>[/<sub_split>]`.

    Characters MLflow refuses (`@`, `:`, `=`, `,` …) become `_`, and a short hash of the original
    name is appended whenever anything was replaced, so two HELM names never share a key."""
    parts = [split or "all", metric] + ([sub_split] if sub_split else [])
    original = "/".join(parts)
    cleaned = "/".join(_ILLEGAL_KEY_CHARS.sub("_", part) for part in parts)
    if cleaned != original:
        cleaned += "-" + hashlib.sha256(original.encode()).hexdigest()[:8]
    return cleaned


def flatten_params(adapter_spec: Mapping[str, Any], prefix: str = "adapter") -> dict[str, str]:
    """Adapter settings as MLflow params (`adapter.max_tokens` …); long values keep a hash suffix."""
    params: dict[str, str] = {}
    for key, value in sorted(adapter_spec.items()):
        name = f"{prefix}.{_ILLEGAL_KEY_CHARS.sub('_', key)}"
        if isinstance(value, Mapping):
            params.update(flatten_params(value, name))
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        if len(text) > MAX_PARAM_LENGTH:
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            text = f"{text[: MAX_PARAM_LENGTH - 40]}…[sha256:{digest}]"
        params[name] = text
    return params


@dataclass(frozen=True)
class EvaluationRun:
    """What is recorded for one HELM run."""

    suite: str
    run_name: str
    model: str
    adapter_spec: Mapping[str, Any]
    metrics: Mapping[str, float]
    metric_names: Mapping[str, Mapping[str, str | None]]
    """MLflow key -> the HELM stat name it stands for (metric, split, sub_split)."""
    artifacts: Sequence[Path] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    def content_hash(self) -> str:
        """Hash of everything recorded except Dagster ids: equal hashes mean an unchanged result."""
        payload = {
            "model": self.model,
            "adapter_spec": self.adapter_spec,
            "metrics": dict(sorted(self.metrics.items())),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class RecordedRun:
    """The MLflow run that holds a HELM run's result."""

    run_id: str
    created: bool
    supersedes: str | None = None


class EvaluationRecorder:
    """Writes `EvaluationRun`s to one experiment, reusing the run whose content is unchanged."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None, experiment: str) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        existing = self.client.get_experiment_by_name(experiment)
        if existing is not None:
            self.experiment_id = existing.experiment_id
        else:
            location = artifact_root.joinpath(experiment).as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)

    def latest_by_run_name(self, suite: str) -> dict[str, Any]:
        """The newest MLflow run of each HELM run name already recorded for `suite`."""
        latest: dict[str, Any] = {}
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`governance.suite` = '{suite.replace(chr(39), '')}'",
            order_by=["attributes.start_time DESC"],
            max_results=50000,
        )
        for run in runs:
            run_name = run.data.tags.get("governance.run_name")
            if run.data.tags.get("governance.suite") == suite and run_name:
                latest.setdefault(run_name, run)
        return latest

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Add tags to a recorded run (e.g. its lineage hashes)."""
        self.client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])

    def record(self, runs: Sequence[EvaluationRun]) -> dict[str, RecordedRun]:
        """Record each run unless its latest record has the same content; link changed ones."""
        recorded: dict[str, RecordedRun] = {}
        by_suite: dict[str, dict[str, Any]] = {}
        for run in runs:
            latest = by_suite.setdefault(run.suite, self.latest_by_run_name(run.suite)).get(run.run_name)
            digest = run.content_hash()
            if latest is not None and latest.data.tags.get("governance.content_hash") == digest:
                recorded[run.run_name] = RecordedRun(latest.info.run_id, created=False)
                continue
            supersedes = latest.info.run_id if latest is not None else None
            recorded[run.run_name] = RecordedRun(self._create(run, digest, supersedes), True, supersedes)
        return recorded

    def _create(self, run: EvaluationRun, digest: str, supersedes: str | None) -> str:
        tags = {
            **run.tags,
            "governance.suite": run.suite,
            "governance.run_name": run.run_name,
            "governance.content_hash": digest,
            "helm.model": run.model,
            "mlflow.runName": f"{run.suite}/{run.run_name}"[:250],
        }
        if supersedes:
            tags["governance.supersedes"] = supersedes
        created = self.client.create_run(self.experiment_id, tags=tags)
        run_id = str(created.info.run_id)
        metrics = [Metric(key, float(value), 0, 0) for key, value in sorted(run.metrics.items())]
        params = [Param(key, value) for key, value in flatten_params(run.adapter_spec).items()]
        for start in range(0, len(params), 100):  # MLflow's per-batch limits
            self.client.log_batch(run_id, params=params[start : start + 100])
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
        with tempfile.TemporaryDirectory() as scratch:
            name_map = Path(scratch) / METRIC_MAP_ARTIFACT
            name_map.write_text(json.dumps(run.metric_names, indent=2, sort_keys=True), "utf-8")
            self.client.log_artifact(run_id, str(name_map))
        for artifact in run.artifacts:
            self.client.log_artifact(run_id, str(artifact), artifact_path="helm")
        self.client.set_terminated(run_id)
        return run_id


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """Link to a run in the MLflow UI."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def evaluation_runs(run_stats: pa.Table, runs: pa.Table, tags: Mapping[str, str]) -> list[EvaluationRun]:
    """One `EvaluationRun` per complete run of a suite: plain (unperturbed) stats as metrics,
    adapter settings from its `run_spec.json`, and its key files as artifacts."""
    plain = run_stats.filter(pc.and_(pc.is_null(run_stats["perturbation"]), pc.greater(run_stats["count"], 0)))
    by_run: dict[str, list[dict[str, Any]]] = {}
    for row in plain.select(["run_name", "metric", "split", "sub_split", "mean"]).to_pylist():
        by_run.setdefault(row["run_name"], []).append(row)
    result = []
    for run in runs.filter(pc.equal(runs["status"], "complete")).to_pylist():
        folder = Path(run["path"])
        spec = read_run_spec(folder)
        metrics: dict[str, float] = {}
        names: dict[str, dict[str, str | None]] = {}
        for stat in by_run.get(run["run_name"], []):
            key = metric_key(stat["metric"], stat["split"], stat["sub_split"])
            metrics[key] = stat["mean"]
            names[key] = {
                "metric": stat["metric"],
                "split": stat["split"],
                "sub_split": stat["sub_split"],
            }
        result.append(
            EvaluationRun(
                suite=run["suite"],
                run_name=run["run_name"],
                model=run["model"],
                adapter_spec=spec.adapter_spec,
                metrics=metrics,
                metric_names=names,
                artifacts=[folder / "run_spec.json", folder / "stats.json"],
                tags=tags,
            )
        )
    return result


def log_report(
    recorder: EvaluationRecorder,
    run_name: str,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    files: Mapping[str, str | bytes],
) -> str:
    """One MLflow run in the recorder's experiment holding a governance report: its headline
    numbers as metrics and its documents (`name -> text or bytes`, e.g. a PNG plot) as artifacts."""
    client = recorder.client
    run_id = str(client.create_run(recorder.experiment_id, tags={**tags, "mlflow.runName": run_name[:250]}).info.run_id)
    batch = [Metric(_ILLEGAL_KEY_CHARS.sub("_", key), float(value), 0, 0) for key, value in sorted(metrics.items())]
    for start in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[start : start + 1000])
    with tempfile.TemporaryDirectory() as scratch:
        for name, content in files.items():
            path = Path(scratch) / name
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    return run_id
