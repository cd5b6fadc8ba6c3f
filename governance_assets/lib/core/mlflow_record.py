"""The MLflow record of HELM runs: one MLflow run per (suite, HELM run), never duplicated."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
from mlflow.utils.uri import append_to_uri_path
from mlflow.utils.validation import _validate_metric, _validate_param, _validate_tag

from governance_assets.lib.core.files import regular_file_problem
from governance_assets.lib.core.secrets import redacting_errors
from governance_assets.lib.helm.output import read_run_spec

_ILLEGAL_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
MAX_PARAM_LENGTH = 6000
METRIC_MAP_ARTIFACT = "metric_name_map.json"
NOTE_TAG = "mlflow.note.content"
"""MLflow's run description, shown on the run's page."""
CONTENT_HASH_TAG = "governance.content_hash"
"""Written last: a record without it (still RUNNING) is incomplete."""


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
    """Writes `EvaluationRun`s to one experiment, reusing the run whose content is unchanged.

    Crash-safe: a record is complete only once it is FINISHED with its `governance.content_hash`
    tag, both written last; a RUNNING record of the suite found under the suite's lock was left by
    a writer that died, and is deleted before anything is compared. Concurrent recorders of one
    suite take turns on a lock file in `lock_dir`, so one content is recorded once.
    Fast: on a SQL tracking store (SQLite, PostgreSQL, …) the new runs are inserted in bulk through
    MLflow's own tables in two transactions (all of them RUNNING with their tags, params and
    metrics; then, after their artifacts are stored, the hashes and FINISHED); on any other store
    (a tracking server) each run takes a few client calls."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None, experiment: str, lock_dir: Path) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        self.client = redacting_errors(MlflowClient(tracking_uri=tracking_uri))
        self.tracking_uri = tracking_uri
        self.lock_dir = lock_dir
        existing = self.client.get_experiment_by_name(experiment)
        if existing is not None:
            self.experiment_id = existing.experiment_id
        else:
            location = artifact_root.joinpath(experiment).as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)

    def latest_by_run_name(self, suite: str) -> dict[str, Run]:
        """The newest complete MLflow run of each HELM run name already recorded for `suite`
        (with its tags; on a SQL store without its params and metrics)."""
        latest: dict[str, Run] = {}
        for run in self._suite_runs(suite, "FINISHED"):
            run_name = run.data.tags.get("governance.run_name")
            if run_name and CONTENT_HASH_TAG in run.data.tags:
                latest.setdefault(run_name, run)
        return latest

    def set_tags(self, tags_by_run: Mapping[str, Mapping[str, str]]) -> None:
        """Add or replace tags on recorded runs (`run id -> tags`, e.g. their lineage hashes)."""
        store = self._sql_store()
        if store is None:
            for run_id, tags in tags_by_run.items():
                self.client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])
            return
        rows = [{"run_uuid": run_id, "key": key, "value": value} for run_id, tags in tags_by_run.items()
                for key, value in tags.items()]  # fmt: skip
        for row in rows:
            _validate_tag(row["key"], row["value"])  # type: ignore[no-untyped-call]
        with store.ManagedSessionMaker() as session:
            for run_id, tags in tags_by_run.items():
                session.execute(sa.delete(SqlTag).where(SqlTag.run_uuid == run_id, SqlTag.key.in_(list(tags))))
            if rows:
                session.execute(sa.insert(SqlTag), rows)

    def record(self, runs: Sequence[EvaluationRun]) -> dict[str, RecordedRun]:
        """Record each run unless its latest record has the same content; link changed ones."""
        suites = sorted({run.suite for run in runs})
        with ExitStack() as locks:
            for suite in suites:  # always in the same order: two recorders never wait on each other
                locks.enter_context(self._suite_lock(suite))
            for suite in suites:
                self._delete_unfinished(suite)
            latest = {suite: self.latest_by_run_name(suite) for suite in suites}
            recorded: dict[str, RecordedRun] = {}
            pending: list[tuple[EvaluationRun, str | None]] = []
            for run in runs:
                previous = latest[run.suite].get(run.run_name)
                if previous is not None and previous.data.tags.get(CONTENT_HASH_TAG) == run.content_hash():
                    recorded[run.run_name] = RecordedRun(previous.info.run_id, created=False)
                else:
                    pending.append((run, previous.info.run_id if previous is not None else None))
            store = self._sql_store()
            run_ids = self._create_in_bulk(store, pending) if store else [self._create(*item) for item in pending]
            for (run, supersedes), run_id in zip(pending, run_ids, strict=True):
                recorded[run.run_name] = RecordedRun(run_id, True, supersedes)
        return recorded

    def _suite_runs(self, suite: str, status: str) -> list[Run]:
        """The suite's active runs in `status`, newest first. On a SQL store they are read with
        their tags only (one query; loading every run's params and metrics took seconds)."""
        store = self._sql_store()
        if store is None:
            quoted = suite.replace("'", "\\'")
            return list(
                self.client.search_runs(
                    [self.experiment_id],
                    filter_string=f"tags.`governance.suite` = '{quoted}' and attributes.status = '{status}'",
                    order_by=["attributes.start_time DESC"],
                    max_results=50000,
                )
            )
        in_suite: Any = sa.select(SqlTag.run_uuid).where(SqlTag.key == "governance.suite", SqlTag.value == suite)
        query: Any = (
            sa.select(SqlRun.run_uuid, SqlRun.user_id, SqlRun.start_time, SqlRun.end_time, SqlRun.artifact_uri,
                      SqlRun.name, SqlTag.key, SqlTag.value)
            .join(SqlTag, SqlTag.run_uuid == SqlRun.run_uuid)
            .where(SqlRun.experiment_id == int(self.experiment_id), SqlRun.status == status,
                   SqlRun.lifecycle_stage == "active", SqlRun.run_uuid.in_(in_suite))
        )  # fmt: skip
        infos: dict[str, RunInfo] = {}
        tags: dict[str, list[RunTag]] = {}
        with store.ManagedSessionMaker() as session:
            for run_id, user, start, end, artifact_uri, name, key, value in session.execute(query):
                if run_id not in infos:
                    infos[run_id] = RunInfo(
                        run_id, self.experiment_id, user, status, start, end, "active", artifact_uri, name
                    )
                tags.setdefault(run_id, []).append(RunTag(key, value))
        newest_first = sorted(infos.values(), key=lambda info: (info.start_time, info.run_id), reverse=True)
        return [Run(info, RunData(tags=tags[info.run_id])) for info in newest_first]

    @contextmanager
    def _suite_lock(self, suite: str) -> Iterator[None]:
        """An exclusive lock on (tracking store, experiment, suite), released when its holder dies."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(f"{self.tracking_uri}\0{self.experiment_id}\0{suite}".encode()).hexdigest()[:24]
        with (self.lock_dir / f"mlflow-record-{name}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _delete_unfinished(self, suite: str) -> None:
        """Delete the records of `suite` that a writer left RUNNING (called under the suite's lock)."""
        for run in self._suite_runs(suite, "RUNNING"):
            self.client.delete_run(run.info.run_id)

    def _sql_store(self) -> SqlAlchemyStore | None:
        """MLflow's SQL tracking store behind the client, when that is what it uses."""
        store = self.client._tracking_client.store
        return store if type(store) is SqlAlchemyStore else None

    def _create(self, run: EvaluationRun, supersedes: str | None) -> str:
        """One run through the client: created RUNNING, completed by its hash and FINISHED."""
        created = self.client.create_run(self.experiment_id, tags=_tags(run, supersedes))
        run_id = str(created.info.run_id)
        metrics = [Metric(key, float(value), 0, 0) for key, value in sorted(run.metrics.items())]
        params = [Param(key, value) for key, value in flatten_params(run.adapter_spec).items()]
        for start in range(0, len(params), 100):  # MLflow's per-batch limits
            self.client.log_batch(run_id, params=params[start : start + 100])
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start : start + 1000])
        with tempfile.TemporaryDirectory() as scratch:
            _store_artifacts(get_artifact_repository(created.info.artifact_uri, self.tracking_uri), run, Path(scratch))
        self.client.log_batch(run_id, tags=[RunTag(CONTENT_HASH_TAG, run.content_hash())])
        self.client.set_terminated(run_id)
        return run_id

    def _create_in_bulk(self, store: SqlAlchemyStore, pending: Sequence[tuple[EvaluationRun, str | None]]) -> list[str]:
        """All runs in two transactions of MLflow's SQL store (the rows `create_run` and `log_batch`
        write); artifacts stored between them."""
        if not pending:
            return []
        experiment = self.client.get_experiment(self.experiment_id)
        now = int(time.time() * 1000)
        run_ids = [uuid.uuid4().hex for _ in pending]
        artifact_uris = [
            str(append_to_uri_path(experiment.artifact_location, run_id, "artifacts"))  # type: ignore[no-untyped-call]
            for run_id in run_ids
        ]
        rows: dict[type, list[dict[str, Any]]] = {SqlRun: [], SqlTag: [], SqlParam: [], SqlMetric: []}
        for (run, supersedes), run_id, artifact_uri in zip(pending, run_ids, artifact_uris, strict=True):
            tags = _tags(run, supersedes)
            rows[SqlRun].append(
                {"run_uuid": run_id, "name": tags[MLFLOW_RUN_NAME], "source_type": "UNKNOWN", "source_name": "",
                 "entry_point_name": "", "user_id": "unknown", "status": "RUNNING", "start_time": now, "end_time": None,
                 "deleted_time": None, "source_version": "", "lifecycle_stage": "active",
                 "artifact_uri": artifact_uri, "experiment_id": int(self.experiment_id)}
            )  # fmt: skip
            for key, value in tags.items():
                _validate_tag(key, value)  # type: ignore[no-untyped-call]
                rows[SqlTag].append({"run_uuid": run_id, "key": key, "value": value})
            for key, value in flatten_params(run.adapter_spec).items():
                _validate_param(key, value)  # type: ignore[no-untyped-call]
                rows[SqlParam].append({"run_uuid": run_id, "key": key, "value": value})
            for key, mean in sorted(run.metrics.items()):
                _validate_metric(key, float(mean), 0, 0)  # type: ignore[no-untyped-call]
                is_nan, stored = store.sanitize_metric_value(float(mean))
                rows[SqlMetric].append(
                    {"run_uuid": run_id, "key": key, "value": stored, "timestamp": 0, "step": 0, "is_nan": is_nan}
                )
        with store.ManagedSessionMaker() as session:  # into the tables (an ORM bulk insert took a third longer)
            for model in (SqlRun, SqlTag, SqlParam, SqlMetric):
                if rows[model]:
                    session.execute(sa.insert(model.__table__), rows[model])
            if rows[SqlMetric]:
                session.execute(sa.insert(SqlLatestMetric.__table__), rows[SqlMetric])
        with tempfile.TemporaryDirectory() as scratch:
            for (run, _), artifact_uri in zip(pending, artifact_uris, strict=True):
                _store_artifacts(get_artifact_repository(artifact_uri, self.tracking_uri), run, Path(scratch))
        hashes = [
            {"run_uuid": run_id, "key": CONTENT_HASH_TAG, "value": run.content_hash()}
            for (run, _), run_id in zip(pending, run_ids, strict=True)
        ]
        with store.ManagedSessionMaker() as session:
            session.execute(sa.insert(SqlTag.__table__), hashes)
            session.execute(
                sa.update(SqlRun).where(SqlRun.run_uuid.in_(run_ids)).values(status="FINISHED", end_time=now)
            )
        return run_ids


def _tags(run: EvaluationRun, supersedes: str | None) -> dict[str, str]:
    """A record's tags, except its content hash (written last)."""
    tags = {
        **run.tags,
        "governance.suite": run.suite,
        "governance.run_name": run.run_name,
        "helm.model": run.model,
        MLFLOW_RUN_NAME: f"{run.suite}/{run.run_name}"[:250],
    }
    tags.update(run_note(tags))
    if supersedes:
        tags["governance.supersedes"] = supersedes
    return tags


def _store_artifacts(repository: ArtifactRepository, run: EvaluationRun, staging: Path) -> None:
    """The metric name map at the artifact root, the run's HELM files under `helm/`. A local store
    gets them written in place; any other is sent them staged in `staging` (emptied again afterwards:
    removing a folder per run cost more than the copies) with one call."""
    metric_map = json.dumps(run.metric_names, sort_keys=True)  # no indent: that takes json's slow encoder
    if isinstance(repository, LocalArtifactRepository):  # staging, then copying again, took half the record
        root = Path(repository.artifact_dir)
        (root / "helm").mkdir(parents=True, exist_ok=True)
        (root / METRIC_MAP_ARTIFACT).write_text(metric_map, "utf-8")
        for artifact in run.artifacts:
            shutil.copyfile(artifact, root / "helm" / artifact.name)
        return
    (staging / "helm").mkdir(parents=True, exist_ok=True)
    staged = [staging / METRIC_MAP_ARTIFACT, *(staging / "helm" / artifact.name for artifact in run.artifacts)]
    staged[0].write_text(metric_map, "utf-8")
    for artifact, copy in zip(run.artifacts, staged[1:], strict=True):
        shutil.copyfile(artifact, copy)
    repository.log_artifacts(str(staging))  # type: ignore[no-untyped-call]
    for copy in staged:
        copy.unlink()


def run_note(tags: Mapping[str, str]) -> dict[str, str]:
    """MLflow's run description (`mlflow.note.content`, Markdown): a link to the Dagster run that
    recorded it (the Dagster UI at DAGSTER_UI_URL, default http://127.0.0.1:3000), or nothing when
    no Dagster run is named or a description is already given."""
    run_id = tags.get("dagster.run_id")
    if not run_id or NOTE_TAG in tags:
        return {}
    base = os.environ.get("DAGSTER_UI_URL", "http://127.0.0.1:3000").rstrip("/")
    note = f"Recorded by Dagster run [{run_id}]({base}/runs/{run_id})"
    if tags.get("dagster.asset_key"):
        note += f" materialising `{tags['dagster.asset_key']}`"
    if tags.get("dagster.partition"):
        note += f" for partition `{tags['dagster.partition']}`"
    return {NOTE_TAG: note + "."}


def experiment_url(ui_url: str, experiment_id: str) -> str:
    """Link to an experiment's runs list in the MLflow UI (its bare page opens the GenAI overview)."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs"


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
                artifacts=[p for p in (folder / "run_spec.json", folder / "stats.json") if not regular_file_problem(p)],
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
    described = {**tags, **run_note(tags), "mlflow.runName": run_name[:250]}
    run_id = str(client.create_run(recorder.experiment_id, tags=described).info.run_id)
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
