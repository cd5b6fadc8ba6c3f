"""OpenLineage events: built by `run_events`, validated offline, sent by the file and HTTP transports."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from governance_assets.lib.lineage import openlineage
from governance_assets.lib.lineage.openlineage import (
    PRODUCER,
    DatasetRef,
    FileTransport,
    HttpTransport,
    OpenLineageSchemaError,
    OpenLineageTransportError,
    emit_all,
    run_events,
    run_uuid,
    validate_event,
)
from governance_assets_tests.http_server import Answer, ScriptedServer, clear_proxies, serve

SPEC_DIR = Path(openlineage.__file__).resolve().parents[2] / "openlineage_spec"
WAREHOUSE = "file:///srv/governance/warehouse"
DAGSTER_RUN = "0b3c1f4e-1234-4abc-8def-0123456789ab"
STARTED = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
ENDED = STARTED + timedelta(seconds=42)
TOKEN = "tok-S3CRET-value-42"
TOKEN_ENV = "GOVERNANCE_TEST_OPENLINEAGE_TOKEN"


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected retry (back-off of {seconds} s)")


def make_events(**changes: Any) -> list[dict[str, Any]]:
    arguments: dict[str, Any] = {
        "namespace": "governance_assets",
        "job_name": "helm/run_stats",
        "run_id": f"{DAGSTER_RUN}/helm/run_stats",
        "inputs": [DatasetRef(WAREHOUSE, "helm/raw_runs/v1.parquet", [("run", "string")], version="sha256:aa11")],
        "outputs": [
            DatasetRef(
                WAREHOUSE,
                "helm/run_stats/v1.parquet",
                [("run", "string"), ("metric", "string"), ("value", "double")],
                version="sha256:bb22",
            )
        ],
        "started_at": STARTED,
        "ended_at": ENDED,
        "parent": ("governance_assets", "__ASSET_JOB", DAGSTER_RUN),
        "job_description": "Per-run statistics of the HELM suite.",
    }
    arguments.update(changes)
    return run_events(**arguments)


def violations_of(event: Mapping[str, Any]) -> dict[str, str]:
    with pytest.raises(OpenLineageSchemaError) as caught:
        validate_event(event)
    return dict(caught.value.violations)


# --- the vendored spec ------------------------------------------------------------------------


def test_vendored_schemas_are_valid_json_schemas_with_unique_ids() -> None:
    files = sorted(SPEC_DIR.rglob("*.json"))
    assert {f.relative_to(SPEC_DIR).as_posix() for f in files} >= {
        "OpenLineage.json",
        "facets/SchemaDatasetFacet.json",
        "facets/DatasetVersionDatasetFacet.json",
        "facets/ParentRunFacet.json",
        "facets/ProcessingEngineRunFacet.json",
        "facets/DocumentationJobFacet.json",
        "facets/JobTypeJobFacet.json",
        "facets/ErrorMessageRunFacet.json",
    }
    ids = []
    for path in files:
        schema = json.loads(path.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$id"].startswith("https://openlineage.io/spec/")
        ids.append(schema["$id"])
    assert len(set(ids)) == len(ids)
    readme = (SPEC_DIR / "README.md").read_text(encoding="utf-8")
    assert "Apache" in readme
    assert "github.com/OpenLineage/OpenLineage" in readme
    for path in files:
        assert f"`{path.relative_to(SPEC_DIR).as_posix()}`" in readme


def test_schema_urls_come_from_the_vendored_ids() -> None:
    start, _ = make_events()
    core_id = json.loads((SPEC_DIR / "OpenLineage.json").read_text())["$id"]
    assert start["schemaURL"] == f"{core_id}#/$defs/RunEvent"
    parent_id = json.loads((SPEC_DIR / "facets" / "ParentRunFacet.json").read_text())["$id"]
    assert start["run"]["facets"]["parent"]["_schemaURL"] == f"{parent_id}#/$defs/ParentRunFacet"


# --- run_events -----------------------------------------------------------------------------------


def test_start_and_complete_events_validate_and_carry_the_facets() -> None:
    start, complete = make_events()
    for event in (start, complete):
        validate_event(event)
        assert event["producer"] == PRODUCER
        assert event["job"] == {
            "namespace": "governance_assets",
            "name": "helm/run_stats",
            "facets": event["job"]["facets"],
        }
        assert event["job"]["facets"]["jobType"]["integration"] == "DAGSTER"
        assert event["job"]["facets"]["documentation"]["description"] == "Per-run statistics of the HELM suite."
        assert event["run"]["facets"]["parent"]["run"] == {"runId": DAGSTER_RUN}
        assert event["run"]["facets"]["parent"]["job"] == {"namespace": "governance_assets", "name": "__ASSET_JOB"}
        assert "errorMessage" not in event["run"]["facets"]
        (output,) = event["outputs"]
        assert [f["name"] for f in output["facets"]["schema"]["fields"]] == ["run", "metric", "value"]
        assert event["inputs"][0]["facets"]["version"]["datasetVersion"] == "sha256:aa11"
    assert [start["eventType"], complete["eventType"]] == ["START", "COMPLETE"]
    assert start["eventTime"] == "2025-03-04T05:06:07.123456Z"
    assert complete["eventTime"] == "2025-03-04T05:06:49.123456Z"
    assert start["run"]["runId"] == complete["run"]["runId"]
    assert uuid.UUID(start["run"]["runId"]).version == 5
    assert "version" not in start["outputs"][0]["facets"]  # produced by the run: known at its end
    assert complete["outputs"][0]["facets"]["version"]["datasetVersion"] == "sha256:bb22"


def test_start_and_fail_events_validate_with_an_error_message_facet() -> None:
    start, fail = make_events(
        succeeded=False,
        error="ValueError: run_stats has no rows",
        parent=None,
        job_description=None,
        inputs=[DatasetRef(WAREHOUSE, "helm/raw_runs/v1.parquet")],
        outputs=[DatasetRef(WAREHOUSE, "helm/run_stats/v1.parquet", version="sha256:bb22")],
    )
    for event in (start, fail):
        validate_event(event)
        assert "parent" not in event["run"]["facets"]
        assert "documentation" not in event["job"]["facets"]
        assert "facets" not in event["inputs"][0]
    assert [start["eventType"], fail["eventType"]] == ["START", "FAIL"]
    assert "errorMessage" not in start["run"]["facets"]
    facet = fail["run"]["facets"]["errorMessage"]
    assert facet["message"] == "ValueError: run_stats has no rows"
    assert facet["programmingLanguage"] == "PYTHON"
    assert "facets" not in fail["outputs"][0]  # a failed run produced no version


def test_fail_without_an_error_message_still_validates() -> None:
    _, fail = make_events(succeeded=False, inputs=[], outputs=[])
    validate_event(fail)
    assert fail["run"]["facets"]["errorMessage"]["message"]


def test_same_materialisation_gives_the_same_run_id_and_events() -> None:
    assert make_events() == make_events()
    other = make_events(run_id=f"{DAGSTER_RUN}/helm/other_asset")
    assert other[0]["run"]["runId"] != make_events()[0]["run"]["runId"]
    assert run_uuid("helm/run_stats") == run_uuid("helm/run_stats")
    assert run_uuid(DAGSTER_RUN.upper()) == DAGSTER_RUN  # a UUID is kept, in canonical form
    assert make_events(run_id=DAGSTER_RUN)[0]["run"]["runId"] == DAGSTER_RUN


def test_events_are_independent_copies() -> None:
    start, complete = make_events()
    start["run"]["facets"]["parent"]["job"]["name"] = "changed"
    start["job"]["facets"]["jobType"]["jobType"] = "changed"
    assert complete["run"]["facets"]["parent"]["job"]["name"] == "__ASSET_JOB"
    assert complete["job"]["facets"]["jobType"]["jobType"] == "ASSET"


def test_event_times_are_written_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    start, complete = make_events(started_at=datetime(2025, 1, 1, 12, tzinfo=plus_two), ended_at=ENDED)
    assert start["eventTime"] == "2025-01-01T10:00:00.000000Z"
    validate_event(start)
    validate_event(complete)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"started_at": datetime(2025, 3, 4, 5, 6, 7)}, "started_at must be timezone-aware"),  # noqa: DTZ001
        ({"ended_at": datetime(2025, 3, 4, 5, 6, 7)}, "ended_at must be timezone-aware"),  # noqa: DTZ001
        ({"ended_at": STARTED - timedelta(seconds=1)}, "before started_at"),
        ({"error": "boom"}, "succeeded is True"),
        ({"job_name": " "}, "job_name"),
        ({"run_id": ""}, "run_id"),
        ({"parent": ("governance_assets", "", DAGSTER_RUN)}, "parent job name"),
        ({"extra_run_facets": {"parent": {}}}, "'parent'"),
        ({"extra_run_facets": {"custom": float("nan")}}, "strict JSON"),
        ({"extra_run_facets": {"custom": "text"}}, "JSON object"),
    ],
)
def test_bad_arguments_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_events(**changes)


def test_extra_run_facets_are_added_and_validated() -> None:
    nominal = {
        "_producer": PRODUCER,
        "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/NominalTimeRunFacet.json#/$defs/NominalTimeRunFacet",
        "nominalStartTime": "2025-03-04T00:00:00Z",
    }
    start, complete = make_events(extra_run_facets={"nominalTime": nominal})
    assert start["run"]["facets"]["nominalTime"] == nominal == complete["run"]["facets"]["nominalTime"]
    validate_event(start)
    start, _ = make_events(extra_run_facets={"custom": {"_producer": PRODUCER}})
    assert violations_of(start) == {"$.run.facets.custom._schemaURL": "is a required property but is missing"}


def test_dataset_ref_normalises_and_checks_its_fields() -> None:
    ref = DatasetRef(WAREHOUSE, "a.parquet", [["x", "int64"], ("y", "")])  # type: ignore[list-item]
    assert ref.columns == (("x", "int64"), ("y", ""))
    assert hash(ref) == hash(DatasetRef(WAREHOUSE, "a.parquet", (("x", "int64"), ("y", ""))))
    assert ref.to_openlineage()["facets"]["schema"]["fields"] == [{"name": "x", "type": "int64"}, {"name": "y"}]
    with pytest.raises(ValueError, match="namespace"):
        DatasetRef("", "a.parquet")
    with pytest.raises(ValueError, match="twice"):
        DatasetRef(WAREHOUSE, "a.parquet", [("x", "int64"), ("x", "double")])
    with pytest.raises(TypeError, match="pairs"):
        DatasetRef(WAREHOUSE, "a.parquet", {"x": "int64"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="version"):
        DatasetRef(WAREHOUSE, "a.parquet", version="")


# --- validate_event -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("breakage", "path"),
    [
        (lambda e: e.pop("eventTime"), "$.eventTime"),
        (lambda e: e.update(eventType="FINISHED"), "$.eventType"),
        (lambda e: e["run"].update(runId="helm/run_stats"), "$.run.runId"),
        (lambda e: e.update(eventTime="2025-03-04T05:06:07"), "$.eventTime"),  # no offset
        (lambda e: e.update(producer="not a uri"), "$.producer"),
        (lambda e: e["job"].pop("name"), "$.job.name"),
        (
            lambda e: e["outputs"][0]["facets"]["schema"]["fields"][1].pop("name"),
            "$.outputs[0].facets.schema.fields[1].name",
        ),
        (
            lambda e: e["inputs"][0]["facets"]["version"].pop("datasetVersion"),
            "$.inputs[0].facets.version.datasetVersion",
        ),
        (lambda e: e["run"]["facets"]["parent"]["run"].update(runId="x"), "$.run.facets.parent.run.runId"),
        (lambda e: e["job"]["facets"]["jobType"].pop("integration"), "$.job.facets.jobType.integration"),
        (
            lambda e: e["run"]["facets"]["processing_engine"].pop("_producer"),
            "$.run.facets.processing_engine._producer",
        ),
    ],
)
def test_a_broken_event_names_the_path(breakage: Any, path: str) -> None:
    event = make_events()[1]
    breakage(event)
    found = violations_of(event)
    assert path in found, found
    with pytest.raises(OpenLineageSchemaError, match=path.replace("$", r"\$").replace("[", r"\[")):
        validate_event(event)


def test_every_violation_is_listed() -> None:
    event = make_events()[0]
    del event["eventTime"]
    event["eventType"] = "DONE"
    event["run"]["runId"] = "not-a-uuid"
    found = violations_of(event)
    assert set(found) == {"$.eventTime", "$.eventType", "$.run.runId"}
    assert "'DONE' is not one of" in found["$.eventType"]
    assert "uuid" in found["$.run.runId"]
    with pytest.raises(OpenLineageSchemaError, match=r"3 violations") as caught:
        validate_event(event)
    assert isinstance(caught.value, ValueError)


def test_non_json_values_are_violations() -> None:
    event = make_events()[0]
    event["run"]["facets"]["parent"]["when"] = STARTED
    assert "$" in violations_of(event)


def test_dataset_and_job_events_are_also_checked() -> None:
    core = json.loads((SPEC_DIR / "OpenLineage.json").read_text())["$id"]
    base = {"eventTime": "2025-03-04T05:06:07Z", "producer": PRODUCER}
    validate_event({**base, "schemaURL": f"{core}#/$defs/DatasetEvent", "dataset": {"namespace": "n", "name": "d"}})
    validate_event({**base, "schemaURL": f"{core}#/$defs/JobEvent", "job": {"namespace": "n", "name": "j"}})
    found = violations_of({**base, "schemaURL": f"{core}#/$defs/JobEvent", "job": {"namespace": "n"}})
    assert "$.job.name" in found


def test_validation_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the validator tried to use the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    openlineage._spec.cache_clear()  # load the schemas and build the validators under the ban
    openlineage._validator.cache_clear()
    for event in [*make_events(), *make_events(succeeded=False, error="boom")]:
        validate_event(event)
        event["run"]["facets"]["parent"]["_schemaURL"] = "https://openlineage.io/spec/facets/9-9-9/Nope.json"
        event["run"]["runId"] = "x"
        assert "$.run.runId" in violations_of(event)


def test_the_module_does_not_import_dagster() -> None:
    code = "import sys, governance_assets.lib.lineage.openlineage; assert 'dagster' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- FileTransport --------------------------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]


def test_file_transport_writes_one_valid_event_per_line(tmp_path: Path) -> None:
    path = tmp_path / "lineage" / "nested" / "openlineage.jsonl"
    events = [*make_events(), *make_events(run_id="other", succeeded=False, error="boom")]
    emit_all(events, FileTransport(path))
    records = read_lines(path)
    assert records == events
    for record in records:
        validate_event(record)
    assert path.read_bytes().endswith(b"}\n")
    assert path.read_bytes().count(b"\n") == 4


def test_file_transport_starts_a_new_line_after_a_truncated_one(tmp_path: Path) -> None:
    path = tmp_path / "openlineage.jsonl"
    transport = FileTransport(path)
    start, complete = make_events()
    transport.emit(start)
    with path.open("ab") as file:
        file.write(json.dumps(complete).encode()[:57])  # a crash mid-write
    transport.emit(complete)
    lines = path.read_text(encoding="ascii").splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0]) == start
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[1])
    assert json.loads(lines[2]) == complete
    validate_event(json.loads(lines[2]))


def test_file_transport_reports_an_unwritable_path(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(OpenLineageTransportError, match="could not append"):
        FileTransport(tmp_path / "taken").emit(make_events()[0])


# --- HttpTransport --------------------------------------------------------------------------------


@dataclass
class FakeLineageServer(ScriptedServer):
    """The local server, answering 201 by default."""

    default: Answer = (201, {}, b"")


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_proxies(monkeypatch)
    monkeypatch.delenv(TOKEN_ENV, raising=False)


@pytest.fixture
def server() -> Iterator[FakeLineageServer]:
    with serve(FakeLineageServer) as state:
        yield state


def test_http_transport_posts_events_to_the_lineage_endpoint(
    server: FakeLineageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    events = make_events()
    emit_all(events, HttpTransport(server.base_url, api_key_env=TOKEN_ENV, sleep=no_sleep))
    assert [r.path for r in server.requests] == ["/api/v1/lineage", "/api/v1/lineage"]
    for request in server.requests:
        assert request.headers["content-type"] == "application/json"
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert server.events() == events


def test_http_transport_without_a_token_sends_no_authorization(server: FakeLineageServer) -> None:
    HttpTransport(server.base_url + "/marquez/", sleep=no_sleep).emit(make_events()[0])
    (request,) = server.requests
    assert request.path == "/marquez/api/v1/lineage"
    assert "authorization" not in request.headers


def test_http_transport_refuses_to_send_when_the_token_variable_is_unset(server: FakeLineageServer) -> None:
    transport = HttpTransport(server.base_url, api_key_env=TOKEN_ENV, sleep=no_sleep)
    with pytest.raises(OpenLineageTransportError, match=TOKEN_ENV):
        transport.emit(make_events()[0])
    assert server.requests == []


def test_http_transport_retries_503_then_succeeds(server: FakeLineageServer) -> None:
    server.script = [(503, {}, b"busy"), (503, {}, b"busy")]
    sleeps: list[float] = []
    HttpTransport(server.base_url, backoff_seconds=0.5, sleep=sleeps.append).emit(make_events()[0])
    assert sleeps == [1.0]  # urllib3's schedule: no wait before the first retry, then 0.5 * 2**1
    assert len(server.requests) == 3
    assert server.events()[0] == server.events()[2]


def test_http_transport_honours_retry_after_on_429(server: FakeLineageServer) -> None:
    server.script = [(429, {"Retry-After": "7"}, b"")]
    sleeps: list[float] = []
    HttpTransport(server.base_url, backoff_seconds=0.5, sleep=sleeps.append).emit(make_events()[0])
    assert sleeps == [7.0]


def test_http_transport_does_not_retry_400_and_never_reveals_the_token(
    server: FakeLineageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    server.script = [(400, {"Content-Type": "application/json"}, f'{{"message":"bad event from {TOKEN}"}}'.encode())]
    transport = HttpTransport(server.base_url, api_key_env=TOKEN_ENV, sleep=no_sleep)
    with pytest.raises(OpenLineageTransportError) as caught:
        transport.emit(make_events()[0])
    error = caught.value
    assert len(server.requests) == 1
    assert (error.status, error.attempts, error.retryable) == (400, 1, False)
    assert "HTTP 400" in str(error)
    assert "1 attempt" in str(error)
    assert "bad event from ***" in str(error)
    assert TOKEN not in str(error)
    assert TOKEN not in repr(transport)


def test_http_transport_gives_up_after_its_retries(server: FakeLineageServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    server.default = (503, {}, b"down")
    sleeps: list[float] = []
    transport = HttpTransport(server.base_url + "/p?key=query-secret", api_key_env=TOKEN_ENV, sleep=sleeps.append)
    with pytest.raises(OpenLineageTransportError) as caught:
        transport.emit(make_events()[0])
    assert len(server.requests) == 4
    assert server.requests[0].path == "/p/api/v1/lineage?key=query-secret"
    assert sleeps == [2.0, 4.0]  # urllib3's schedule: none, 1.0 * 2**1, 1.0 * 2**2
    message = str(caught.value)
    assert "HTTP 503" in message
    assert "4 attempts" in message
    assert caught.value.retryable
    assert TOKEN not in message
    assert "query-secret" not in message
    assert "/p" not in message


def test_http_transport_retries_connection_errors(unused_port: int) -> None:
    sleeps: list[float] = []
    transport = HttpTransport(f"http://127.0.0.1:{unused_port}", retries=2, sleep=sleeps.append)
    with pytest.raises(OpenLineageTransportError, match=r"Connection refused after 3 attempts") as caught:
        transport.emit(make_events()[0])
    assert caught.value.status is None and caught.value.retryable
    assert sleeps == [2.0]


def test_http_transport_retries_a_timeout(server: FakeLineageServer) -> None:
    server.delays = [0.6]
    sleeps: list[float] = []
    HttpTransport(server.base_url, timeout_seconds=0.2, sleep=sleeps.append).emit(make_events()[0])
    assert sleeps == []  # the first retry follows at once
    assert len(server.requests) == 2


def test_http_transport_sends_url_credentials_as_basic_auth_and_hides_them(server: FakeLineageServer) -> None:
    url = server.base_url.replace("http://", "http://lineage:pa55word-xyz@")
    server.script = [(401, {}, b"who is pa55word-xyz?")]
    transport = HttpTransport(url, sleep=no_sleep)
    with pytest.raises(OpenLineageTransportError) as caught:
        transport.emit(make_events()[0])
    assert server.requests[0].headers["authorization"].startswith("Basic ")
    for text in (str(caught.value), repr(transport)):
        assert "pa55word-xyz" not in text
        assert "lineage:" not in text
    with pytest.raises(ValueError, match="not both"):
        HttpTransport(url, api_key_env=TOKEN_ENV)


def test_http_transport_does_not_follow_redirects(server: FakeLineageServer) -> None:
    server.script = [(302, {"Location": server.base_url + "/elsewhere"}, b"")]
    with pytest.raises(OpenLineageTransportError, match="HTTP 302"):
        HttpTransport(server.base_url, sleep=no_sleep).emit(make_events()[0])
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("ftp://example.org", {}),
        ("http://", {}),
        ("http://example.org:99999", {}),
        ("http://example.org", {"retries": -1}),
        ("http://example.org", {"timeout_seconds": 0}),
        ("http://example.org", {"api_key_env": "NOT A NAME"}),
    ],
)
def test_http_transport_rejects_bad_configuration(url: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        HttpTransport(url, **kwargs)


# --- emit_all -------------------------------------------------------------------------------------


@dataclass
class RecordingTransport:
    sent: list[Mapping[str, Any]] = field(default_factory=list)
    fail_at: int | None = None

    def emit(self, event: Mapping[str, Any]) -> None:
        if self.fail_at is not None and len(self.sent) == self.fail_at:
            raise OpenLineageTransportError("down", attempts=1, retryable=True)
        self.sent.append(event)


def test_emit_all_refuses_an_invalid_event_before_sending_anything(server: FakeLineageServer) -> None:
    start, complete = make_events()
    del complete["eventTime"]
    recorder = RecordingTransport()
    with pytest.raises(OpenLineageSchemaError, match=r"event 2 of 2.*\n.*\$\.eventTime"):
        emit_all([start, complete], recorder)
    assert recorder.sent == []
    with pytest.raises(OpenLineageSchemaError):
        emit_all([start, complete], HttpTransport(server.base_url, sleep=no_sleep))
    assert server.requests == []


def test_emit_all_says_how_many_were_emitted_before_a_failure() -> None:
    events = make_events()
    recorder = RecordingTransport(fail_at=1)
    with pytest.raises(OpenLineageTransportError, match=r"event 2 of 2; the 1 before it were emitted") as caught:
        emit_all(events, recorder)
    assert caught.value.retryable
    assert recorder.sent == events[:1]
