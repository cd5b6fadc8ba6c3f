"""OpenLineage run events for asset materialisations: built, validated offline, sent to a file or HTTP.

`run_events` turns one materialisation (plain values, no Dagster objects) into a START event and
a COMPLETE or FAIL event, built with openlineage-python's event and facet classes. `validate_event`
checks an event against the OpenLineage JSON schemas vendored in `governance_assets/openlineage_spec/`
(see its README.md; the same versions as the library's classes): the core schema, and each known
facet against its own facet schema. It never touches the network: every `$ref` resolves through a
`referencing.Registry` built from the vendored files. `emit_all` validates every event before
sending any, then hands them in order to a `FileTransport` (append-only JSON Lines, fsynced and
locked, repairing a line cut short by a crash: the library's file transport does neither) or an
`HttpTransport` (openlineage-python's, POSTing to an endpoint such as Marquez's `/api/v1/lineage`,
with errors free of secrets).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.resources
import json
import math
import os
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Protocol

import jsonschema
import referencing
import referencing.jsonschema
import requests
import requests.adapters
import urllib3
from openlineage.client import event_v2
from openlineage.client.generated import (
    dataset_version_dataset,
    documentation_job,
    error_message_run,
    job_type_job,
    parent_run,
    processing_engine_run,
    schema_dataset,
)
from openlineage.client.serde import Serde
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, TokenProvider
from openlineage.client.transport.http import HttpTransport as LibraryHttpTransport

from governance_assets.lib.core.durable_append import append_line
from governance_assets.lib.core.secrets import redact, redact_library_logs

PRODUCER = "https://github.com/governance_assets"
"""URI naming the producer of our events and facets (`producer`, `_producer`).

OpenLineage asks for a URI identifying the code that produced the metadata (typically a git URL,
possibly with a tag). It is an identifier only and is never fetched.
"""

RUN_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, PRODUCER + "/run-id")
"""The UUID5 namespace in which a `run_id` that is not a UUID is hashed to an OpenLineage runId."""

SPEC_PACKAGE = "governance_assets"
SPEC_FOLDER = "openlineage_spec"
"""The vendored schemas: `<SPEC_PACKAGE>/<SPEC_FOLDER>/OpenLineage.json` and `facets/*.json`."""

USER_AGENT = "governance-assets-openlineage/1"

_CORE_FILE = "OpenLineage.json"
_JSON_SCHEMA_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_FACET_KINDS = (  # file-name suffix -> facet container; longest suffixes first
    ("InputDatasetFacet", "input"),
    ("OutputDatasetFacet", "output"),
    ("DatasetFacet", "dataset"),
    ("RunFacet", "run"),
    ("JobFacet", "job"),
)
_MESSAGE_MAX = 300
_BODY_QUOTE_MAX = 200
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class OpenLineageSchemaError(ValueError):
    """An event that does not conform to the OpenLineage spec; lists each violation with its JSON path."""

    def __init__(self, violations: Sequence[tuple[str, str]], *, subject: str = "OpenLineage event") -> None:
        self.violations: tuple[tuple[str, str], ...] = tuple(violations)
        """(JSON path such as `$.run.runId`, what is wrong there), sorted by path."""
        count = len(self.violations)
        lines = "\n".join(f"  {path}: {message}" for path, message in self.violations)
        super().__init__(
            f"{subject} violates the OpenLineage spec ({count} violation{'' if count == 1 else 's'}):\n{lines}"
        )


class OpenLineageTransportError(Exception):
    """A transport finally failed to deliver an event; the message never contains a secret."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        """The last HTTP status received, if any."""
        self.attempts = attempts
        """How many attempts were made."""
        self.retryable = retryable
        """True if the failure looks transient (connection error, timeout, HTTP 429/5xx)."""


# --- the vendored spec ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    registry: referencing.jsonschema.SchemaRegistry
    ids: Mapping[str, str]
    """Vendored file (relative path, e.g. `facets/SchemaDatasetFacet.json`) -> its `$id`."""
    facets: Mapping[str, tuple[str, ...]]
    """Facet container kind (`run`, `job`, `dataset`, `input`, `output`) -> facet schema `$id`s."""


def _json_files(folder: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.is_dir():
            yield from _json_files(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".json"):
            yield f"{prefix}{entry.name}", entry


@functools.cache
def _spec() -> _Spec:
    """Load the vendored schemas once; no network is involved."""
    root = importlib.resources.files(SPEC_PACKAGE) / SPEC_FOLDER
    ids: dict[str, str] = {}
    resources: list[tuple[str, referencing.Resource[Any]]] = []
    facets: dict[str, list[str]] = {kind: [] for _, kind in _FACET_KINDS}
    for relative, entry in _json_files(root):
        contents = json.loads(entry.read_text(encoding="utf-8"))
        schema_id = contents.get("$id") if isinstance(contents, dict) else None
        if not isinstance(schema_id, str) or not schema_id:
            raise RuntimeError(f"vendored OpenLineage schema {relative} has no $id")
        if schema_id in ids.values():
            raise RuntimeError(f"vendored OpenLineage schema {relative} repeats the $id {schema_id}")
        ids[relative] = schema_id
        resources.append(
            (
                schema_id,
                referencing.Resource.from_contents(contents, default_specification=referencing.jsonschema.DRAFT202012),
            )
        )
        if relative.startswith("facets/"):
            stem = relative.removeprefix("facets/").removesuffix(".json")
            for suffix, kind in _FACET_KINDS:
                if stem.endswith(suffix):
                    facets[kind].append(schema_id)
                    break
    if _CORE_FILE not in ids:
        raise RuntimeError(f"the vendored OpenLineage schema {SPEC_FOLDER}/{_CORE_FILE} is missing")
    registry: referencing.jsonschema.SchemaRegistry = referencing.Registry().with_resources(resources)
    return _Spec(registry=registry, ids=ids, facets={kind: tuple(found) for kind, found in facets.items()})


def _schema_id(relative: str) -> str:
    try:
        return _spec().ids[relative]
    except KeyError:
        raise RuntimeError(f"the vendored OpenLineage schema {SPEC_FOLDER}/{relative} is missing") from None


def _event_schema_url(definition: str = "RunEvent") -> str:
    return f"{_schema_id(_CORE_FILE)}#/$defs/{definition}"


# --- format checks (stdlib only: jsonschema's own date-time/uri checks need optional packages) ---

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:", re.ASCII)
_URI_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%")
_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _is_uuid(instance: object) -> bool:
    """The canonical 8-4-4-4-12 hex form (any case)."""
    if not isinstance(instance, str):
        return True
    return str(uuid.UUID(instance)) == instance.lower()


def _is_date_time(instance: object) -> bool:
    """RFC 3339 `date-time`: a date, a time and a mandatory offset (`Z` or ±hh:mm)."""
    if not isinstance(instance, str):
        return True
    match = _RFC3339.fullmatch(instance)
    if match is None:
        return False
    text = instance.upper()
    if match.group(3) == "60":  # a leap second: check the rest of the value
        text = text[: match.start(3)] + "59" + text[match.end(3) :]
    datetime.fromisoformat(text)  # raises ValueError on an impossible date or time
    return True


def _is_uri(instance: object) -> bool:
    """An absolute RFC 3986 URI: a scheme, then only URI characters and valid %-escapes."""
    if not isinstance(instance, str):
        return True
    return (
        _URI_SCHEME.match(instance) is not None
        and all(char in _URI_CHARS for char in instance)
        and _PERCENT_ESCAPE.search(instance) is None
    )


_FORMAT_CHECKER = jsonschema.FormatChecker(formats=())
_FORMAT_CHECKER.checks("uuid", raises=ValueError)(_is_uuid)
_FORMAT_CHECKER.checks("date-time", raises=ValueError)(_is_date_time)
_FORMAT_CHECKER.checks("uri", raises=ValueError)(_is_uri)


@functools.cache
def _validator(ref: str) -> Any:
    """A Draft 2020-12 validator for the schema at `ref`, resolving only within the vendored files."""
    schema = {"$schema": _JSON_SCHEMA_2020_12, "$ref": ref}
    return jsonschema.Draft202012Validator(schema, registry=_spec().registry, format_checker=_FORMAT_CHECKER)


# --- validation -------------------------------------------------------------------------------


def _json_path(parts: Sequence[str | int]) -> str:
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _IDENTIFIER.fullmatch(part):
            path += f".{part}"
        else:
            path += f"[{json.dumps(part)}]"
    return path


def _clip(text: str, limit: int = _MESSAGE_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _violations(error: Any, prefix: Sequence[str | int]) -> Iterator[tuple[str, str]]:
    """(path, message) for a jsonschema error; anyOf/oneOf failures report what failed inside."""
    if error.context:
        for sub_error in error.context:
            yield from _violations(sub_error, prefix)
        return
    parts = [*prefix, *error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        for name in error.validator_value:
            if name not in error.instance:
                yield _json_path([*parts, name]), "is a required property but is missing"
        return
    yield _json_path(parts), _clip(error.message)


def _facet_containers(event: Mapping[str, Any]) -> Iterator[tuple[list[str | int], Any, str]]:
    """(path, facets object, kind) for each facets object of the event."""

    def get(container: Any, key: str) -> Any:
        return container.get(key) if isinstance(container, dict) else None

    yield ["run", "facets"], get(get(event, "run"), "facets"), "run"
    yield ["job", "facets"], get(get(event, "job"), "facets"), "job"
    yield ["dataset", "facets"], get(get(event, "dataset"), "facets"), "dataset"
    for side, kind in (("inputs", "input"), ("outputs", "output")):
        datasets = event.get(side)
        if not isinstance(datasets, list):
            continue
        for index, dataset in enumerate(datasets):
            yield [side, index, "facets"], get(dataset, "facets"), "dataset"
            yield [side, index, f"{kind}Facets"], get(dataset, f"{kind}Facets"), kind


def _event_definition(event: Mapping[str, Any]) -> str:
    """Which of the spec's three event kinds `event` means to be (the spec's `oneOf`)."""
    if "run" in event or "eventType" in event:
        return "RunEvent"
    if "dataset" in event:
        return "DatasetEvent"
    if "job" in event:
        return "JobEvent"
    return "RunEvent"


def validate_event(event: Mapping[str, Any]) -> None:
    """Raise OpenLineageSchemaError unless `event` conforms to the vendored OpenLineage spec.

    Checks the event against the core schema (formats `uuid`, `date-time` and `uri` included),
    and every facet whose key a vendored facet schema defines against that schema. Offline.
    """
    try:
        document = json.loads(json.dumps(dict(event), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise OpenLineageSchemaError([("$", _clip(f"is not strict JSON: {exc}"))]) from None
    spec = _spec()
    found: set[tuple[str, str]] = set()
    for error in _validator(_event_schema_url(_event_definition(document))).iter_errors(document):
        found.update(_violations(error, []))
    if not found:  # the chosen kind fits; the whole spec must still accept it (its `oneOf`)
        for error in _validator(_schema_id(_CORE_FILE)).iter_errors(document):
            found.add((_json_path(error.absolute_path), _clip(error.message)))
    for prefix, facets, kind in _facet_containers(document):
        if not isinstance(facets, dict):
            continue  # absent, or already reported by the core schema
        for facet_schema in spec.facets[kind]:
            for error in _validator(facet_schema).iter_errors(facets):
                found.update(_violations(error, prefix))
    if found:
        raise OpenLineageSchemaError(sorted(found))


# --- building events ----------------------------------------------------------------------------


def _require_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, not {value!r}")
    return value


@dataclass(frozen=True)
class DatasetRef:
    """A dataset read or written by a run, in OpenLineage's (namespace, name) identity."""

    namespace: str
    """E.g. `file:///abs/path/to/GOVERNANCE_HOME/warehouse`."""
    name: str
    """Unique within the namespace, e.g. `helm/run_stats/v1.parquet`."""
    columns: Sequence[tuple[str, str]] = ()
    """(column name, type) pairs, in order; become a SchemaDatasetFacet. A type may be ``""``."""
    version: str | None = None
    """Content hash or Dagster data version; becomes a DatasetVersionDatasetFacet."""

    def __post_init__(self) -> None:
        _require_text(self.namespace, "DatasetRef.namespace")
        _require_text(self.name, "DatasetRef.name")
        if isinstance(self.columns, str | bytes | Mapping) or not isinstance(self.columns, Sequence):
            raise TypeError(
                f"DatasetRef.columns must be a sequence of (name, type) pairs, not {type(self.columns).__name__}"
            )
        columns: list[tuple[str, str]] = []
        for column in self.columns:
            if isinstance(column, str | bytes) or not isinstance(column, Sequence) or len(column) != 2:
                raise ValueError(f"DatasetRef.columns entries must be (name, type) pairs, not {column!r}")
            column_name, column_type = column
            _require_text(column_name, "a DatasetRef column name")
            if not isinstance(column_type, str):
                raise ValueError(f"the type of DatasetRef column {column_name!r} must be a string, not {column_type!r}")
            columns.append((column_name, column_type))
        names = [column_name for column_name, _ in columns]
        if len(set(names)) != len(names):
            raise ValueError(f"DatasetRef {self.name!r} lists a column twice: {names}")
        if self.version is not None:
            _require_text(self.version, "DatasetRef.version")
        object.__setattr__(self, "columns", tuple(columns))

    def facets(self, *, with_version: bool = True) -> dict[str, Any]:
        """The dataset's facets (schema, and version unless `with_version` is False), as
        openlineage-python objects."""
        facets: dict[str, Any] = {}
        if self.columns:
            fields = [
                schema_dataset.SchemaDatasetFacetFields(name=column_name, type=column_type or None)
                for column_name, column_type in self.columns
            ]
            facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER)
        if with_version and self.version is not None:
            facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=self.version, producer=PRODUCER
            )
        return facets

    def to_openlineage(self, *, with_version: bool = True) -> dict[str, Any]:
        """The dataset as an OpenLineage dataset object (plain JSON)."""
        dataset = event_v2.Dataset(self.namespace, self.name, facets=self.facets(with_version=with_version))
        plain: dict[str, Any] = _plain(Serde.to_dict(dataset))
        return plain


def run_uuid(run_id: str) -> str:
    """The OpenLineage runId for `run_id`: itself if a UUID (normalised), else a deterministic UUID5."""
    _require_text(run_id, "run_id")
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        return str(uuid.uuid5(RUN_ID_NAMESPACE, run_id))


def _event_time(value: object, what: str) -> str:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, not naive {value!r}")
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@functools.cache
def _engine_fields() -> tuple[tuple[str, str], ...]:
    """ProcessingEngineRunFacet fields from installed package metadata (dagster is not imported)."""
    try:
        fields = [("name", "Dagster"), ("version", importlib.metadata.version("dagster"))]
    except importlib.metadata.PackageNotFoundError:
        return ()
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        fields.append(("openlineageAdapterVersion", importlib.metadata.version(SPEC_PACKAGE)))
    return tuple(fields)


_OPTIONAL_CONTAINERS = frozenset({"facets", "inputFacets", "outputFacets", "fields"})


def _plain(value: Any) -> Any:
    """A library object as plain JSON (Serde), without the empty facet containers it writes."""
    if isinstance(value, dict):
        return {
            key: _plain(item) for key, item in value.items() if not (key in _OPTIONAL_CONTAINERS and item in ({}, []))
        }
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _strict_json_copy(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    try:
        copied = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be strict JSON (str keys; no NaN/Infinity): {exc}") from None
    assert isinstance(copied, dict)
    return copied


def run_events(
    *,
    namespace: str,
    job_name: str,
    run_id: str,
    inputs: Sequence[DatasetRef],
    outputs: Sequence[DatasetRef],
    started_at: datetime,
    ended_at: datetime,
    succeeded: bool = True,
    error: str | None = None,
    parent: tuple[str, str, str] | None = None,
    job_description: str | None = None,
    extra_run_facets: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """[START, COMPLETE] (or [START, FAIL]) OpenLineage run events for one materialisation.

    `namespace`/`job_name` name the job (e.g. the code location and the asset key). `run_id`
    must identify this one materialisation (e.g. `<dagster run id>/<asset key>`); it becomes
    the runId via `run_uuid`, so the same materialisation always gets the same runId. `parent`
    is (namespace, job name, run id) of the enclosing run (e.g. the Dagster run) -> a
    ParentRunFacet. A FAIL event carries an ErrorMessageRunFacet with `error`. Output versions
    are reported only in COMPLETE (the version the run produced); input versions in both.
    `extra_run_facets` (complete facets, with `_producer` and `_schemaURL`) are added to both
    events' run facets; they may replace `processing_engine` but not `parent` or `errorMessage`.
    Datetimes must be timezone-aware; event times are written in UTC. The events are plain
    JSON-able dicts (deep copies: changing one changes nothing else).
    """
    _require_text(namespace, "namespace")
    _require_text(job_name, "job_name")
    start_time = _event_time(started_at, "started_at")
    end_time = _event_time(ended_at, "ended_at")
    if ended_at < started_at:
        raise ValueError(f"ended_at ({end_time}) is before started_at ({start_time})")
    if succeeded and error is not None:
        raise ValueError("error is given but succeeded is True")
    if error is not None and not isinstance(error, str):
        raise ValueError(f"error must be a string, not {type(error).__name__}")
    for side, datasets in (("inputs", inputs), ("outputs", outputs)):
        for dataset in datasets:
            if not isinstance(dataset, DatasetRef):
                raise TypeError(f"{side} must hold DatasetRef objects, not {type(dataset).__name__}")
    if job_description is not None and not isinstance(job_description, str):
        raise ValueError(f"job_description must be a string, not {type(job_description).__name__}")
    open_lineage_run_id = run_uuid(run_id)

    base_run_facets: dict[str, Any] = {}
    if parent is not None:
        if not isinstance(parent, tuple) or len(parent) != 3:
            raise ValueError("parent must be a (namespace, job name, run id) tuple")
        parent_namespace, parent_job, parent_run_id = parent
        base_run_facets["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=run_uuid(parent_run_id)),
            job=parent_run.Job(
                namespace=_require_text(parent_namespace, "the parent namespace"),
                name=_require_text(parent_job, "the parent job name"),
            ),
            producer=PRODUCER,
        )
    engine = _engine_fields()
    if engine:
        base_run_facets["processing_engine"] = processing_engine_run.ProcessingEngineRunFacet(
            **dict(engine), producer=PRODUCER
        )
    extras = _strict_json_copy(extra_run_facets or {}, "extra_run_facets")
    for key, facet in extras.items():
        if not key or key in {"parent", "errorMessage"}:
            raise ValueError(f"extra_run_facets may not set the {key!r} facet (it is built from the arguments)")
        if not isinstance(facet, dict):
            raise ValueError(f"extra run facet {key!r} must be a JSON object, not {type(facet).__name__}")
    base_run_facets.update(extras)

    job_facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="DAGSTER", jobType="ASSET", producer=PRODUCER
        )
    }
    if job_description:
        job_facets["documentation"] = documentation_job.DocumentationJobFacet(
            description=job_description, contentType="text/markdown", producer=PRODUCER
        )

    def event(state: event_v2.RunState, event_time: str, *, final: bool) -> dict[str, Any]:
        run_facets = dict(base_run_facets)
        if final and not succeeded:
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=error if error else "the run failed (no error message was recorded)",
                programmingLanguage="PYTHON",
                producer=PRODUCER,
            )
        built = event_v2.RunEvent(
            eventType=state,
            eventTime=event_time,
            producer=PRODUCER,
            run=event_v2.Run(runId=open_lineage_run_id, facets=run_facets),
            job=event_v2.Job(namespace=namespace, name=job_name, facets=job_facets),
            inputs=[event_v2.InputDataset(d.namespace, d.name, facets=d.facets()) for d in inputs],
            outputs=[
                event_v2.OutputDataset(d.namespace, d.name, facets=d.facets(with_version=final and succeeded))
                for d in outputs
            ],
        )
        return _strict_json_copy(_plain(Serde.to_dict(built)), "the event")  # a deep copy sharing nothing

    return [
        event(event_v2.RunState.START, start_time, final=False),
        event(event_v2.RunState.COMPLETE if succeeded else event_v2.RunState.FAIL, end_time, final=True),
    ]


# --- transports -------------------------------------------------------------------------------


def _encode(event: Mapping[str, Any]) -> bytes:
    """The event as one line of compact ASCII JSON (no trailing newline)."""
    try:
        return json.dumps(dict(event), allow_nan=False, separators=(",", ":")).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise OpenLineageSchemaError([("$", _clip(f"is not strict JSON: {exc}"))]) from None


class Transport(Protocol):
    """Where events go."""

    def emit(self, event: Mapping[str, Any]) -> None:
        """Deliver one event; raise OpenLineageTransportError on final failure."""
        ...


class FileTransport:
    """An append-only JSON Lines file: one event per line, flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"FileTransport(path={str(self.path)!r})"

    def emit(self, event: Mapping[str, Any]) -> None:
        """Append `event` as one line; after a line cut short by a crash, start on a new line."""
        line = _encode(event) + b"\n"
        try:
            append_line(self.path, line, lock=True)
        except OSError as exc:
            raise OpenLineageTransportError(
                f"could not append an OpenLineage event to {self.path}: {type(exc).__name__}: {exc.strerror or exc}",
                attempts=1,
            ) from exc


redact_library_logs()  # urllib3 and openlineage-python log the endpoint's path and query

MAX_RETRY_AFTER_SECONDS = 60
"""The longest Retry-After honoured; a server asking for more is retried after this long."""
RETRIED_STATUSES = (429, 500, 502, 503, 504)
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _retry_class(sleep: Callable[[float], None]) -> type[urllib3.util.Retry]:
    """urllib3's Retry (its back-off schedule, Retry-After honoured up to MAX_RETRY_AFTER_SECONDS),
    waiting through `sleep` (tests pass one that records instead of sleeping)."""

    class Retry(urllib3.util.Retry):
        def sleep(self, response: Any = None) -> None:
            after = self.get_retry_after(response) if response is not None and self.respect_retry_after_header else None
            wait = min(after, MAX_RETRY_AFTER_SECONDS) if after is not None else self.get_backoff_time()
            if wait > 0:
                sleep(wait)

    return Retry


class HttpTransport:
    """POST each event as JSON to `<url>/<endpoint>` (Marquez: `/api/v1/lineage`) through
    openlineage-python's HttpTransport (requests and urllib3's Retry), never following a redirect.

    Credentials (a bearer token from environment variable `api_key_env`, or `user:password@` in
    the URL, sent as Basic auth) never appear in messages, errors or `repr`: errors name the
    endpoint as `scheme://host:port` only, and a quoted response body is redacted.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key_env: str | None = None,
        endpoint: str = "api/v1/lineage",
        timeout_seconds: float = 10.0,
        retries: int = 3,
        backoff_seconds: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """`retries` counts the attempts after the first, spaced by urllib3's back-off
        (`backoff_seconds * 2**(n-1)` before the n-th retry, none before the first) or the
        server's Retry-After. The token is read from `api_key_env` at each `emit`, so it may be
        rotated; if the variable is then unset or empty, `emit` raises rather than send the event
        unauthenticated."""
        if not isinstance(retries, int) or retries < 0:
            raise ValueError("retries must be an integer >= 0")
        if not (math.isfinite(backoff_seconds) and backoff_seconds >= 0):
            raise ValueError("backoff_seconds must be a finite number >= 0")
        if not (math.isfinite(timeout_seconds) and timeout_seconds > 0):
            raise ValueError("timeout_seconds must be a finite number > 0")
        if api_key_env is not None and not _ENV_NAME.fullmatch(api_key_env):
            raise ValueError(f"api_key_env must be the name of an environment variable, not {api_key_env!r}")
        try:
            parts = urllib.parse.urlsplit(url.strip() if isinstance(url, str) else "")
            port = parts.port
        except ValueError:
            raise ValueError("the OpenLineage URL is not a valid URL") from None
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("the OpenLineage URL must be an http(s) URL with a host")
        if parts.fragment:
            raise ValueError("the OpenLineage URL must not have a #fragment")
        if (parts.username or parts.password) and api_key_env is not None:
            raise ValueError("give credentials either in the OpenLineage URL or through api_key_env, not both")
        self.display_url = f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")
        """What messages call the endpoint: scheme, host and port only."""
        base = urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/", query=""))
        tail = endpoint.strip("/") + (f"?{parts.query}" if parts.query else "")
        self._url, self._endpoint = base, tail
        self._secrets = tuple(
            secret
            for secret in (
                parts.netloc.rpartition("@")[0],
                urllib.parse.unquote(parts.password or ""),
                parts.query,
                *(value for _, value in urllib.parse.parse_qsl(parts.query)),
            )
            if secret
        )
        self.api_key_env = api_key_env
        self.timeout_seconds = float(timeout_seconds)
        self.retries = retries
        self.backoff_seconds = float(backoff_seconds)
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"HttpTransport(url={self.display_url!r}, api_key_env={self.api_key_env!r})"

    def _library_transport(self, token: str | None) -> LibraryHttpTransport:
        retry = _retry_class(self._sleep)(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            other=0,
            redirect=0,
            allowed_methods=["POST"],
            status_forcelist=RETRIED_STATUSES,
            backoff_factor=self.backoff_seconds,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        session = requests.Session()
        session.max_redirects = 0
        session.trust_env = False  # no proxy or netrc from the environment
        config = HttpConfig(
            url=self._url,
            endpoint=self._endpoint,
            timeout=self.timeout_seconds,
            auth=ApiKeyTokenProvider({"api_key": token}) if token else TokenProvider({}),
            adapter=requests.adapters.HTTPAdapter(max_retries=retry),
            session=session,
            custom_headers={"User-Agent": USER_AGENT},
        )
        return LibraryHttpTransport(config)

    def emit(self, event: Mapping[str, Any]) -> None:
        """POST `event`; retry connection errors, timeouts and HTTP 429/5xx; raise OpenLineageTransportError."""
        _encode(event)  # strict JSON, or OpenLineageSchemaError
        secrets = list(self._secrets)
        token = None
        if self.api_key_env is not None:
            token = os.environ.get(self.api_key_env, "").strip()
            if not token:
                raise OpenLineageTransportError(
                    f"environment variable {self.api_key_env} is not set or empty; it must hold the API key "
                    f"for the OpenLineage endpoint {self.display_url}"
                )
            secrets.append(token)
        transport = self._library_transport(token)
        try:
            transport.emit(dict(event))  # type: ignore[arg-type]
        except requests.RequestException as error:
            raise self._failure(error, secrets) from None
        finally:
            transport.close()

    def _failure(self, error: requests.RequestException, secrets: Sequence[str]) -> OpenLineageTransportError:
        """A secret-free error: the endpoint as scheme://host:port, the status or the OS error."""
        response = error.response
        attempts = self.retries + 1
        if response is not None:
            status = response.status_code
            history = getattr(getattr(response.raw, "retries", None), "history", None)
            attempts = len(history) + 1 if history is not None else attempts
            problem = f"HTTP {status} {response.reason or ''}".rstrip()
            if 300 <= status < 400:
                problem += " (redirects are not followed)"
            answer = " ".join(response.text[:512].split())
            for secret in secrets:
                answer = answer.replace(secret, "***")
            if answer:
                problem += f": {_clip(redact(answer), _BODY_QUOTE_MAX)}"
            retryable = status in RETRIED_STATUSES
        else:
            status = None
            found = _ERRNO_TEXT.search(str(error))
            problem = type(error).__name__
            cause = error.args[0] if error.args else None
            reason = getattr(cause, "reason", None)
            if reason is not None:
                problem += f" ({type(reason).__name__})"
            if isinstance(error, requests.Timeout):
                problem += f": no answer within {self.timeout_seconds:g} s"
            elif found:
                problem += f": {found.group(1).strip()}"
            retryable = isinstance(error, requests.ConnectionError | requests.Timeout)
        return OpenLineageTransportError(
            f"could not deliver an OpenLineage event to {self.display_url}: {problem} "
            f"after {attempts} attempt{'' if attempts == 1 else 's'}",
            status=status,
            attempts=attempts,
            retryable=retryable,
        )


def emit_all(events: Sequence[Mapping[str, Any]], transport: Transport) -> None:
    """Validate every event, then emit them in order; nothing is sent if any is invalid.

    `transport` is a FileTransport, an HttpTransport or anything with `emit(event)`. A transport
    failure stops the sequence: the OpenLineageTransportError says how many were already emitted.
    """
    events = list(events)
    total = len(events)
    for index, event in enumerate(events):
        try:
            validate_event(event)
        except OpenLineageSchemaError as exc:
            raise OpenLineageSchemaError(
                exc.violations, subject=f"OpenLineage event {index + 1} of {total} (so none was emitted)"
            ) from None
    for index, event in enumerate(events):
        try:
            transport.emit(event)
        except OpenLineageTransportError as exc:
            if not index:
                raise
            raise OpenLineageTransportError(
                f"{exc} (event {index + 1} of {total}; the {index} before it were emitted)",
                status=exc.status,
                attempts=exc.attempts,
                retryable=exc.retryable,
            ) from exc
