"""Traffic landing files, database rows, quarantine, daily partitions and the synthetic generator."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from governance_assets.lib.traffic import (
    TRAFFIC_KEY,
    TRAFFIC_SCHEMA,
    QuarantinedRow,
    append_to_day,
    read_landing_file,
    read_table_rows,
    split_by_day,
    write_quarantine,
)
from governance_assets.lib.traffic_generator import generate_traffic, write_landing_files
from governance_assets.lib.warehouse import Warehouse

START = date(2026, 11, 20)


def _good(i: int, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "timestamp": f"2026-11-27T10:00:{i:02d}Z",
        "model": "simple/model1",
        "request_id": f"r{i}",
        "prompt": "hello",
        "completion": "hi",
        "latency_ms": 12.5,
        "prompt_tokens": 10,
        "completion_tokens": 3,
        "feedback": 1,
        "metadata": {"language": "en"},
    }
    record.update(changes)
    return record


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_each_format_round_trips_generated_rows(tmp_path: Path, fmt: Any) -> None:
    frame = generate_traffic(START, 2, 50, None, seed=3, models=("a/one", "b/two"))
    paths = write_landing_files(frame, tmp_path, fmt)
    assert [p.name for p in paths] == [f"traffic-2026-11-20.{fmt}", f"traffic-2026-11-21.{fmt}"]
    tables = [read_landing_file(p) for p in paths]
    assert all(b.error is None and b.quarantined == [] for b in tables)
    got = pd.concat([b.table.to_pandas() for b in tables], ignore_index=True)
    assert tables[0].table.schema == TRAFFIC_SCHEMA
    assert str(got["timestamp"].dt.tz) == "UTC"
    pd.testing.assert_frame_equal(got, frame)


def test_bad_rows_are_quarantined_with_reasons_and_the_rest_kept(tmp_path: Path) -> None:
    lines = [json.dumps(_good(1))]  # line 1
    lines.append(json.dumps(_good(2, timestamp="2026-11-27 10:00")))  # 2
    lines.append(json.dumps(_good(3, timestamp="yesterday")))  # 3
    lines.append(json.dumps(_good(4, latency_ms=-3)))  # 4
    lines.append(json.dumps({k: v for k, v in _good(5).items() if k != "prompt_tokens"}))  # 5
    lines.append(json.dumps(_good(6, prompt_tokens="ten")))  # 6
    lines.append(json.dumps(_good(7, request_id="r1")))  # 7
    lines.append(json.dumps(_good(8, foo=1)))  # 8
    lines.append(json.dumps(_good(9, feedback=1.5)))  # 9
    lines.append('{"timestamp": "2026-11-27T10:00:10Z", "model": ')  # 10
    lines.append(json.dumps(_good(11, metadata=["en"])))  # 11
    lines.append("")  # blank lines are skipped
    lines.append(json.dumps(_good(13, feedback=None, metadata=None, completion="")))  # 13
    lines.append(json.dumps(_good(14, timestamp="2026-11-27T15:30:00+05:30", prompt_tokens=7.0)))  # 14
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    batch = read_landing_file(path)
    assert batch.error is None
    reasons = {q.row: q.reason for q in batch.quarantined}
    assert reasons == {
        2: "timestamp: '2026-11-27 10:00' has no time zone",
        3: "timestamp: 'yesterday' is not an ISO-8601 timestamp",
        4: "latency_ms: -3.0 is negative",
        5: "prompt_tokens: missing",
        6: "prompt_tokens: 'ten' is not an integer",
        7: "request_id: duplicate of row 1",
        8: "unknown field 'foo'",
        9: "feedback: 1.5 is outside [-1, 1]",
        10: reasons[10],
        11: "metadata: ['en'] is not a JSON object",
    }
    assert reasons[10].startswith("invalid JSON: ")
    assert len(batch.quarantined) == 10
    assert all(q.source == str(path) for q in batch.quarantined)
    assert next(q for q in batch.quarantined if q.row == 7).raw == lines[6]
    assert batch.table.column("request_id").to_pylist() == ["r1", "r13", "r14"]
    kept = batch.table.to_pylist()
    assert kept[1]["feedback"] is None and kept[1]["metadata"] is None and kept[1]["completion"] == ""
    assert kept[0]["metadata"] == '{"language":"en"}'
    assert kept[2]["timestamp"].isoformat() == "2026-11-27T10:00:00+00:00" and kept[2]["prompt_tokens"] == 7


def test_bad_csv_and_parquet_rows(tmp_path: Path) -> None:
    header = "timestamp,model,request_id,prompt,completion,latency_ms,prompt_tokens,completion_tokens,feedback,metadata"
    rows = [
        '2026-11-27T10:00:00Z,m,r1,p,c,1.5,10,2,,"{""a"": 1}"',
        "2026-11-27T10:00:01Z,m,r2,p,c,abc,10,2,,",
        "2026-11-27T10:00:02Z,m,r3,,c,1,,2,-1,",
        "2026-11-27T10:00:03Z,m,r4,p,c,1,10,2,,[1]",
        "2026-11-27T10:00:04Z,m,r5",
        "2026-11-27T10:00:05Z,m,r6,p,,0,0,0,,",
    ]
    path = tmp_path / "t.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    batch = read_landing_file(path)
    assert batch.error is None
    assert {q.row: q.reason for q in batch.quarantined} == {
        2: "latency_ms: 'abc' is not a number",
        3: "prompt: empty; prompt_tokens: missing",
        4: "metadata: [1] is not a JSON object",
        5: "row has 3 fields, expected 10",
    }
    assert batch.table.column("request_id").to_pylist() == ["r1", "r6"]
    assert batch.table.column("metadata").to_pylist() == ['{"a":1}', None]

    frame = generate_traffic(START, 1, 5, None)
    frame.loc[2, "latency_ms"] = -1.0
    frame["timestamp"] = frame["timestamp"].dt.tz_localize(None)  # naive: every row rejected
    frame.to_parquet(tmp_path / "naive.parquet")
    naive = read_landing_file(tmp_path / "naive.parquet")
    assert naive.table.num_rows == 0 and len(naive.quarantined) == 5
    assert naive.quarantined[2].reason.endswith("has no time zone; latency_ms: -1.0 is negative")


def test_whole_file_errors_are_reported_not_raised(tmp_path: Path) -> None:
    frame = generate_traffic(START, 1, 20, None)
    (good,) = write_landing_files(frame, tmp_path, "parquet")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:100])
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    no_header = tmp_path / "noheader.csv"
    no_header.write_text("2026-11-27T10:00:00Z,m,r1,p,c,1.5,10,2,,\n")
    other = tmp_path / "traffic.xml"
    other.write_text("<x/>")
    expected = {
        truncated: "unreadable Parquet",
        garbage: "not UTF-8",
        empty: "needs a header",
        no_header: "CSV header: unknown fields",
        other: "unknown file type '.xml'",
    }
    for path, reason in expected.items():
        batch = read_landing_file(path)
        assert batch.error is not None and batch.error.startswith(str(path)) and reason in batch.error, batch.error
        assert batch.table.num_rows == 0 and batch.table.schema == TRAFFIC_SCHEMA and batch.quarantined == []


def test_read_table_rows_reads_each_row_once(tmp_path: Path) -> None:
    db = tmp_path / "traffic.db"
    types = {"latency_ms": "REAL", "prompt_tokens": "INTEGER", "completion_tokens": "TEXT", "feedback": "REAL"}
    columns = ", ".join(f"{name} {types.get(name, 'TEXT')}" for name in TRAFFIC_SCHEMA.names)
    with sqlite3.connect(db) as connection:
        connection.execute(f"CREATE TABLE traffic (id INTEGER PRIMARY KEY, {columns})")
        for i in range(1, 6):
            record = _good(i, metadata='{"language": "de"}', latency_ms=-1 if i == 4 else 2.0)
            connection.execute(
                f"INSERT INTO traffic (id, {', '.join(record)}) VALUES ({', '.join('?' * (len(record) + 1))})",
                [i, *record.values()],
            )
    url = f"sqlite:///{db}"
    first, mark = read_table_rows(url, "traffic", 0, 3)
    assert first.error is None and mark == 3
    assert first.table.column("request_id").to_pylist() == ["r1", "r2", "r3"]
    assert first.table.column("metadata").to_pylist() == ['{"language":"de"}'] * 3
    second, mark = read_table_rows(url, "traffic", mark, 3)
    assert mark == 5 and second.table.column("request_id").to_pylist() == ["r5"]
    assert [(q.row, q.reason) for q in second.quarantined] == [(4, "latency_ms: -1.0 is negative")]
    third, same = read_table_rows(url, "traffic", mark, 3)
    assert same == 5 and third.table.num_rows == 0 and third.error is None
    with pytest.raises(ValueError, match="identifier"):
        read_table_rows(url, "x; drop table y", 0, 3)
    missing, unchanged = read_table_rows(url, "nothere", 7, 3)
    assert unchanged == 7 and missing.error is not None


def test_split_and_append_to_day_is_idempotent(tmp_path: Path) -> None:
    frame = generate_traffic(START, 2, 30, None)
    (path,) = write_landing_files(frame, tmp_path / "landing", "jsonl", per_day=False)
    batch = read_landing_file(path)
    days = split_by_day(batch.table)
    assert list(days) == ["2026-11-20", "2026-11-21"] and all(t.num_rows == 30 for t in days.values())
    warehouse = Warehouse(tmp_path / "warehouse")
    assert append_to_day(warehouse, TRAFFIC_KEY, "2026-11-20", days["2026-11-20"]) == 30
    assert append_to_day(warehouse, TRAFFIC_KEY, "2026-11-20", days["2026-11-20"]) == 0
    more = generate_traffic(START, 1, 40, None, seed=9)  # same request ids 0..29, ten new
    assert (
        append_to_day(
            warehouse, TRAFFIC_KEY, "2026-11-20", read_landing_file(write_landing_files(more, tmp_path / "m")[0]).table
        )
        == 10
    )
    stored = pd.read_parquet(warehouse.path(TRAFFIC_KEY, "2026-11-20"))
    assert len(stored) == 40 and stored["request_id"].is_unique
    assert pq.read_schema(warehouse.path(TRAFFIC_KEY, "2026-11-20")).remove_metadata() == TRAFFIC_SCHEMA
    with pytest.raises(ValueError, match="other days"):
        append_to_day(warehouse, TRAFFIC_KEY, "2026-11-20", days["2026-11-21"])


def test_write_quarantine_appends(tmp_path: Path) -> None:
    path = tmp_path / "q" / "quarantine.jsonl"
    write_quarantine(path, [QuarantinedRow("a.jsonl", 2, "prompt: missing", "{}")])
    write_quarantine(path, [])
    write_quarantine(path, [QuarantinedRow("b.csv", 3, "x", "y" * 10), QuarantinedRow("b.csv", 4, "z", "")])
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records == [
        {"source": "a.jsonl", "row": 2, "reason": "prompt: missing", "raw": "{}"},
        {"source": "b.csv", "row": 3, "reason": "x", "raw": "y" * 10},
        {"source": "b.csv", "row": 4, "reason": "z", "raw": ""},
    ]
    assert [p.name for p in path.parent.iterdir()] == ["quarantine.jsonl"]


def test_generator_drifts_on_the_drift_day_only() -> None:
    frame = generate_traffic(START, 8, 2000, date(2026, 11, 25), seed=5)
    day = frame["timestamp"].dt.strftime("%Y-%m-%d")
    lengths = frame["completion"].str.len().groupby(day).mean()
    latency = frame["latency_ms"].groupby(day).mean()
    refusals = frame["completion"].str.contains("sorry|cannot|unable", case=False).groupby(day).mean()
    english = frame["metadata"].str.contains('"language":"en"').groupby(day).mean()
    before, after = slice("2026-11-20", "2026-11-24"), slice("2026-11-25", "2026-11-27")
    base_len, base_lat = lengths[before].mean(), latency[before].mean()
    assert (lengths[before] / base_len).between(0.95, 1.05).all()
    assert (latency[before] / base_lat).between(0.93, 1.07).all()
    assert (lengths[after] / base_len > 1.3).all() and (latency[after] / base_lat > 1.6).all()
    assert refusals[before].between(0.015, 0.05).all() and (refusals[after] > 0.1).all()
    assert (english[before] > 0.8).all() and (english[after] < 0.55).all()
    again = generate_traffic(START, 8, 2000, date(2026, 11, 25), seed=5)
    pd.testing.assert_frame_equal(frame, again)
    assert not generate_traffic(START, 1, 50, None, seed=6).equals(generate_traffic(START, 1, 50, None, seed=5))
