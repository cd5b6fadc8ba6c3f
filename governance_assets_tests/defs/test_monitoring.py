"""Monitoring in Dagster: traffic through the sensor (files and a database table), drift flagged on
the injected day and not before, trends, evaluation drift between suites, alerts."""

import json
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest
from dagster._core.scheduler.instigation import InstigatorTick, InstigatorType, TickStatus
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.sensor import execute_sensor_iteration

from governance_assets.cli import run_traffic_demo
from governance_assets.defs.alerts.sensors import check_failure_alerts
from governance_assets.defs.monitoring.assets import EVAL_DRIFT_KEY, REFERENCE_KEY
from governance_assets.defs.monitoring.sensors import traffic_database, traffic_landing
from governance_assets.defs.monitoring.staging import TrafficSourceConfig
from governance_assets.defs.partitions import HELM_SUITES
from governance_assets.defs.resources import GovernanceState
from governance_assets.demo_sensors import WORKSPACE, add_requested_partitions, run_requests, stored_cursor
from governance_assets.lib.core.warehouse import Warehouse
from governance_assets.lib.monitoring.traffic import TRAFFIC_KEY
from governance_assets.lib.monitoring.traffic_generator import generate_traffic, write_landing_files
from governance_assets_tests.conftest import MMLU_ROOT, copy_suite, governance_resources

FIRST_DAY = datetime.now(UTC).date() - timedelta(days=14)
DRIFT_DAY = FIRST_DAY + timedelta(days=10)


def _policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, monitoring: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(f"evaluation_plan: {{run_entries: [simple1], models: [simple/model1]}}\nmonitoring: {monitoring}\n")
    monkeypatch.setenv("GOVERNANCE_POLICY", str(path))


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    result = traffic_landing(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources={"state": GovernanceState()})
    )
    assert isinstance(result, dg.SensorResult)
    add_requested_partitions(instance, result)
    return result


def _checks(instance: dg.DagsterInstance, asset: tuple[str, ...], name: str) -> dict[str, bool]:
    """The latest evaluation of a check per partition: passed or not."""
    key = dg.AssetCheckKey(dg.AssetKey(list(asset)), name)
    latest: dict[str, bool] = {}
    for record in reversed(instance.event_log_storage.get_asset_check_execution_history(key, limit=1000)):
        if record.evaluation is not None and record.partition is not None:
            latest[record.partition] = record.evaluation.passed
    return latest


def test_drift_is_flagged_on_the_injected_day_and_not_before(
    instance: dg.DagsterInstance, offline_environment: Path
) -> None:
    """The demo's monitoring path, end to end on a real instance: sensor, traffic, reference,
    drift, trends; then the alert sensor sends each failed drift check once."""
    assert run_traffic_demo(instance, offline_environment, FIRST_DAY, rows_per_day=600)
    # Every run key the sensor requests from scratch is a run the demo made as the daemon would.
    requested = [r.run_key for tick in _ticks_from_scratch(instance) for r in tick.run_requests]
    assert len(requested) == 2 * 14 and _launched_by_the_daemon(instance, requested) == []
    warehouse = Warehouse(offline_environment / "warehouse")
    days = [FIRST_DAY + timedelta(days=i) for i in range(14)]
    for day in days:
        table = warehouse.read(TRAFFIC_KEY, day.isoformat())
        assert table is not None and table.num_rows == 600
    assert warehouse.read_annotation(REFERENCE_KEY, None, "source").startswith(f"traffic {FIRST_DAY}")
    shares = {
        day: warehouse.read_annotation(("monitoring", "traffic_drift"), day.isoformat(), "drifted_share")
        for day in days
    }
    assert all(shares[day] < 0.5 for day in days if day < DRIFT_DAY), shares
    assert all(shares[day] >= 0.5 for day in days if day >= DRIFT_DAY), shares
    checks = _checks(instance, ("monitoring", "traffic_drift"), "traffic_drift_share")
    assert checks == {day.isoformat(): day < DRIFT_DAY for day in days}

    trends = warehouse.read(("monitoring", "trends"))
    assert trends is not None
    frame = trends.to_pandas()
    for kpi in ("latency_ms_mean", "refusal_rate"):
        series = frame[frame["series"] == f"kpi:{kpi}"]
        assert list(series["label"]) == [day.isoformat() for day in days]
        assert list(series.loc[series["change_point"], "label"])[:1] == [DRIFT_DAY.isoformat()], kpi
        assert not series[series["label"] < DRIFT_DAY.isoformat()]["flagged"].any(), kpi
    drift_share = frame[frame["series"] == "drift:drifted_share"]
    assert list(drift_share["label"]) == [day.isoformat() for day in days]
    assert list(drift_share["value"]) == [shares[day] for day in days]
    # Found: only a folder path and one plot. Now each flagged series' plot is in the metadata, and
    # each series' latest value is numeric metadata.
    event = instance.get_latest_materialization_event(dg.AssetKey(["monitoring", "trends"]))
    assert event is not None and event.asset_materialization is not None
    metadata = event.asset_materialization.metadata
    flagged = sorted(frame.loc[frame["flagged"], "series"].unique())
    assert flagged and sorted(k.removeprefix("plot/") for k in metadata if k.startswith("plot/")) == flagged
    assert all("data:image/png;base64," in str(metadata[f"plot/{name}"].value) for name in flagged)
    latency = frame[frame["series"] == "kpi:latency_ms_mean"]["value"].iloc[-1]
    assert metadata["latest/kpi:latency_ms_mean"] == dg.MetadataValue.float(float(latency))
    features = warehouse.read(("monitoring", "traffic_features"), DRIFT_DAY.isoformat())
    assert features is not None and features.num_rows == 600  # computed once, by monitoring/traffic
    for key, partition in [
        (TRAFFIC_KEY, DRIFT_DAY.isoformat()),
        (REFERENCE_KEY, None),
        (("monitoring", "traffic_drift"), DRIFT_DAY.isoformat()),
        (("monitoring", "trends"), None),
    ]:
        _assert_table_metadata(instance, key, partition, warehouse.path(key, partition))

    context = dg.build_sensor_context(instance=instance, resources={"state": GovernanceState()})
    check_failure_alerts(context)
    ledger = offline_environment / "alerts" / "alerts.jsonl"
    alerts = [json.loads(line) for line in ledger.read_text().splitlines()]
    drift_alerts = sorted(a["details"]["partition"] for a in alerts if "traffic_drift_share" in a["key"])
    assert drift_alerts == [day.isoformat() for day in days if day >= DRIFT_DAY]
    check_failure_alerts(dg.build_sensor_context(instance=instance, resources={"state": GovernanceState()}))
    assert len(ledger.read_text().splitlines()) == len(alerts)  # nothing sent twice

    mlflow.set_tracking_uri(f"sqlite:///{offline_environment / 'mlflow' / 'mlflow.db'}")
    logged = mlflow.search_runs(experiment_names=["governance"], output_format="list")
    names = {r.info.run_name for r in logged}
    assert {f"traffic-drift/{day}" for day in days} <= names and "trends" in names

    # Found: the demo never stored the sensor's cursor, so the daemon of `make dev` started from
    # none and launched monitor_traffic for all 14 days again, logging each day's drift twice. Now
    # Dagster's own sensor daemon, run over the code location, finds the cursor and launches nothing.
    cursor = stored_cursor(instance, "traffic_landing")
    assert cursor is not None and len(json.loads(cursor)["staged"]) == 14
    runs = instance.get_runs_count()
    ticks = _daemon_iteration(instance)
    landing = ticks["traffic_landing"]
    assert landing.status == TickStatus.SKIPPED and landing.skip_reason == "no new traffic", landing
    assert landing.run_keys == [] and landing.cursor == cursor
    assert all(tick.status != TickStatus.FAILURE for tick in ticks.values()), ticks
    assert instance.get_runs_count() == runs and stored_cursor(instance, "traffic_landing") == cursor
    assert len(mlflow.search_runs(experiment_names=["governance"], output_format="list")) == len(logged)


def test_sensor_only_requests_and_the_staging_runs_stage_each_source_once(
    instance: dg.DagsterInstance, offline_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found: the sensor parsed and staged whole files inside its tick. Now a tick reads no file: it
    requests a stage_traffic run per new file, and the days of each staged source once it is staged."""
    _policy(tmp_path, monkeypatch, "{traffic: {max_sources_per_tick: 2}}")
    landing = offline_environment / "landing" / "traffic"
    staging = offline_environment / "monitoring" / "staging" / "traffic"
    landing.mkdir(parents=True)
    frame = generate_traffic(FIRST_DAY, 3, 30, drift_day=None, seed=2)
    days = frame["timestamp"].dt.strftime("%Y-%m-%d")
    for fmt, day in zip(("jsonl", "csv", "parquet"), sorted(days.unique()), strict=True):
        write_landing_files(frame[days == day], landing, fmt)
    (landing / "zz-broken.csv").write_text("timestamp,model\n2026-01-01T00:00:00Z,m\n")
    (landing / ".partial.jsonl").write_text("{")  # still being written: ignored

    first = _tick(instance, None)
    assert not staging.exists()  # the tick parsed nothing
    assert [r.job_name for r in first.run_requests] == ["stage_traffic"] * 2  # two sources a tick
    second = _tick(instance, first.cursor)
    assert [r.job_name for r in second.run_requests] == ["stage_traffic"] * 2
    assert _tick(instance, second.cursor).skip_reason == dg.SkipReason("no new traffic")
    stage_keys = [r.run_key for r in [*first.run_requests, *second.run_requests]]
    assert [r.run_key for tick in _ticks_from_scratch(instance) for r in tick.run_requests] == stage_keys

    definitions = _definitions()
    assert run_requests(instance, definitions, "traffic_landing", [*first.run_requests, *second.run_requests[:1]])
    staged = _tick(instance, second.cursor)
    requested_days = [(r.job_name, r.partition_key) for r in staged.run_requests]
    assert sorted(requested_days) == [("monitor_traffic", day) for day in sorted(days.unique())]
    # Found: daily partitions started on 2026-01-01 whatever the data (338 partitions, 324 empty).
    # Now the partitions are the days that landed, added by the sensor as they land.
    assert sorted(instance.get_dynamic_partitions("traffic_days")) == sorted(days.unique())
    assert _tick(instance, staged.cursor).skip_reason == dg.SkipReason("no new traffic")
    assert run_requests(instance, definitions, "traffic_landing", second.run_requests[1:])  # the broken file: rejected
    after_rejection = _tick(instance, staged.cursor)
    [rejected] = after_rejection.asset_events
    assert "zz-broken.csv" in rejected.metadata["source"].value
    assert "missing required fields" in rejected.metadata["error"].value

    restarted = [r.run_key for tick in _ticks_from_scratch(instance) for r in tick.run_requests]
    day_keys = [r.run_key for r in staged.run_requests]
    assert sorted(restarted) == sorted(stage_keys + day_keys)  # the same run keys: Dagster launches nothing twice
    touched = landing / sorted(p.name for p in landing.glob("traffic-*"))[0]
    touched.touch()
    touched_tick = _tick(instance, after_rejection.cursor)
    [again] = touched_tick.run_requests
    assert again.job_name == "stage_traffic" and again.run_key not in stage_keys
    assert run_requests(instance, definitions, "traffic_landing", [again])
    same_content = _tick(instance, touched_tick.cursor)  # the same bytes: the same source, no day requested
    assert same_content.skip_reason == dg.SkipReason("no new traffic")

    traffic = [a for a in _monitoring_assets() if a.key == dg.AssetKey(list(TRAFFIC_KEY))]
    for day in sorted(days.unique()):
        result = dg.materialize(traffic, partition_key=day, instance=instance, resources={"state": GovernanceState()})
        [event] = result.get_asset_materialization_events()
        assert event.materialization.metadata["rows"].value == 30


def _assert_table_metadata(
    instance: dg.DagsterInstance, key: tuple[str, ...], partition: str | None, path: Path
) -> None:
    """The table's columns and row count in the UI's metadata, as pandas reads them from its file."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey(list(key)), asset_partitions=None if partition is None else [partition]),
        limit=1,
        ascending=False,
    ).records
    assert records and records[0].asset_materialization is not None, key
    metadata = records[0].asset_materialization.metadata
    frame = pd.read_parquet(path)
    schema = metadata["dagster/column_schema"].value
    assert isinstance(schema, dg.TableSchema), key
    assert [c.name for c in schema.columns] == list(frame.columns), key
    assert metadata["dagster/row_count"].value == len(frame) > 0, key


def _daemon_iteration(instance: dg.DagsterInstance) -> dict[str, InstigatorTick]:
    """One iteration of Dagster's sensor daemon over the code location `workspace.yaml` names (loaded
    in a code server, as `make dev` loads it); the tick it made for each sensor, by name."""
    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(WORKSPACE)])) as workspace:
        list(execute_sensor_iteration(workspace, logging.getLogger("sensor daemon"), None, None))
    ticks = {}
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        [latest, *_] = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1) or [None]
        if latest is not None:
            ticks[state.instigator_name] = latest
    return ticks


def _ticks_from_scratch(instance: dg.DagsterInstance) -> list[dg.SensorResult]:
    ticks = [_tick(instance, None)]
    while ticks[-1].run_requests:
        ticks.append(_tick(instance, ticks[-1].cursor))
    return ticks


def _launched_by_the_daemon(instance: dg.DagsterInstance, run_keys: list[str | None]) -> list[str | None]:
    """The run keys the sensor daemon would launch: those without a run of this sensor (the
    daemon's own test: a run tagged with the run key and the sensor's name)."""
    launched = []
    for key in run_keys:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": str(key)}))
        if key is None or not any(r.tags.get("dagster/sensor_name") == "traffic_landing" for r in runs):
            launched.append(key)
    return launched


def _definitions() -> dg.Definitions:
    from governance_assets.definitions import defs

    return defs()


def _monitoring_assets() -> list[dg.AssetsDefinition]:
    return [
        a
        for a in _definitions().assets or []
        if isinstance(a, dg.AssetsDefinition) and a.group_names_by_key.get(a.key) == "monitoring"
    ]


def _database_tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    result = traffic_database(
        dg.build_sensor_context(instance=instance, cursor=cursor, resources={"state": GovernanceState()})
    )
    assert isinstance(result, dg.SensorResult)
    return result


def _serving_database(path: Path, frame: pd.DataFrame) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute(
            "create table if not exists requests (id integer primary key, timestamp text, model text, "
            "request_id text, prompt text, completion text, latency_ms real, prompt_tokens integer, "
            "completion_tokens integer, feedback real, metadata text)"
        )
        frame.to_sql("requests", connection, if_exists="append", index=False)


def test_database_rows_are_staged_once_by_runs(
    instance: dg.DagsterInstance, offline_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "serving.db"
    monkeypatch.setenv("TRAFFIC_DATABASE_URL", f"sqlite:///{database}")
    _policy(tmp_path, monkeypatch, "{traffic: {database: {url_env: TRAFFIC_DATABASE_URL, table: requests}}}")
    frame = generate_traffic(FIRST_DAY, 2, 25, drift_day=None, seed=4)
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    _serving_database(database, frame.iloc[:30])
    first = _database_tick(instance, None)
    assert [r.run_key for r in first.run_requests] == ["stage:db-requests-1-30"] and first.cursor == "30"
    assert _database_tick(instance, first.cursor).run_requests == []
    definitions = _definitions()
    assert run_requests(instance, definitions, "traffic_database", list(first.run_requests))
    days = _tick(instance, None)
    assert {r.run_key for r in days.run_requests} == {
        f"traffic:db-requests-1-30:{FIRST_DAY}",
        f"traffic:db-requests-1-30:{FIRST_DAY + timedelta(days=1)}",
    }
    _serving_database(database, frame.iloc[30:])
    later = _database_tick(instance, first.cursor)
    assert [r.run_key for r in later.run_requests] == ["stage:db-requests-31-50"] and later.cursor == "50"
    assert run_requests(instance, definitions, "traffic_database", list(later.run_requests))
    more = _tick(instance, days.cursor)
    assert [r.run_key for r in more.run_requests] == [f"traffic:db-requests-31-50:{FIRST_DAY + timedelta(days=1)}"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+nosuchdriver://monitor:s3cret-pw@127.0.0.1:1/traffic",  # a driver that is not installed
        "nosuchdialect://monitor:s3cret-pw@127.0.0.1/traffic",  # a dialect that does not exist
        "sqlite:////nonexistent-folder/serving.db",  # a database file that cannot be opened
        "postgresql://monitor:s3cret-pw@127.0.0.1:1/traffic",  # a server that is not there
        "not a url s3cret-pw",
    ],
)
def test_a_failing_database_is_reported_with_the_password_hidden_and_files_keep_flowing(
    url: str, instance: dg.DagsterInstance, offline_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found: a broken database URL raised on every tick, the cursor was never saved and no landing
    file was requested. Now the database sensor skips with the reason (no password) and asks again
    next tick; the landing sensor is not affected; once the URL is fixed the rows are requested."""
    monkeypatch.setenv("TRAFFIC_DATABASE_URL", url)
    _policy(tmp_path, monkeypatch, "{traffic: {database: {url_env: TRAFFIC_DATABASE_URL, table: requests}}}")
    landing = offline_environment / "landing" / "traffic"
    landing.mkdir(parents=True)
    write_landing_files(generate_traffic(FIRST_DAY, 1, 10, drift_day=None, seed=1), landing, "jsonl")

    failed = _database_tick(instance, "7")
    assert failed.run_requests == [] and failed.cursor is None  # the cursor is kept as it was
    reason = str(failed.skip_reason.skip_message if failed.skip_reason else "")
    assert "traffic database unreadable" in reason
    assert "s3cret-pw" not in reason, reason
    assert [r.job_name for r in _tick(instance, None).run_requests] == ["stage_traffic"]

    database = tmp_path / "serving.db"
    frame = generate_traffic(FIRST_DAY, 1, 9, drift_day=None, seed=4)
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    _serving_database(database, frame)
    monkeypatch.setenv("TRAFFIC_DATABASE_URL", f"sqlite:///{database}")
    assert [r.run_key for r in _database_tick(instance, "7").run_requests] == ["stage:db-requests-8-9"]


def test_a_staging_run_that_cannot_reach_the_database_fails_without_the_password(
    instance: dg.DagsterInstance, offline_environment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staging run raises (and Dagster retries it); its failure names the database, password hidden."""
    monkeypatch.setenv("TRAFFIC_DATABASE_URL", "postgresql://monitor:s3cret-pw@127.0.0.1:1/traffic")
    _policy(tmp_path, monkeypatch, "{traffic: {database: {url_env: TRAFFIC_DATABASE_URL, table: requests}}}")
    from governance_assets.defs.monitoring.staging import stage_traffic_source

    context = dg.build_op_context(resources={"state": GovernanceState()}, instance=instance)
    config = TrafficSourceConfig(table="requests", after_id=0, up_to_id=5)
    with pytest.raises(dg.Failure) as failure:
        stage_traffic_source(context, config=config)
    assert "traffic database unreadable" in str(failure.value.description)
    assert "s3cret-pw" not in str(failure.value.description)
    assert stage_traffic_source.retry_policy is not None and stage_traffic_source.retry_policy.max_retries >= 1


def _answer_all_wrong(run_dir: Path) -> None:
    """Every exact-match outcome of the run set to wrong, as if a much worse model answered."""
    path = run_dir / "per_instance_stats.json"
    entries = json.loads(path.read_text())
    for entry in entries:
        for stat in entry["stats"]:
            if stat["name"]["name"] == "exact_match":
                stat.update({key: 0.0 for key in ("sum", "sum_squared", "min", "max", "mean") if key in stat})
    path.write_text(json.dumps(entries))


def test_eval_drift_names_the_flipped_instances_of_a_silently_changed_model(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two copies of the real MMLU suite; in the second, one model's answers got worse behind its name
    (same run specs). McNemar flags the subjects where it used to be right often enough to tell."""
    _policy(tmp_path, monkeypatch, "{eval_drift: {metrics: [exact_match]}, reference: {source: suite, suite: a}}")
    root = tmp_path / "roots"
    copy_suite(MMLU_ROOT / "runs" / "v1", root, "a")
    changed = copy_suite(MMLU_ROOT / "runs" / "v1", root, "b")
    for run_dir in changed.iterdir():
        if run_dir.is_dir() and "together_Llama-3-70b" in run_dir.name:
            _answer_all_wrong(run_dir)
    instance.add_dynamic_partitions(HELM_SUITES, ["a", "b"])
    resources = governance_resources(tmp_path / "home", roots=str(root))
    definitions = _definitions()
    helm_and_drift = [
        a
        for a in definitions.assets or []
        if isinstance(a, dg.AssetsDefinition)
        and (a.key.path[0] == "helm" or a.key == dg.AssetKey(list(EVAL_DRIFT_KEY)))
    ]
    checks = [
        c for c in definitions.asset_checks or [] if any(k.name == "no_silent_model_change" for k in c.check_keys)
    ]
    for suite in ("a", "b"):
        dg.materialize([*helm_and_drift, *checks], partition_key=suite, instance=instance, resources=resources)
    assert _checks(instance, EVAL_DRIFT_KEY, "no_silent_model_change") == {"a": False, "b": False}
    warehouse = Warehouse(tmp_path / "home" / "warehouse")
    assert warehouse.read(EVAL_DRIFT_KEY, "a").num_rows == 0  # "no data": nothing earlier to compare with
    rows = warehouse.read(EVAL_DRIFT_KEY, "b").to_pylist()
    changed_model = [r for r in rows if "together_Llama-3-70b" in r["run_name"]]
    assert all(r["flipped_to_pass"] == 0 and r["candidate_mean"] == 0 for r in changed_model)
    assert all(r["flipped_to_fail"] == round(r["baseline_mean"] * r["n_paired"]) for r in changed_model)
    flagged = {(r["run_name"].split(",")[0], r["split"]) for r in rows if r["silent_change"]}
    assert flagged == {("mmlu:subject=philosophy", "test"), ("mmlu:subject=us_foreign_policy", "test")}
    assert all(r["flipped_to_fail"] == r["flipped_to_pass"] == 0 for r in rows if r not in changed_model)
    _assert_table_metadata(instance, EVAL_DRIFT_KEY, "b", warehouse.path(EVAL_DRIFT_KEY, "b"))

    reference = dg.materialize(
        [a for a in _monitoring_assets() if a.key == dg.AssetKey(list(REFERENCE_KEY))],
        instance=instance,
        resources=resources,
    )
    [event] = reference.get_asset_materialization_events()
    assert event.materialization.metadata["source"].value == "suite a"
    features = warehouse.read(REFERENCE_KEY)
    assert features is not None and features.num_rows == event.materialization.metadata["rows"].value > 0


@pytest.mark.parametrize(
    ("drifted", "outcome", "severity"),
    [(0, "pass", None), (3, "pass", None), (4, "fail", "WARN"), (5, "fail", "WARN"), (6, "fail", "ERROR")],
)
def test_drift_check_warns_at_the_share_and_errs_past_the_harder_limit(
    drifted: int, outcome: str, severity: str | None
) -> None:
    """8 tested features, share_threshold 0.5 (4 drifted), error_share 0.75 (6 drifted); an
    embedding row never counts towards the share."""
    from governance_assets.defs.monitoring.checks import judge_drift
    from governance_assets.lib.core.policy import DriftSettings

    rows = [
        {"feature": f"f{i}", "kind": "numerical", "method": "ks", "statistic": 0.0, "threshold": 0.05}
        | {"detail": "", "drifted": i < drifted, "reference_size": 100, "current_size": 100}
        for i in range(8)
    ]
    rows.append(rows[0] | {"feature": "prompt_embedding", "kind": "embedding", "drifted": True})
    judgement = judge_drift(rows, drifted / 8, DriftSettings())
    assert judgement.outcome == outcome and judgement.actual == drifted / 8
    if severity is not None:
        assert judgement.severity.value == severity
    assert len(judgement.evidence) == drifted + 1  # the drifted features and the embedding row
    assert judge_drift([], None, DriftSettings()).outcome == "no data"
