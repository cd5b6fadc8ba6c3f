"""Feedback staging and the daily join to traffic, on generated data with known bad rows, and the
A/B analysis calling both generated experiments correctly."""

import json
import shutil
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from governance_assets.lib.core.database import TableRows, read_id_range
from governance_assets.lib.core.policy import load_policy
from governance_assets.lib.core.storage import write_parquet_atomic
from governance_assets.lib.feedback import generator
from governance_assets.lib.feedback.ab_tests import analyse_experiment
from governance_assets.lib.feedback.events import (
    FIELDS,
    assemble_day,
    stage_source,
    stage_table_rows,
    staged_sources,
    validate_record,
)
from governance_assets.lib.feedback.units import experiment_units
from governance_assets_tests.deployment.conftest import requires_servers, service_home

FIRST_DAY = date(2026, 11, 1)
DAYS = 10


def _traffic_warehouse(traffic: pd.DataFrame, folder: Path) -> None:
    """The traffic as `monitoring/traffic` stores it: one Parquet file per UTC day."""
    for day, part in traffic.groupby(traffic["timestamp"].dt.strftime("%Y-%m-%d")):
        write_parquet_atomic(folder / f"{day}.parquet", pa.Table.from_pandas(part, preserve_index=False))


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    home = tmp_path_factory.mktemp("home")
    landed = generator.write_landing(FIRST_DAY, DAYS, home)
    _traffic_warehouse(landed.traffic, home / "warehouse" / "monitoring" / "traffic")
    return home, landed.feedback_files


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ({"timestamp": "2026-11-01T10:00:00", "request_id": "r", "model": "m", "kind": "flag"}, "has no time zone"),
        (
            {"timestamp": "2026-11-01T10:00:00Z", "request_id": "r", "model": "m", "kind": "thumbs", "value": 0},
            "1 or -1",
        ),
        (
            {"timestamp": "2026-11-01T10:00:00Z", "request_id": "r", "model": "m", "kind": "rating", "value": 4.5},
            "from 1 to 5",
        ),
        (
            {"timestamp": "2026-11-01T10:00:00Z", "request_id": "r", "model": "m", "kind": "thumbs", "value": True},
            "numeric value",
        ),
        (
            {"timestamp": "2026-11-01T10:00:00Z", "request_id": "", "model": "m", "kind": "flag"},
            "request_id is missing",
        ),
        (
            {"timestamp": "2026-11-01T10:00:00Z", "request_id": "r", "model": "m", "kind": "correction"},
            "corrected answer",
        ),
        (
            {"timestamp": "2026-11-01T10:00:00Z", "request_id": "r", "model": "m", "kind": "flag", "score": 1},
            "unknown field 'score'",
        ),
        (
            {"timestamp": "2026-11-01T10:00:00Z", "request_id": "r", "model": "m", "kind": "flag", "value": 1},
            "takes no value",
        ),
    ],
)
def test_malformed_records_name_the_field_and_reason(record: dict[str, object], reason: str) -> None:
    staged, problem = validate_record(record)
    assert staged is None and problem is not None and reason in problem


def test_each_source_is_staged_once_and_bad_rows_are_quarantined_with_reasons(
    landed: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    _, files = landed
    staging = tmp_path / "staging"
    first = [stage_source(path, staging) for path in files]
    again = [stage_source(path, staging) for path in files]
    assert first == again and len(staged_sources(staging)) == len(files)
    bad = first[-1]
    assert bad.quarantined == generator.BAD_ROWS["malformed"]
    reasons = [
        json.loads(line)["reason"] for line in (staging / bad.source_id / "quarantine.jsonl").read_text().splitlines()
    ]
    assert reasons == [
        "thumbs value must be 1 or -1, got 3",
        "timestamp 2026-11-27T10:00:00 has no time zone",
        "kind 'like' is not one of thumbs, rating, correction, flag",
        "correction needs the corrected answer in text",
    ]
    unreadable = tmp_path / "landing" / "feedback.xlsx"
    unreadable.parent.mkdir()
    unreadable.write_bytes(b"not a table")
    rejected = stage_source(unreadable, staging)
    assert rejected.rows == 0 and rejected.error is not None and "not a .jsonl" in rejected.error


def test_days_join_the_traffic_and_set_aside_duplicates_orphans_and_mismatches(
    landed: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    home, files = landed
    staging = tmp_path / "staging"
    for path in files:
        stage_source(path, staging)
    last = (FIRST_DAY + timedelta(days=DAYS - 1)).isoformat()
    day = assemble_day(staging, home / "warehouse" / "monitoring" / "traffic", last, join_days=7)
    assert day.counts() == generator.BAD_ROWS
    table = day.table.to_pandas()
    assert not table.duplicated(["request_id", "kind"]).any()
    assert set(table["experiment"]) == {"answer_style_v2", "retrieval_rerank"}
    assert table["variant"].notna().all() and table["latency_ms"].notna().all()
    generated = pd.read_json(files[DAYS - 1], lines=True)
    assert len(table) == len(generated)  # every bad row of the day set aside, every good one kept


def test_the_generated_experiments_are_called_correctly(landed: tuple[Path, list[Path]], tmp_path: Path) -> None:
    home, files = landed
    staging = tmp_path / "staging"
    for path in files:
        stage_source(path, staging)
    traffic_folder = home / "warehouse" / "monitoring" / "traffic"
    days = [(FIRST_DAY + timedelta(days=i)).isoformat() for i in range(DAYS)]
    events = pd.concat([assemble_day(staging, traffic_folder, d, 7).table.to_pandas() for d in days])
    traffic = pd.concat([pd.read_parquet(traffic_folder / f"{d}.parquet") for d in days])
    policy = load_policy()
    outcomes = {}
    for experiment in policy.feedback.experiments:
        units = experiment_units(experiment.name, traffic, events)
        result = analyse_experiment(
            experiment, units, policy.feedback.srm_alpha, policy.feedback.srm_prior_concentration
        )
        outcomes[experiment.name] = result.outcome
        assert not result.srm_mismatch and not result.harmed_guardrails
        rows = pd.DataFrame(result.rows)
        difference = rows[(rows.metric == "positive_feedback") & rows.versus.notna()].iloc[0]
        truth = generator.TRUE_EFFECTS[experiment.name]
        assert difference.cs_low <= truth <= difference.cs_high
    assert outcomes == {"answer_style_v2": "ship_challenger", "retrieval_rerank": "keep_running"}


def feedback_table(url: str, files: list[Path]) -> int:
    """The landing files' records (bad rows included) as rows of table `feedback`, in file order; the row count."""
    records = [json.loads(line) for path in files for line in path.read_text().splitlines() if line.strip()]
    engine = sa.create_engine(url)
    table = sa.Table(
        "feedback",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        *(sa.Column(name, sa.Numeric if name == "value" else sa.Text) for name in FIELDS),
    )
    table.create(engine, checkfirst=True)
    with engine.begin() as connection:
        connection.execute(table.insert(), [{name: r.get(name) for name in FIELDS} for r in records])
    engine.dispose()
    return len(records)


def _stage_in_two_ranges(url: str, staging: Path, rows: int) -> list[int]:
    """Stage ids (0, rows/2] and (rows/2, rows], then both again; the number of database reads."""
    reads: list[int] = []

    def fetch(after: int, up_to: int) -> Callable[[], TableRows]:
        def read() -> TableRows:
            reads.append(up_to)
            return read_id_range(url, "feedback", after, up_to)

        return read

    half = rows // 2
    for _ in range(2):
        for after, up_to in ((0, half), (half, rows)):
            stage_table_rows(staging, "feedback", after, up_to, fetch(after, up_to))
    return reads


def _same_days_as_the_files(landed: tuple[Path, list[Path]], url: str, tmp_path: Path) -> None:
    """Rows read from the table are staged once, the malformed ones quarantined with the files'
    reasons (row = id), and each day assembles to the same events and the same set-aside counts
    as the landing files give (the reference)."""
    home, files = landed
    rows = feedback_table(url, files)
    staging = tmp_path / "db-staging"
    assert _stage_in_two_ranges(url, staging, rows) == [rows // 2, rows]  # the second pass reads nothing
    sources = staged_sources(staging)
    assert [s.source_id for s in sources] == [f"db-feedback-1-{rows // 2}", f"db-feedback-{rows // 2 + 1}-{rows}"]
    assert all("***" in s.source or "sqlite" in s.source for s in sources)
    quarantined = [
        json.loads(line)
        for s in sources
        for line in (staging / s.source_id / "quarantine.jsonl").read_text().splitlines()
    ]
    assert [q["row"] for q in quarantined] == list(range(rows - 9, rows - 5))  # the bad file's first four rows
    assert [q["reason"] for q in quarantined][1] == "timestamp 2026-11-27T10:00:00 has no time zone"
    file_staging = tmp_path / "file-staging"
    for path in files:
        stage_source(path, file_staging)
    traffic = home / "warehouse" / "monitoring" / "traffic"
    columns = assemble_day(file_staging, traffic, FIRST_DAY.isoformat(), 7).table.column_names
    shown = [c for c in columns if c not in ("source_id", "row")]
    for offset in range(DAYS):
        day = (FIRST_DAY + timedelta(days=offset)).isoformat()
        from_table, from_files = assemble_day(staging, traffic, day, 7), assemble_day(file_staging, traffic, day, 7)
        assert from_table.counts() | {"malformed": 0} == from_files.counts() | {"malformed": 0}  # per source, not day
        key = ["request_id", "kind"]
        expected = from_files.table.select(shown).to_pandas().sort_values(key, ignore_index=True)
        pd.testing.assert_frame_equal(
            from_table.table.select(shown).to_pandas().sort_values(key, ignore_index=True), expected
        )
    assert from_table.counts() | {"malformed": sum(s.quarantined for s in sources)} == generator.BAD_ROWS


def test_table_rows_are_staged_once_like_the_files_sqlite(landed: tuple[Path, list[Path]], tmp_path: Path) -> None:
    _same_days_as_the_files(landed, f"sqlite:///{tmp_path / 'serving.db'}", tmp_path)


def test_a_table_without_id_is_a_whole_source_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'serving.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text("create table feedback (timestamp text, request_id text)"))
    engine.dispose()
    staged = stage_table_rows(tmp_path, "feedback", 0, 5, lambda: read_id_range(url, "feedback", 0, 5))
    assert (
        staged.rows == 0 and staged.error == f"sqlite:///{tmp_path / 'serving.db'}#feedback: no primary key column 'id'"
    )


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of its own on loopback (the deployment's start_postgres), stopped after the module."""
    from governance_assets.lib.deployment import services

    deployment = services.Deployment(service_home(), services.ServicePorts(*(services.free_port() for _ in range(3))))
    password = "feedback-pw-" + deployment.home.name[-6:]
    services.start_postgres(deployment, password)
    try:
        yield f"postgresql+psycopg2://{services.DATABASE_USER}:{password}@127.0.0.1:{deployment.ports.postgres}/postgres"
    finally:
        services.stop_postgres(deployment)
        shutil.rmtree(deployment.home, ignore_errors=True)


@requires_servers
@pytest.mark.integration
def test_table_rows_are_staged_once_like_the_files_postgresql(
    landed: tuple[Path, list[Path]], postgres_url: str, tmp_path: Path
) -> None:
    """The same on a real PostgreSQL table (its NUMERIC `value` column gives Decimals); the password
    never reaches a staged source or its quarantine."""
    _same_days_as_the_files(landed, postgres_url, tmp_path)
    password = sa.engine.make_url(postgres_url).password
    assert password and not any(password in p.read_text() for p in (tmp_path / "db-staging").rglob("*.json*"))
