"""Staging traffic sources: once per content, split by day, out-of-range rows quarantined."""

import json
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from governance_assets.lib.monitoring import traffic
from governance_assets.lib.monitoring.traffic import TRAFFIC_SCHEMA, read_landing_file
from governance_assets.lib.monitoring.traffic_generator import generate_traffic, write_landing_files
from governance_assets.lib.monitoring.traffic_intake import (
    StagingWriteError,
    assemble_day,
    file_source_id,
    quarantined_rows,
    read_staged,
    stage_file,
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
        stage_file(staging, path, FIRST, LAST)
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
    staged, _ = stage_file(staging, path, FIRST, LAST)
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
    staged, fresh = stage_file(staging, path, FIRST, LAST)
    assert fresh and staged.days == {} and staged.error and "Parquet" in staged.error
    assert assemble_day(staging, "2026-03-01").table.num_rows == 0


def test_an_interrupted_staging_is_redone(tmp_path: Path) -> None:
    """Without source.json (the last file written) the source counts as not staged."""
    staging = tmp_path / "staging"
    path = _landing(tmp_path, days=1)[0]
    source_id = file_source_id(path)
    stage_file(staging, path, FIRST, LAST)
    (staging / source_id / "source.json").unlink()
    assert read_staged(staging, source_id) is None and staged_sources(staging) == []
    assert assemble_day(staging, "2026-03-01").table.num_rows == 0  # half-staged parts are not used
    staged, fresh = stage_file(staging, path, FIRST, LAST)
    assert fresh and staged.days == {"2026-03-01": 50}
    assert isinstance(assemble_day(staging, "2026-03-01").table, pa.Table)


def test_a_file_staged_a_part_at_a_time_matches_a_pandas_groupby(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of many blocks, its days interleaved and a few rows repeated: each day file holds that
    day's rows in file order, without the repeats (pandas on the whole file as the reference); the
    rows are written as they come, several row groups a day."""
    frame = generate_traffic(date(2026, 3, 1), 4, 300, drift_day=None, seed=6).sample(frac=1.0, random_state=2)
    frame = pd.concat([frame, frame.iloc[::97]], ignore_index=True)  # repeats at the end
    [path] = write_landing_files(frame, tmp_path / "landing", "jsonl", per_day=False)
    monkeypatch.setattr(traffic, "_BLOCK_BYTES", 16_384)
    monkeypatch.setattr("governance_assets.lib.monitoring.traffic_intake._BUFFER_BYTES", 100_000)
    staging = tmp_path / "staging"
    staged, _ = stage_file(staging, path, FIRST, LAST)
    unique = frame[~frame["request_id"].duplicated()]
    expected = {str(day): group for day, group in unique.groupby(unique["timestamp"].dt.strftime("%Y-%m-%d"))}
    assert staged.days == {day: len(group) for day, group in expected.items()}
    assert staged.quarantined == len(frame) - len(unique)
    for day, group in expected.items():
        file = pq.ParquetFile(staging / staged.source_id / f"{day}.parquet")
        assert file.metadata.num_row_groups > 1
        pd.testing.assert_frame_equal(file.read().to_pandas(), group.reset_index(drop=True))
    assert sorted(p.name for p in (staging / staged.source_id).iterdir()) == sorted(
        [*(f"{day}.parquet" for day in expected), "quarantine.jsonl", "source.json"]
    )


def test_a_file_found_unreadable_after_rows_were_written_leaves_no_day_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NUL byte deep in the file: the rows already written go, only the error is recorded."""
    [path] = _landing(tmp_path, days=2, rows=400)[:1]
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-3]) + lines[-3].replace(b'"model"', b'"mo\x00del"') + b"".join(lines[-2:]))
    monkeypatch.setattr(traffic, "_BLOCK_BYTES", 4096)
    monkeypatch.setattr("governance_assets.lib.monitoring.traffic_intake._BUFFER_BYTES", 10_000)
    staging = tmp_path / "staging"
    staged, _ = stage_file(staging, path, FIRST, LAST)
    assert staged.error is not None and "NUL" in staged.error and staged.days == {} and staged.quarantined == 0
    assert [p.name for p in (staging / staged.source_id).iterdir()] == ["source.json"]
    assert np.sum([assemble_day(staging, day).table.num_rows for day in ("2026-03-01", "2026-03-02")]) == 0


def test_a_write_that_fails_is_raised_not_recorded_as_a_bad_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day file that cannot be written (here its temporary path is taken by a folder) fails the
    staging, to be retried; the source is not recorded as unreadable."""
    [path] = _landing(tmp_path, days=2, rows=300)[:1]
    staging = tmp_path / "staging"
    (staging / file_source_id(path) / ".2026-03-01.parquet.tmp").mkdir(parents=True)
    monkeypatch.setattr(traffic, "_BLOCK_BYTES", 4096)
    monkeypatch.setattr("governance_assets.lib.monitoring.traffic_intake._BUFFER_BYTES", 10_000)
    with pytest.raises(StagingWriteError, match=r"2026-03-01\.parquet\.tmp"):
        stage_file(staging, path, FIRST, LAST)
    assert read_staged(staging, file_source_id(path)) is None
