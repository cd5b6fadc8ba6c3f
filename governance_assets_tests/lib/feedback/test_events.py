"""Feedback staging and the daily join to traffic, on generated data with known bad rows, and the
A/B analysis calling both generated experiments correctly."""

import json
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from governance_assets.lib.core.policy import load_policy
from governance_assets.lib.core.storage import write_parquet_atomic
from governance_assets.lib.feedback import generator
from governance_assets.lib.feedback.ab_tests import analyse_experiment
from governance_assets.lib.feedback.events import assemble_day, stage_source, staged_sources, validate_record
from governance_assets.lib.feedback.units import experiment_units

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
        result = analyse_experiment(experiment, units, policy.feedback.srm_alpha)
        outcomes[experiment.name] = result.outcome
        assert not result.srm_mismatch and not result.harmed_guardrails
        rows = pd.DataFrame(result.rows)
        difference = rows[(rows.metric == "positive_feedback") & rows.versus.notna()].iloc[0]
        truth = generator.TRUE_EFFECTS[experiment.name]
        assert difference.cs_low <= truth <= difference.cs_high
    assert outcomes == {"answer_style_v2": "ship_challenger", "retrieval_rerank": "keep_running"}
