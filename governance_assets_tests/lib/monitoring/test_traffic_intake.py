"""Staging traffic sources: once per content, split by day, out-of-range rows quarantined."""

import json
import shutil
from datetime import date
from pathlib import Path

import pyarrow as pa

from governance_assets.lib.monitoring.traffic import TRAFFIC_SCHEMA, read_landing_file
from governance_assets.lib.monitoring.traffic_generator import generate_traffic, write_landing_files
from governance_assets.lib.monitoring.traffic_intake import (
    assemble_day,
    file_source_id,
    quarantined_rows,
    read_staged,
    stage_source,
    staged_sources,
)

FIRST, LAST = date(2026, 1, 1), date(2026, 12, 31)


def _landing(tmp_path: Path, days: int = 3, rows: int = 50) -> list[Path]:
    frame = generate_traffic(date(2026, 3, 1), days, rows, drift_day=None, seed=3)
    return write_landing_files(frame, tmp_path / "landing", "jsonl")


def test_a_source_is_staged_once_and_split_by_day(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    [path] = write_landing_files(
        generate_traffic(date(2026, 3, 1), 3, 40, drift_day=None, seed=1), tmp_path / "landing", "csv", per_day=False
    )
    source_id = file_source_id(path)
    staged, fresh = stage_source(staging, source_id, read_landing_file(path), FIRST, LAST)
    assert fresh and staged.error is None and staged.quarantined == 0
    assert staged.days == {"2026-03-01": 40, "2026-03-02": 40, "2026-03-03": 40}
    again, fresh_again = stage_source(staging, source_id, read_landing_file(path), FIRST, LAST)
    assert not fresh_again and again == staged
    assert read_staged(staging, source_id) == staged
    day = assemble_day(staging, "2026-03-02")
    assert day.table.num_rows == 40 and day.duplicates == 0 and day.table.schema.equals(TRAFFIC_SCHEMA)
    assert {str(t.date()) for t in day.table.column("timestamp").to_pylist()} == {"2026-03-02"}


def test_same_content_under_another_name_adds_no_rows(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    first = _landing(tmp_path)[0]
    copy = first.with_name("copy-" + first.name)
    shutil.copyfile(first, copy)
    for path in (first, copy):
        stage_source(staging, file_source_id(path), read_landing_file(path), FIRST, LAST)
    assert len(staged_sources(staging)) == 2  # other names: other sources ...
    day = assemble_day(staging, "2026-03-01")
    assert day.table.num_rows == 50 and day.duplicates == 50  # ... but each request id once
    assert day.table.column("request_id").to_pylist() == read_landing_file(first).table.column("request_id").to_pylist()


def test_changed_content_is_a_new_source(tmp_path: Path) -> None:
    path = _landing(tmp_path, days=1)[0]
    before = file_source_id(path)
    path.write_bytes(path.read_bytes() + path.read_bytes().splitlines(keepends=True)[0])
    assert file_source_id(path) != before


def test_rows_outside_the_partitions_and_bad_rows_are_quarantined_with_reasons(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    path = tmp_path / "mixed.jsonl"
    good = {
        "timestamp": "2026-03-01T10:00:00Z",
        "model": "m",
        "request_id": "r1",
        "prompt": "p",
        "completion": "c",
        "latency_ms": 1.0,
        "prompt_tokens": 1,
        "completion_tokens": 1,
    }
    lines = [
        good,
        good | {"request_id": "r2", "timestamp": "2025-12-31T23:59:59Z"},
        good | {"request_id": "r3", "timestamp": "2027-01-01T00:00:00Z"},
        good | {"request_id": "r4", "latency_ms": -5},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    staged, _ = stage_source(staging, file_source_id(path), read_landing_file(path), FIRST, LAST)
    assert staged.days == {"2026-03-01": 1}
    reasons = [row["reason"] for row in quarantined_rows(staging, [staged])]
    assert staged.quarantined == len(reasons) == 4
    assert any("before the first accepted day (2026-01-01)" in r for r in reasons)
    assert any("after the last daily partition (2026-12-31)" in r for r in reasons)
    assert any("latency_ms" in r for r in reasons)
    assert any("invalid JSON" in r for r in reasons)


def test_an_unreadable_source_is_recorded_with_its_error(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    path = tmp_path / "binary.parquet"
    path.write_bytes(b"PAR1 not really")
    staged, fresh = stage_source(staging, file_source_id(path), read_landing_file(path), FIRST, LAST)
    assert fresh and staged.days == {} and staged.error and "Parquet" in staged.error
    assert assemble_day(staging, "2026-03-01").table.num_rows == 0


def test_an_interrupted_staging_is_redone(tmp_path: Path) -> None:
    """Without source.json (the last file written) the source counts as not staged."""
    staging = tmp_path / "staging"
    path = _landing(tmp_path, days=1)[0]
    source_id = file_source_id(path)
    stage_source(staging, source_id, read_landing_file(path), FIRST, LAST)
    (staging / source_id / "source.json").unlink()
    assert read_staged(staging, source_id) is None and staged_sources(staging) == []
    assert assemble_day(staging, "2026-03-01").table.num_rows == 0  # half-staged parts are not used
    staged, fresh = stage_source(staging, source_id, read_landing_file(path), FIRST, LAST)
    assert fresh and staged.days == {"2026-03-01": 50}
    assert isinstance(assemble_day(staging, "2026-03-01").table, pa.Table)
