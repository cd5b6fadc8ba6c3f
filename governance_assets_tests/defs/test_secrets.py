"""No secret leaks: secrets planted in every variable and URL the platform reads never reach a log,
Dagster's event log or run storage, metadata, MLflow's store or artifacts, or GOVERNANCE_HOME."""

import os
import traceback
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from governance_assets.definitions import defs
from governance_assets.defs.alerts.sensors import check_failure_alerts
from governance_assets.defs.lineage.sensors import openlineage_events
from governance_assets.defs.monitoring.sensors import traffic_database
from governance_assets.defs.resources import GovernanceState
from governance_assets.lib.core.secrets import MASK, RedactedError, redact, redacting_errors
from governance_assets_tests.conftest import MMLU_ROOT, copy_suite, governance_defs, governance_resources

pytestmark = pytest.mark.integration

SECRETS = {
    "mlflow_password": "mlflowPw-9d1c7e",
    "mlflow_query": "mlflowQuery-41f0aa",
    "mlflow_token": "mlflowToken-5b77e2",
    "lineage_path": "lineagePath-70c2d1",
    "lineage_query": "lineageQuery-1e8f04",
    "lineage_key": "lineageKey-c0ffee",
    "webhook": "hookSecret-b16b00",
    "database_password": "dbPassword-8badf0",
    "helm_key": "helmApiKey-deadbe",
}
RUNS = [dg.AssetKey(["helm", "runs"]), dg.AssetKey(["helm", "run_stats"])]


def _plant(monkeypatch: pytest.MonkeyPatch, dead_port: int, mlflow_uri: bool) -> None:
    """Every variable the platform (or MLflow, or HELM) reads, holding a secret."""
    s = SECRETS
    base = f"http://127.0.0.1:{dead_port}"
    if mlflow_uri:
        monkeypatch.setenv(
            "MLFLOW_TRACKING_URI",
            f"http://alice:{s['mlflow_password']}@127.0.0.1:{dead_port}/mlflow?token={s['mlflow_query']}",
        )
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", s["mlflow_token"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", s["mlflow_password"])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("OPENLINEAGE_URL", f"{base}/{s['lineage_path']}?api_key={s['lineage_query']}")
    monkeypatch.setenv("OPENLINEAGE_API_KEY", s["lineage_key"])
    monkeypatch.setenv("GOVERNANCE_ALERT_WEBHOOK_URL", f"{base}/services/T0/B0/{s['webhook']}")
    monkeypatch.setenv(
        "TRAFFIC_DATABASE_URL", f"postgresql+psycopg2://bob:{s['database_password']}@127.0.0.1:{dead_port}/traffic"
    )


def _files(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from (path for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def _leaks(texts: dict[str, bytes], exempt: Path | None = None) -> list[str]:
    return [
        f"{name} holds {secret}"
        for name, data in texts.items()
        for secret_name, secret in SECRETS.items()
        if secret.encode() in data and not (exempt and name == str(exempt) and secret_name == "helm_key")
    ]


@pytest.fixture
def suite_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three real MMLU runs as a historical suite, one of them truncated (a failing ingestion check)."""
    root = tmp_path / "roots"
    suite = copy_suite(MMLU_ROOT / "runs" / "v1", root, "v1", runs=3)
    bad = sorted(p for p in suite.iterdir() if p.is_dir())[0]
    (bad / "stats.json").write_text('[{"name": ')
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "evaluation_plan: {run_entries: [simple1], models: [simple/model1]}\n"
        "monitoring: {traffic: {database: {url_env: TRAFFIC_DATABASE_URL, table: traffic}}}\n"
        "gates: [{name: exact_match_perfect, kind: threshold, metrics: [exact_match], split: test, min: 0.999}]\n"
        "alerts: {webhook_url_env: GOVERNANCE_ALERT_WEBHOOK_URL, retries: 0}\n"
    )
    monkeypatch.setenv("GOVERNANCE_POLICY", str(policy))
    return root


def test_redact_masks_urls_tokens_and_secret_variables() -> None:
    environ = {
        "OPENLINEAGE_URL": "https://lineage.example/k3y-in-the-path-77/?x=1",
        "MY_SERVICE_TOKEN": "tok-123456",
        "MLFLOW_TRACKING_URI": "https://u:p4ssw0rd@mlflow.example/",
        "HOME": "/root",
    }
    text = (
        "POST https://lineage.example/k3y-in-the-path-77/api/v1/lineage failed; token tok-123456; "
        "GET https://u:p4ssw0rd@mlflow.example/api; other https://x:y@db.example/?sig=abc&n=1; "
        "encoded p4ssw0rd%21; Authorization: Bearer abcdefgh12345678; home /root"
    )
    redacted = redact(text, environ)
    for secret in ("k3y-in-the-path-77", "tok-123456", "p4ssw0rd", "x:y@", "sig=abc", "abcdefgh12345678"):
        assert secret not in redacted, (secret, redacted)
    assert "https://***@db.example/?sig=***&n=1" in redacted
    assert "home /root" in redacted and "mlflow.example/api" in redacted  # ordinary text is kept


def test_redacting_errors_drops_the_secret_and_the_chained_original() -> None:
    class Client:
        uri = "http://a:pw-secret-1@h/"

        def call(self) -> None:
            raise ValueError(f"request to {self.uri} failed")

    client = redacting_errors(Client())
    with pytest.raises(RedactedError) as raised:
        client.call()
    assert "pw-secret-1" not in str(raised.value) and f"http://{MASK}@h/" in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert client.uri == Client.uri  # plain attributes pass through


def test_no_secret_reaches_any_store_when_the_graph_fails(
    tmp_path: Path,
    suite_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    unused_port: int,
) -> None:
    home = tmp_path / "governance"
    prod_env = home / "helm" / "prod_env"
    prod_env.mkdir(parents=True)
    credentials = prod_env / "credentials.conf"
    credentials.write_text(f'openaiApiKey: "{SECRETS["helm_key"]}"\n')
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    errors: dict[str, bytes] = {}
    with dg.instance_for_test(temp_dir=str(dagster_home)) as instance:
        instance.add_dynamic_partitions("helm_suites", ["v1"])
        # 1. MLflow behind a URL with a password, a secret path and a token: unreachable, so
        #    helm/run_stats fails and Dagster stores the step failure.
        _plant(monkeypatch, unused_port, mlflow_uri=True)
        failed = dg.materialize(
            governance_defs(),
            selection=RUNS,
            partition_key="v1",
            instance=instance,
            resources=governance_resources(home, str(suite_root)),
            raise_on_error=False,
        )
        assert not failed.success
        failures = [e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
        failure_text = failures[0].step_failure_data.error.to_string()
        assert "RedactedError" in failure_text and f"127.0.0.1:{unused_port}" in failure_text  # still useful
        # 2. The local MLflow store, the same secrets everywhere else, and a bad run: the graph
        #    runs with a failed check, and lineage and alerts try unreachable endpoints.
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
        ingested = dg.materialize(
            governance_defs(),
            selection=[*RUNS, dg.AssetKey(["lineage", "records"]), dg.AssetKey(["gates", "verdicts"])],
            partition_key="v1",
            instance=instance,
            resources=governance_resources(home, str(suite_root)),
            raise_on_error=False,
        )
        assert any(not e.passed for e in ingested.get_asset_check_evaluations())  # the truncated run
        assert (home / "mlflow" / "mlflow.db").exists()
        context = dg.build_sensor_context(
            instance=instance, resources={"state": GovernanceState(home=str(home))}, definitions=defs()
        )
        outcomes = {}
        for sensor in (openlineage_events, check_failure_alerts, traffic_database):
            try:  # each endpoint is unreachable: an error, or a result that reports it
                outcomes[sensor.name] = repr(sensor(context))
            except Exception as error:
                outcomes[sensor.name] = "".join(traceback.format_exception(error))
            errors[f"{sensor.name} outcome"] = outcomes[sensor.name].encode()
        assert "OpenLineageTransportError" in outcomes["openlineage_events"]
        assert "1 to retry" in outcomes["check_failure_alerts"]  # the failed gate's alert: webhook down
        assert "traffic database unreadable" in outcomes["traffic_database"]
        stores = {str(path): path.read_bytes() for path in _files(home, dagster_home)}
    captured = capfd.readouterr()
    logs = {"stdout": captured.out.encode(), "stderr": captured.err.encode(), "log records": caplog.text.encode()}
    assert any("mlflow.db" in name for name in stores) and any(
        name.endswith(".db") for name in stores if "dagster" in name
    )
    assert _leaks({**stores, **logs, **errors}, exempt=credentials) == []


@pytest.mark.timeout(300)
def test_symlinks_out_of_the_root_and_fifos_are_refused_by_the_ingestion(
    tmp_path: Path, suite_root: Path, instance: dg.DagsterInstance
) -> None:
    home = tmp_path / "governance"
    outside = tmp_path / "outside_stats.json"
    outside.write_text('[{"name": {"name": "outside-the-root-7e11", "split": "test"}, "count": 1, "sum": 1}]')
    runs = sorted(p for p in (suite_root / "runs" / "v1").iterdir() if p.is_dir())
    (runs[1] / "stats.json").unlink()
    (runs[1] / "stats.json").symlink_to(outside)
    (runs[2] / "per_instance_stats.json").unlink()
    os.mkfifo(runs[2] / "per_instance_stats.json")  # no writer: reading it would block forever
    instance.add_dynamic_partitions("helm_suites", ["v1"])
    result = dg.materialize(
        governance_defs(),
        selection=[*RUNS, dg.AssetKey(["helm", "instance_stats"])],
        partition_key="v1",
        instance=instance,
        resources=governance_resources(home, str(suite_root)),
        raise_on_error=False,
    )
    problems = " ".join(
        str(value.value)
        for evaluation in result.get_asset_check_evaluations()
        if not evaluation.passed
        for value in evaluation.metadata.values()
    )
    assert f"{runs[1].name}/stats.json: is a symbolic link" in problems
    assert f"{runs[2].name}/per_instance_stats.json: is a FIFO, not a regular file" in problems
    artifacts = list(_files(home / "mlflow"))
    assert any(path.name == "run_spec.json" for path in artifacts)  # the readable runs were recorded
    assert not [path for path in artifacts if b"outside-the-root-7e11" in path.read_bytes()]
