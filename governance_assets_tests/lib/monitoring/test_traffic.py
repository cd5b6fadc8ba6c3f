"""Traffic landing files, database rows, quarantine, daily partitions and the synthetic generator."""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest

from governance_assets.lib.core.database import DatabaseUnreadable, hidden_url, newest_table_id
from governance_assets.lib.monitoring import traffic
from governance_assets.lib.monitoring.traffic import (
    TRAFFIC_SCHEMA,
    ParsedBatch,
    QuarantinedRow,
    read_landing_file,
    read_table_rows,
    split_by_day,
    write_quarantine,
)
from governance_assets.lib.monitoring.traffic_generator import generate_traffic, write_landing_files

START = date(2026, 11, 20)


def _good(i: int, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "timestamp": f"2026-11-27T10:{i // 60:02d}:{i % 60:02d}Z",
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
    assert newest_table_id(url, "traffic") == 5
    first = read_table_rows(url, "traffic", 0, 3)
    assert first.error is None and first.source == f"{url}#traffic"
    assert first.table.column("request_id").to_pylist() == ["r1", "r2", "r3"]
    assert first.table.column("metadata").to_pylist() == ['{"language":"de"}'] * 3
    second = read_table_rows(url, "traffic", 3, 6)
    assert second.table.column("request_id").to_pylist() == ["r5"]
    assert [(q.row, q.reason) for q in second.quarantined] == [(4, "latency_ms: -1.0 is negative")]
    third = read_table_rows(url, "traffic", 5, 9)
    assert third.table.num_rows == 0 and third.error is None
    with pytest.raises(ValueError, match="identifier"):
        read_table_rows(url, "x; drop table y", 0, 3)
    with pytest.raises(ValueError, match="identifier"):
        newest_table_id(url, "x; drop table y")
    missing = read_table_rows(url, "nothere", 7, 9)
    assert missing.error is not None and "no table 'nothere'" in missing.error


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+nosuchdriver://monitor:s3cret-pw@127.0.0.1:1/traffic",
        "nosuchdialect://monitor:s3cret-pw@127.0.0.1/traffic",
        "postgresql://monitor:s3cret-pw@127.0.0.1:1/traffic",
        "s3cret-pw",
    ],
)
def test_database_errors_are_raised_with_the_password_hidden(url: str) -> None:
    """A database that cannot be reached raises DatabaseUnreadable (the caller retries later);
    neither the message nor its chain holds the password."""
    for read in (lambda: newest_table_id(url, "traffic"), lambda: read_table_rows(url, "traffic", 0, 5)):
        with pytest.raises(DatabaseUnreadable) as caught:
            read()
        assert "s3cret-pw" not in str(caught.value), caught.value
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert (
        hidden_url("postgresql://monitor:s3cret-pw@db.example/traffic") == "postgresql://monitor:***@db.example/traffic"
    )


def test_split_by_day_keeps_row_order_per_utc_day(tmp_path: Path) -> None:
    frame = generate_traffic(START, 2, 30, None)
    (path,) = write_landing_files(frame, tmp_path / "landing", "jsonl", per_day=False)
    batch = read_landing_file(path)
    days = split_by_day(batch.table)
    assert list(days) == ["2026-11-20", "2026-11-21"] and all(t.num_rows == 30 for t in days.values())
    in_order = [rid for table in days.values() for rid in table.column("request_id").to_pylist()]
    assert in_order == batch.table.column("request_id").to_pylist()


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


# --- pyarrow's reading of JSON Lines blocks against orjson's, line by line ---------------------------


def _read_both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ParsedBatch, ParsedBatch, list[bool]]:
    """`path` read as usual and by orjson line by line alone, and whether pyarrow took each block."""
    taken: list[bool] = []
    arrow_block, by_line = traffic._arrow_block, traffic._JsonLines._by_line

    def arrow_spy(block: bytes, lines: int) -> Any:
        part = arrow_block(block, lines)
        if part is not None:
            taken.append(True)
        return part

    def by_line_spy(self: Any, block: bytes) -> Any:
        taken.append(False)
        return by_line(self, block)

    with monkeypatch.context() as patch:
        patch.setattr(traffic, "_arrow_block", arrow_spy)
        patch.setattr(traffic._JsonLines, "_by_line", by_line_spy)
        usual = read_landing_file(path)
    with monkeypatch.context() as patch:
        patch.setattr(traffic, "_line_starts", lambda block: None)
        by_orjson = read_landing_file(path)
    return usual, by_orjson, taken


def _assert_same(got: ParsedBatch, expected: ParsedBatch) -> None:
    assert got.error == expected.error
    assert got.quarantined == expected.quarantined
    assert got.table.schema == expected.table.schema == TRAFFIC_SCHEMA
    assert got.table.to_pylist() == expected.table.to_pylist()
    for name in ("latency_ms", "feedback"):  # 0.0 == -0.0 above
        signs = [np.signbit(b.table.column(name).to_numpy()) for b in (got, expected)]
        assert (signs[0] == signs[1]).all()


def _line(i: int, **changes: Any) -> bytes:
    return orjson.dumps(_good(i, **changes))


def _raw(i: int, replace: str = "", by: str = "", metadata: bool = True) -> bytes:
    """A good line by json.dumps (``", "`` and ``": "``), text replaced to write what it cannot."""
    text = json.dumps({k: v for k, v in _good(i).items() if metadata or k != "metadata"})
    assert replace in text
    return text.replace(replace, by, 1).encode()


_WITHOUT_TOKENS = {k: v for k, v in _good(5).items() if k != "prompt_tokens"}
_FAST_CASES: dict[str, list[bytes]] = {
    "compact": [_line(i) for i in range(5)],
    "json.dumps separators": [json.dumps(_good(i)).encode() for i in range(5)],
    "sorted keys, metadata amid": [json.dumps(_good(i), sort_keys=True).encode() for i in range(5)],
    "crlf and no final newline": [_line(1) + b"\r", _line(2) + b"\r", _line(3)],
    "rows the validation quarantines": [
        _line(1),
        _line(2, timestamp="2026-11-27 10:00"),
        _line(3, timestamp="yesterday"),
        _line(4, timestamp="2026-02-30T10:00:00Z"),
        _line(5, timestamp="2026-11-27T10:00:00.123456789+05:30"),
        _line(6, timestamp=" 2026-11-27T10:00:00z "),
        _line(7, latency_ms=-3),
        _line(8, prompt=""),
        _line(9, model="", request_id=""),
        _line(10, request_id="r1"),
        _line(11, feedback=1.5),
        _line(12, prompt_tokens=-2, completion_tokens=-1.0),
        _line(13, timestamp="2300-01-01T00:00:00Z"),
        _line(14, request_id="r10"),
    ],
    "valid variations": [
        _line(1, feedback=None, metadata=None, completion=""),
        orjson.dumps({k: v for k, v in _good(2).items() if k not in ("feedback", "metadata")}),
        _line(3, prompt_tokens=7.0, completion_tokens=0, latency_ms=0, feedback=-1),
        _line(4, timestamp="2026-11-27T15:30:00.5+05:30", latency_ms=1e-300),
        _line(5, prompt='say "hi"\n\tthen\\ leave\u0000 é 😀', completion="\u2028"),
        _line(10, metadata={"language": "de"}),
        _line(11, latency_ms=2**53 - 1, prompt_tokens=2**53 - 1),
    ],
    "metadata of other text members": [_line(i, metadata={"zé": '"q"\n', "a": "{", "b": "[}"}) for i in range(3)],
    "metadata empty": [_line(i, metadata={}) for i in range(3)],
    "metadata first": [orjson.dumps({"metadata": {"a": "1"}} | _good(i, metadata=None)) for i in range(3)],
    "metadata escaped, space before colon": [
        _raw(1, '"metadata"', '"m\\u0065tadata"'),
        _raw(2, '"metadata": ', '"metadata" : '),
        _raw(3, '"language": ', '"l\\u0061nguage"  :'),
    ],
    "decimal texts": [  # pyarrow and orjson read them to the same doubles
        _raw(i, '"latency_ms": 12.5', f'"latency_ms": {text}')
        for i, text in enumerate(
            text
            for x in np.random.default_rng(2).lognormal(3, 4, 100).tolist()
            for text in (repr(x), f"{x:.3e}", f"{x:.25f}", f"{x:.40g}", f"{int(x)}")
        )
    ],
}
_STRICT_CASES: dict[str, list[bytes]] = {  # each refused alone, among good lines
    "string for a number": [_line(2, prompt_tokens="10")],
    "number for a string": [_line(2, model=7)],
    "true for a number": [_line(1, latency_ms=True)],
    "false for feedback": [_line(3, feedback=False)],
    "fractional token count": [_line(1, completion_tokens=10.5)],
    "2**53": [_line(1, latency_ms=2**53)],
    "2**63 tokens": [_line(2, prompt_tokens=2**63)],
    "1e300": [_raw(3, "12.5", "1e300")],
    "negative zero": [_line(1, latency_ms=-0.0)],
    "negative integer zero": [_raw(2, '"feedback": 1', '"feedback": -0')],
    "NaN": [_raw(1, "12.5", "NaN")],
    "Infinity": [_raw(2, "12.5", "Infinity")],
    "-Infinity": [_raw(3, "12.5", "-Infinity")],
    "missing field": [orjson.dumps(_WITHOUT_TOKENS)],
    "null field": [_line(1, model=None)],
    "null timestamp": [_line(2, timestamp=None)],
    "unknown field": [_line(1, foo=1)],
    "unknown null field": [_line(2, bar=None)],
    "repeated field": [_raw(1, '"model": ', '"model": "x", "model": ')],
    "array": [b"[1, 2]"],
    "string": [b'"text"'],
    "number": [b"3"],
    "null": [b"null"],
    "true": [b"true"],
    "truncated": [_line(1)[:-5]],
    "trailing comma": [_line(2) + b","],
    "single quotes": [b"{'a': 1}"],
    "blank line": [b""],
    "spaces": [b"   "],
    "tab": [b"\t"],
    "leading space": [b" " + _line(1)],
    "two carriage returns": [_line(2) + b"\r\r"],
    "form feed": [_line(3) + b"\x0c"],
    "trailing space": [_line(4) + b" "],
    "two objects in a line": [_raw(1, metadata=False) + _raw(2, metadata=False)],
    "object over two lines": [_line(1)[:40], _line(1)[40:]],
    "objects over lines, as many as lines": [_line(1)[:40], _line(1)[40:], _line(2) + _line(3)],
    "byte order mark amid": [b"\xef\xbb\xbf" + _line(2)],
    "metadata with a number": [_line(1, metadata={"language": "en", "n": 1})],
    "metadata with a list": [_line(6, metadata={"b": [1, "x", None], "a": [[1], []]})],
    "metadata with literals": [_line(7, metadata={"zé": '"q"\n', "a": 1.5e10, "b": True, "c": None, "d": []})],
    "metadata with null": [_line(7, metadata={"language": None})],
    "metadata of other keys than the others": [_line(2, metadata={"region": "eu"})],
    "metadata empty among others": [_line(8, metadata={})],
    "metadata with a repeated key": [_raw(9, '{"language": "en"}', '{"b": "2", "a": "1", "b": "3"}')],
    "metadata a string": [_line(1, metadata="en")],
    "metadata an array": [_line(2, metadata=["en"])],
    "metadata a number": [_line(3, metadata=1)],
    "metadata with }": [_line(1, metadata={"a": "}"})],
    "metadata nested": [_line(3, metadata={"a": {}})],
    "metadata twice": [_raw(1, '"metadata": ', '"metadata": null, "metadata": ')],
    # the next are invalid JSON, though valid with the metadata member cut out (were the cut blanked by spaces)
    "metadata cut in a string": [_raw(1, '"prompt": "hello"', '"prompt": "abc,"metadata": {"x": 1},def"', False)],
    "metadata cut after a colon": [_raw(2, '"latency_ms": 12.5', '"latency_ms":, "metadata": {"x": 1}12.5', False)],
    "metadata cut after a key": [_raw(3, '"latency_ms": 12.5', '"latency_ms", "metadata": {"x": 1}: 12.5', False)],
    "metadata cut after the brace": [b'{, "metadata": {"x": 1}' + _raw(4, "{", "", metadata=False)],
    "metadata, a brace more": [_raw(5, '"metadata": {"language": "en"}', '"metadata": {"language": "en"}}')],
    "metadata cut short, no final newline": [_raw(2, '"metadata": {"language": "en"}', '"metadata": n')],
    "raw control character": [_raw(1, "hello", "hel\tlo")],
    "lone surrogate": [_raw(1, "hello", "hel\\ud800lo")],
    "line longer than a pyarrow block": [_line(1, completion="x" * (3 << 20))],
}
_REFUSED_FILES: dict[str, list[bytes]] = {  # each a whole file pyarrow reads otherwise than orjson
    "metadata holding dates": [_line(i, metadata={"language": "2026-11-27"}) for i in range(3)],  # timestamps
    "metadata holding a number each": [_line(i, metadata={"n": 1.0}) for i in range(3)],  # 1.0 is 1 in orjson
}
_UNREADABLE_CASES: dict[str, list[bytes]] = {
    "NUL byte": [_line(1), _line(2)[:-1] + b"\x00}"],
    "NUL byte in a string": [_line(1), _line(2, prompt="\x00").replace(b"\\u0000", b"\x00")],
    "NUL byte in metadata": [_line(1), _line(2, metadata={"a": "\x00"}).replace(b"\\u0000", b"\x00")],
    "not UTF-8": [_line(1), _line(2, prompt="é").replace("é".encode(), b"\xe9")],
    "not UTF-8 in metadata": [_line(1), _line(2, metadata={"a": "é"}).replace("é".encode(), b"\xff")],
}


@pytest.mark.parametrize(
    ("name", "path"),
    [(n, "fast") for n in _FAST_CASES]
    + [(n, "strict") for n in [*_STRICT_CASES, *_REFUSED_FILES]]
    + [(n, None) for n in _UNREADABLE_CASES],
)
def test_pyarrow_blocks_give_orjsons_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, path: str | None
) -> None:
    """pyarrow takes a block or leaves it to orjson, never giving other results than orjson line by line."""
    last = name.endswith("no final newline")
    if name in _STRICT_CASES:
        lines = [_line(100), *_STRICT_CASES[name], *[_line(101)][last:]]
    else:
        lines = {**_FAST_CASES, **_REFUSED_FILES, **_UNREADABLE_CASES}[name]
    file = tmp_path / "t.jsonl"
    file.write_bytes(b"\n".join(lines) + b"\n"[last:])
    usual, strict, taken = _read_both(file, monkeypatch)
    _assert_same(usual, strict)
    if path == "fast":
        assert taken and all(taken), taken
        assert usual.error is None and usual.table.num_rows + len(usual.quarantined) == len(lines)
    elif path == "strict":
        assert taken == [False]
    else:
        assert usual.error is not None and "line 2" in usual.error


def test_pyarrow_takes_a_byte_order_mark_and_empty_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "t.jsonl"
    file.write_bytes(b"\xef\xbb\xbf" + _line(1) + b"\n" + _line(2) + b"\n")
    usual, strict, taken = _read_both(file, monkeypatch)
    _assert_same(usual, strict)
    assert taken == [True] and usual.table.num_rows == 2
    for content in (b"", b"\n", b"\n\n  \n"):
        file.write_bytes(content)
        usual, strict, _ = _read_both(file, monkeypatch)
        _assert_same(usual, strict)
        assert usual.table.num_rows == 0 and usual.quarantined == [] and usual.error is None


def test_booleans_are_not_numbers_even_after_floats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow, inferring a type from Python values, reads True as 1.0 after a float; orjson's reading must not."""
    file = tmp_path / "t.jsonl"
    file.write_bytes(b"\n".join([_line(1), _line(2, latency_ms=True, feedback=False), _line(3)]))
    monkeypatch.setattr(traffic, "_line_starts", lambda block: None)
    batch = read_landing_file(file)
    assert [(q.row, q.reason) for q in batch.quarantined] == [
        (2, "latency_ms: True is not a number; feedback: False is not a number")
    ]


def test_pyarrow_and_orjson_blocks_over_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    bad = [line for lines in _STRICT_CASES.values() for line in lines if len(line) < 10_000]
    bad += [line for lines in _FAST_CASES.values() for line in lines]
    lines = []
    for i in range(600):
        if rng.random() < 0.05:
            lines.append(bad[int(rng.integers(len(bad)))])
        elif rng.random() < 0.05:
            lines.append(_line(int(rng.integers(i + 1)), timestamp=f"2026-11-27T10:00:00.{i:06d}Z"))  # a duplicate
        else:
            lines.append(_line(i, metadata={"language": ["en", "de"][i % 2], "n": str(i % 3)}))
    file = tmp_path / "t.jsonl"
    file.write_bytes(b"\r\n".join(lines))
    monkeypatch.setattr(traffic, "_BLOCK_BYTES", 4096)
    usual, strict, taken = _read_both(file, monkeypatch)
    _assert_same(usual, strict)
    assert True in taken and False in taken
    assert usual.error is None and len(usual.quarantined) > 30 and usual.table.num_rows > 450
    assert any(q.reason.startswith("request_id: duplicate") for q in usual.quarantined)


def test_only_the_blocks_with_a_line_pyarrow_refuses_are_read_by_orjson(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [_line(i, prompt_tokens="10" if i < 400 and i % 5 == 0 else 10) for i in range(1500)]
    file = tmp_path / "t.jsonl"
    file.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setattr(traffic, "_BLOCK_BYTES", 2048)
    with file.open("rb") as read:
        blocks = list(iter(lambda: read.read(2048) + read.readline(), b""))
    with_a_string = [b'"prompt_tokens":"10"' in block for block in blocks]
    usual, by_orjson, taken = _read_both(file, monkeypatch)
    _assert_same(usual, by_orjson)
    assert len(usual.quarantined) == 80 and len(blocks) == 150
    assert taken == [not bad for bad in with_a_string] and sum(with_a_string) == 40


def test_pyarrow_reads_a_large_clean_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = generate_traffic(START, 5, 10_000, date(2026, 11, 23), seed=4, models=("a/one", "b/two"))
    (path,) = write_landing_files(frame, tmp_path, "jsonl", per_day=False)
    assert path.stat().st_size > traffic._BLOCK_BYTES
    usual, strict, taken = _read_both(path, monkeypatch)
    assert len(taken) > 1 and all(taken)
    assert usual.error is None and usual.quarantined == [] == strict.quarantined
    assert usual.table.equals(strict.table) and usual.table.schema == TRAFFIC_SCHEMA
    pd.testing.assert_frame_equal(usual.table.to_pandas(), frame)


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-27T10:00:00Z",
        "2026-11-27 10:00:00.5Z",
        "2026-11-27T10:00Z",
        "2026-11-27T10:00:00.123456+05:30",
        "2026-11-27T10:00:00.1234567Z",
        "2026-11-27T10:00:00.123456789-01:00",
        "2026-11-27T10:00:00+0530",
        "2026-11-27T10:00:00-23",
        "2026-11-27T10:00:00+24:00",
        "2026-11-27T10:00:00z",
        "2026-11-27T24:00:00Z",
        "2026-11-27T23:59:60Z",
        "2024-02-29T10:00:00Z",
        "2026-02-29T10:00:00Z",
        "2026-13-01T10:00:00Z",
        "1678-01-02T00:00:00+14:00",
        "1677-09-21T00:12:43.145226Z",
        "1677-09-21T00:12:43.145224Z",
        "2261-12-30T00:00:00-14:00",
        "2262-04-11T23:47:16.854775Z",
        "2262-04-11T23:47:16.854776Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
    ],
)
def test_timestamps_are_read_as_pandas_reads_them(text: str) -> None:
    """pyarrow reads most timestamps now; pandas is the reference (microseconds, its nanosecond range)."""
    values, reasons = traffic._text("timestamp", "timestamp", pa.array([text, text]), False)
    expected = pd.to_datetime(pd.Series([text], dtype=object), format="ISO8601", utc=True, errors="coerce")[0]
    if pd.isna(expected):
        assert reasons == dict.fromkeys([0, 1], f"timestamp: {text!r} is not a valid date and time")
    else:
        assert reasons == {}
        assert values.to_pylist() == [expected.floor("us").to_pydatetime()] * 2


def test_split_by_day_of_rows_out_of_day_order_matches_a_pandas_groupby(tmp_path: Path) -> None:
    """Rows of several days interleaved: each day keeps its rows in file order (pandas' stable groupby as
    the reference), days sorted; in-order rows come back as zero-copy slices of the table."""
    frame = generate_traffic(START, 3, 40, None).sample(frac=1.0, random_state=3)
    (path,) = write_landing_files(frame, tmp_path / "landing", "jsonl", per_day=False)
    batch = read_landing_file(path)
    days = split_by_day(batch.table)
    reference = batch.table.to_pandas()
    expected = {
        str(day): list(group["request_id"])
        for day, group in reference.groupby(reference["timestamp"].dt.strftime("%Y-%m-%d"), sort=True)
    }
    assert {day: t.column("request_id").to_pylist() for day, t in days.items()} == expected
    assert list(days) == sorted(expected)
    in_order = split_by_day(pa.concat_tables(list(days.values())))
    assert all(t.column("request_id").to_pylist() == expected[d] for d, t in in_order.items())


def test_repeated_request_ids_over_many_parts_match_pandas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeats are found across the parts of a file (its blocks) as pandas finds them on the whole column."""
    rng = np.random.default_rng(8)
    ids = [f"r{int(i)}" for i in rng.integers(0, 400, 1500)]
    lines = [_line(i, request_id=request_id) for i, request_id in enumerate(ids)]
    file = tmp_path / "t.jsonl"
    file.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setattr(traffic, "_BLOCK_BYTES", 4096)
    batch = read_landing_file(file)
    column = pd.Series(ids)
    repeated = column.duplicated(keep="first")
    first_line = {request_id: line for line, request_id in reversed(list(enumerate(ids, start=1)))}
    assert batch.table.column("request_id").to_pylist() == list(column[~repeated])
    assert {q.row: q.reason for q in batch.quarantined} == {
        line: f"request_id: duplicate of row {first_line[ids[line - 1]]}"
        for line in np.flatnonzero(repeated.to_numpy()) + 1
    }
