"""Production traffic: reading landing files and database rows, validating them, daily partitions.

A serving system drops files into ``GOVERNANCE_HOME/landing/traffic/`` (JSON Lines ``.jsonl``/``.json``,
``.csv`` or ``.parquet``) and/or inserts rows into a database table. Each record must follow this schema
(`TRAFFIC_SCHEMA`); rows that break it are quarantined with a reason, never silently dropped.

=====================  ==========================================================================
field                  rule
=====================  ==========================================================================
``timestamp``          required; ISO-8601 string with a time (``2026-11-27T10:00:00Z``, ``…+05:30``)
                       or a time-zone-aware timestamp (Parquet, database); stored in UTC with
                       microsecond precision (finer digits are truncated). Naive timestamps are
                       rejected (``has no time zone``).
``model``              required non-empty string.
``request_id``         required non-empty string, unique within a file or batch: a later row with
                       the id of an earlier valid row is quarantined (``duplicate of row N``).
``prompt``             required non-empty string.
``completion``         required string, may be empty.
``latency_ms``         required finite number ≥ 0 (float).
``prompt_tokens``      required integer ≥ 0 (an integral float such as ``10.0`` is accepted).
``completion_tokens``  required integer ≥ 0.
``feedback``           optional number in [-1, 1] or null (e.g. thumbs up/down as 1/-1).
``metadata``           optional JSON object (language, user segment …), stored as a compact JSON
                       string with sorted keys. In JSON Lines it is an object; in CSV, Parquet and
                       database rows it is a string holding a JSON object.
=====================  ==========================================================================

The schema is strict: an unknown top-level field is not folded into ``metadata`` but rejected
(``unknown field 'foo'``), so that a renamed or misspelt field is noticed instead of silently
changing meaning. In JSON Lines this quarantines the row; in CSV, Parquet and database tables,
where columns are shared by all rows, an unknown or missing required column is a whole-file error.
JSON types are strict too: ``"10"`` (a string) is not an integer and ``true`` is not a number.
In CSV every cell is text: an empty numeric cell is missing, an empty ``feedback``/``metadata`` is null.

Row numbers in `QuarantinedRow` are 1-based: the line number in JSON Lines (blank lines are skipped
but counted), the data record number in CSV and Parquet (the header is not counted), and the
primary key ``id`` for database rows. ``raw`` is the original line for JSON Lines, the record
re-encoded as CSV for CSV, and the row as JSON for Parquet and database rows (clipped to 2 kB).

Validation is columnar (pyarrow compute and pandas). JSON Lines are read in blocks of whole lines:
`pyarrow.json.read_json` reads a block (the fields' types given, ``metadata`` inferred), unless its
reading could differ from orjson's (see `_arrow_block`); such a block is read line by line by
orjson, the reference. Both ways give the same rows, reasons and ``raw`` texts (tested line by line).
Landing files should be written atomically (temporary file and rename, see
`traffic_generator.write_landing_files`); readers should skip names starting with ``.``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pj
import pyarrow.parquet as pq

from governance_assets.lib.core.database import read_id_range
from governance_assets.lib.core.storage import atomic_path

TRAFFIC_SCHEMA = pa.schema(
    [
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),
        pa.field("completion_tokens", pa.int64(), nullable=False),
        pa.field("feedback", pa.float64(), nullable=True),
        pa.field("metadata", pa.string(), nullable=True),
    ]
)
_LOOSE = pa.schema([f.with_nullable(True) for f in TRAFFIC_SCHEMA])  # with placeholders of bad rows
FIELDS: tuple[str, ...] = tuple(TRAFFIC_SCHEMA.names)
REQUIRED: frozenset[str] = frozenset(f.name for f in TRAFFIC_SCHEMA if not f.nullable)
RAW_LIMIT = 2048
TRAFFIC_KEY: tuple[str, ...] = ("monitoring", "traffic")

Kind = Literal["timestamp", "str", "nonempty_str", "float", "int", "metadata"]
_KINDS: dict[str, Kind] = {
    "timestamp": "timestamp",
    "model": "nonempty_str",
    "request_id": "nonempty_str",
    "prompt": "nonempty_str",
    "completion": "str",
    "latency_ms": "float",
    "prompt_tokens": "int",
    "completion_tokens": "int",
    "feedback": "float",
    "metadata": "metadata",
}
_JSON_NUMBERS = tuple(name for name, kind in _KINDS.items() if kind in ("float", "int"))
_JSON_PARSE = pj.ParseOptions(  # metadata and unknown fields inferred; token counts as floats (10.0)
    explicit_schema=pa.schema(
        [(name, pa.float64() if name in _JSON_NUMBERS else pa.string()) for name in FIELDS if name != "metadata"]
    ),
    unexpected_field_behavior="infer",
)
_JSON_READ = pj.ReadOptions(block_size=1 << 20)  # pyarrow's own blocks, read on its threads
_MISSING: Any = object()  # a JSON key that is absent
_BLOCK_BYTES = 16 << 20  # JSON Lines are read in blocks of about this size (whole lines)
_TIME = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?"
_AWARE = f"^{_TIME}(Z|z|[+-]\\d{{2}}(:?\\d{{2}})?)$"
_NAIVE = "^\\d{4}-\\d{2}-\\d{2}([T ]\\d{2}:\\d{2}(:\\d{2}(\\.\\d+)?)?)?$"
_FLOAT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_INT = r"^[+-]?\d{1,18}(\.0*)?$"
_US_PER_DAY = 86_400_000_000
_PANDAS_SAFE = np.array(["1678-01-02", "2261-12-30"], dtype="datetime64[us]")  # well in pandas' nanosecond range
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class QuarantinedRow:
    """A row that broke the schema: where it came from, why, and its original text (clipped)."""

    source: str
    row: int
    reason: str
    raw: str


@dataclass(frozen=True)
class ParsedBatch:
    """The valid rows of one file or database batch (`TRAFFIC_SCHEMA`) and the quarantined ones.

    `error` is set, with an empty table and no quarantined rows, when the whole source is unreadable."""

    source: str
    table: pa.Table
    quarantined: list[QuarantinedRow]
    error: str | None


def empty_table() -> pa.Table:
    """A table with no rows in `TRAFFIC_SCHEMA`."""
    return TRAFFIC_SCHEMA.empty_table()


def canonical_metadata(value: dict[str, Any]) -> str:
    """The stored form of a metadata object: compact JSON with sorted keys."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _clip(text: str) -> str:
    return text if len(text) <= RAW_LIMIT else text[: RAW_LIMIT - 1] + "…"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


def _failed(source: str, error: str) -> ParsedBatch:
    return ParsedBatch(source, empty_table(), [], f"{source}: {error}")


# --- column conversion -------------------------------------------------------------------------
# Each converter returns an array of the field's type (placeholder values where rows are bad) and
# the reasons of the bad rows by position.

Reasons = dict[int, str]


def _add(reasons: Reasons, mask: np.ndarray[Any, Any], message: Callable[[int], str]) -> None:
    for i in np.flatnonzero(mask).tolist():
        reasons.setdefault(i, message(i))


def _mask(array: pa.Array) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """A boolean array (nulls as False) as numpy."""
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _text(field: str, kind: Kind, array: pa.Array, nullable: bool) -> tuple[pa.Array, Reasons]:
    """Convert a string column (CSV cells, JSON timestamps, Parquet string columns)."""
    reasons: Reasons = {}
    values = array.cast(pa.string())
    if values.null_count and not nullable:
        _add(reasons, _mask(pc.is_null(values)), lambda _: f"{field}: null")
    if kind in ("str", "nonempty_str"):
        if kind == "nonempty_str":
            _add(reasons, _mask(pc.equal(pc.utf8_length(values), 0)), lambda _: f"{field}: empty")
        return pc.fill_null(values, ""), reasons
    trimmed = pc.utf8_trim_whitespace(values)
    blank = _mask(pc.fill_null(pc.equal(trimmed, ""), True))
    if kind == "metadata":
        texts = values.to_pylist()
        out: list[str | None] = [None] * len(values)
        for i in np.flatnonzero(~blank).tolist():
            out[i], problem = _metadata_from_text(texts[i])
            if problem:
                reasons[i] = f"{field}: {problem}"
        return pa.array(out, pa.string()), reasons
    if blank.any() and not nullable:
        _add(reasons, blank, lambda _: f"{field}: missing")
    if kind == "timestamp":
        return _timestamps_text(field, trimmed, blank, reasons)
    pattern, problem, target = (
        (_FLOAT, "is not a number", pa.float64()) if kind == "float" else (_INT, "is not an integer", pa.int64())
    )
    ok = _mask(pc.match_substring_regex(trimmed, pattern))
    bad = ~ok & ~blank
    raw = trimmed.to_pylist() if bad.any() else []
    _add(reasons, bad, lambda i: f"{field}: {_show(raw[i])} {problem}")
    cleaned = pc.if_else(pa.array(ok), trimmed, pa.scalar(None, pa.string()))
    if kind == "int":
        cleaned = pc.replace_substring_regex(cleaned, r"\.0*$", "")
    return _numeric_checks(field, cleaned.cast(target), reasons)


def _timestamps_text(
    field: str, trimmed: pa.Array, blank: np.ndarray[Any, Any], reasons: Reasons
) -> tuple[pa.Array, Reasons]:
    aware = _mask(pc.match_substring_regex(trimmed, _AWARE))
    other = ~aware & ~blank
    if other.any():
        naive = _mask(pc.match_substring_regex(trimmed, _NAIVE))
        shown = trimmed.to_pylist()
        _add(reasons, other & naive, lambda i: f"{field}: {_show(shown[i])} has no time zone")
        _add(reasons, other & ~naive, lambda i: f"{field}: {_show(shown[i])} is not an ISO-8601 timestamp")
    result = np.zeros(len(trimmed), dtype="datetime64[us]")
    if aware.any():
        stamps = _aware_stamps(trimmed.filter(pa.array(aware)))
        invalid = np.isnat(stamps)
        if invalid.any():
            for i in np.flatnonzero(aware)[invalid].tolist():
                reasons[i] = f"{field}: {_show(trimmed[i].as_py())} is not a valid date and time"
            stamps[invalid] = np.datetime64(0, "us")
        result[aware] = stamps
    return pa.array(result, type=pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")), reasons


def _aware_stamps(texts: pa.Array) -> np.ndarray[Any, np.dtype[np.datetime64]]:
    """The UTC times of ISO-8601 texts with a time zone as pandas reads them, NaT where invalid.

    pyarrow reads them the same way, much faster, when it reads them all (no more than six digits
    after the second, valid dates and times) and they are far from the limits of pandas' nanoseconds."""
    try:
        micros = texts.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    except pa.ArrowInvalid:
        pass
    else:
        stamps = np.asarray(micros, dtype=np.int64).astype("datetime64[us]")
        if stamps.min() >= _PANDAS_SAFE[0] and stamps.max() <= _PANDAS_SAFE[1]:
            return stamps
    subset = texts.to_numpy(zero_copy_only=False)
    parsed = pd.to_datetime(pd.Series(subset, dtype=object), format="ISO8601", utc=True, errors="coerce")
    return np.asarray(parsed.dt.tz_localize(None).to_numpy().astype("datetime64[us]"))


def _metadata_from_text(text: str) -> tuple[str | None, str | None]:
    """The canonical metadata of a JSON text, or a problem."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None, f"{_show(text)} is not JSON"
    if isinstance(obj, dict):
        return canonical_metadata(obj), None
    return None, f"{_show(obj)} is not a JSON object"


def _numeric_checks(field: str, values: pa.Array, reasons: Reasons) -> tuple[pa.Array, Reasons]:
    """Range checks shared by all sources; nulls in `values` are rows already judged."""
    numbers = values.to_numpy(zero_copy_only=False).astype(float)

    def shown(i: int) -> str:
        return repr(values[i].as_py())

    if pa.types.is_floating(values.type):
        _add(reasons, _mask(pc.is_nan(values)), lambda _: f"{field}: NaN is not a number")
        _add(reasons, _mask(pc.is_inf(values)), lambda i: f"{field}: {shown(i)} is not finite")
    with np.errstate(invalid="ignore"):
        if field == "feedback":
            out = (numbers < -1) | (numbers > 1)
            _add(reasons, out & np.isfinite(numbers), lambda i: f"{field}: {shown(i)} is outside [-1, 1]")
        else:
            _add(reasons, numbers < 0, lambda i: f"{field}: {shown(i)} is negative")
    return values, reasons


def _python(field: str, kind: Kind, values: list[Any], nullable: bool, json_metadata: bool) -> tuple[pa.Array, Reasons]:
    """Convert Python values (decoded JSON, database rows, odd Parquet columns)."""
    if kind == "metadata":
        return _python_metadata(field, values, json_metadata)
    if kind in ("str", "nonempty_str", "timestamp"):
        try:
            strings = pa.array(values, pa.string())  # fast path: all strings (or None)
            reasons: Reasons = {}
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            strings, reasons = _python_strings(field, kind, values)
        converted, more = _text(field, kind, strings, nullable)
        return converted, {**more, **reasons}  # a value judged here is null for `_text`
    target = pa.float64() if kind == "float" else pa.int64()
    accepted = (pa.int64(), pa.float64(), pa.null()) if kind == "float" else (pa.int64(), pa.null())
    try:
        inferred = pa.array(values)
        if inferred.type not in accepted or (not nullable and inferred.null_count):
            raise pa.ArrowInvalid("needs a closer look")
        if inferred.type == pa.float64() and any(type(v) is bool for v in values):
            raise pa.ArrowInvalid("booleans after a float became numbers")
        return _numeric_checks(field, inferred.cast(target), {})
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    if not json_metadata and all(v is None or isinstance(v, str) for v in values):
        return _text(field, kind, pa.array(values, pa.string()), nullable)  # a text column of a database
    reasons = {}
    cleaned: list[Any] = []
    for i, value in enumerate(values):
        problem = _number_problem(kind, value, nullable)
        if problem:
            reasons[i] = f"{field}: {problem}"
            cleaned.append(None)
        else:
            cleaned.append(value if value is None or kind == "float" else int(value))
    return _numeric_checks(field, pa.array(cleaned, target), reasons)


def _number_problem(kind: Kind, value: Any, nullable: bool) -> str | None:
    if value is _MISSING:
        return None if nullable else "missing"
    if value is None:
        return None if nullable else "null"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{_show(value)} is not {'a number' if kind == 'float' else 'an integer'}"
    if kind == "int" and ((isinstance(value, float) and not value.is_integer()) or abs(value) >= 2**63):
        return f"{_show(value)} is not an integer"
    return None


def _python_strings(field: str, kind: Kind, values: list[Any]) -> tuple[pa.Array, Reasons]:
    reasons: Reasons = {}
    strings: list[str | None] = []
    for i, value in enumerate(values):
        if isinstance(value, str):
            strings.append(value)
            continue
        strings.append(None)
        if value is _MISSING:
            reasons[i] = f"{field}: missing"
        elif value is None:
            reasons[i] = f"{field}: null"
        elif kind == "timestamp" and isinstance(value, datetime):
            if value.tzinfo is None or value.utcoffset() is None:
                reasons[i] = f"{field}: {_show(value.isoformat())} has no time zone"
            else:
                strings[-1] = value.isoformat()
        else:
            reasons[i] = f"{field}: {_show(value)} is not a string"
    return pa.array(strings, pa.string()), reasons


def _python_metadata(field: str, values: list[Any], json_metadata: bool) -> tuple[pa.Array, Reasons]:
    reasons: Reasons = {}
    out: list[str | None] = []
    for i, value in enumerate(values):
        if value is None or value is _MISSING:
            out.append(None)
        elif isinstance(value, dict):
            out.append(canonical_metadata(value))
        elif isinstance(value, str) and not json_metadata:
            canonical, problem = _metadata_from_text(value) if value.strip() else (None, None)
            out.append(canonical)
            if problem:
                reasons[i] = f"{field}: {problem}"
        else:
            out.append(None)
            reasons[i] = f"{field}: {_show(value)} is not a JSON object"
    return pa.array(out, pa.string()), reasons


def _arrow(field: str, kind: Kind, column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, Reasons]:
    """Convert a typed column (Parquet); unusual types go through Python values."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    nullable = TRAFFIC_SCHEMA.field(field).nullable
    t = array.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _text(field, kind, array, nullable)
    if kind == "timestamp" and pa.types.is_timestamp(t):
        if t.tz is None:
            reasons: Reasons = {}
            shown = array.to_pylist()
            _add(
                reasons, _mask(pc.is_valid(array)), lambda i: f"{field}: {_show(shown[i].isoformat())} has no time zone"
            )
            _add(reasons, _mask(pc.is_null(array)), lambda _: f"{field}: null")
            return pa.nulls(len(array), pa.timestamp("us", tz="UTC")), reasons
        converted = pc.cast(array, pa.timestamp("us", tz="UTC"), safe=False)
        return converted, _nulls(field, converted)
    numeric_ok = (kind == "float" and (pa.types.is_integer(t) or pa.types.is_floating(t))) or (
        kind == "int" and pa.types.is_integer(t)
    )
    if numeric_ok:
        try:
            converted = array.cast(pa.float64() if kind == "float" else pa.int64())
        except pa.ArrowInvalid:
            pass
        else:
            return _numeric_checks(field, converted, {} if nullable else _nulls(field, converted))
    return _python(field, kind, array.to_pylist(), nullable, json_metadata=False)


def _nulls(field: str, array: pa.Array) -> Reasons:
    reasons: Reasons = {}
    if array.null_count:
        _add(reasons, _mask(pc.is_null(array)), lambda _: f"{field}: null")
    return reasons


# --- assembling a batch ------------------------------------------------------------------------


@dataclass
class _Part:
    """Converted columns of some rows, their row numbers, and the reasons of bad rows."""

    columns: dict[str, pa.Array]
    rows: np.ndarray[Any, np.dtype[np.int64]]
    reasons: dict[int, list[str]]


def _convert(
    columns: dict[str, Callable[[], tuple[pa.Array, Reasons]]], rows: Sequence[int], extra: dict[int, list[str]]
) -> _Part:
    reasons: dict[int, list[str]] = {i: list(r) for i, r in extra.items()}
    converted: dict[str, pa.Array] = {}
    for name in FIELDS:
        converted[name], found = columns[name]()
        for i, reason in sorted(found.items()):
            reasons.setdefault(i, []).append(reason)
    return _Part(converted, np.asarray(rows, dtype=np.int64), reasons)


RowSink = Callable[[pa.Table], None]
"""Takes a source's valid rows (`TRAFFIC_SCHEMA`) a part at a time, in source order."""


def _finish(
    source: str,
    parts: Iterable[_Part],
    quarantined: list[QuarantinedRow],
    raw: Callable[[int, int], str],
    sink: RowSink | None = None,
) -> ParsedBatch:
    """Quarantine the bad rows and the repeated request ids of the parts, in order; `raw(part,
    position)` gives a row's text. The valid rows go to `sink` as each part is done (the batch's
    table is then empty), or else into the batch's table."""
    seen = _SeenIds()
    tables: list[pa.Table] = []
    for p, part in enumerate(parts):
        good = np.ones(len(part.rows), dtype=bool)
        for i, reasons in part.reasons.items():
            good[i] = False
            quarantined.append(QuarantinedRow(source, int(part.rows[i]), "; ".join(reasons), _clip(raw(p, i))))
        for i, first_row in seen.repeats(part.columns["request_id"], part.rows, good).items():
            good[i] = False
            reason = f"request_id: duplicate of row {first_row}"
            quarantined.append(QuarantinedRow(source, int(part.rows[i]), reason, _clip(raw(p, i))))
        table = pa.Table.from_arrays([part.columns[n] for n in FIELDS], schema=_LOOSE)
        table = (table if good.all() else table.filter(pa.array(good))).cast(TRAFFIC_SCHEMA)
        if sink is None:
            tables.append(table)
        else:
            sink(table)
    quarantined.sort(key=lambda q: q.row)
    return ParsedBatch(source, pa.concat_tables(tables) if tables else empty_table(), quarantined, None)


class _SeenIds:
    """The request ids of the rows kept so far, each with its row number."""

    def __init__(self) -> None:
        self.first_row: dict[str, int] = {}

    def repeats(self, ids: pa.Array, rows: np.ndarray[Any, Any], good: np.ndarray[Any, Any]) -> dict[int, int]:
        """Position → row number of the first row with its id, for the `good` positions whose id is
        that of an earlier kept row (in an earlier part or this one); the others are kept."""
        positions = np.flatnonzero(good)
        kept_ids = ids if len(positions) == len(ids) else ids.filter(pa.array(good))
        found = {}
        first_row = self.first_row
        for position, request_id, row in zip(
            positions.tolist(), kept_ids.to_pylist(), rows[positions].tolist(), strict=True
        ):
            earlier = first_row.setdefault(request_id, row)
            if earlier != row:
                found[position] = earlier
        return found


def _row_json(table: pa.Table, i: int) -> str:
    return json.dumps(table.slice(i, 1).to_pylist()[0], default=str, ensure_ascii=False)


# --- readers -----------------------------------------------------------------------------------


def read_landing_file(path: Path, sink: RowSink | None = None) -> ParsedBatch:
    """Read and validate one landing file: `.jsonl`/`.json` (JSON Lines), `.csv` or `.parquet`.

    Never raises for bad content: a whole-file problem is reported in `ParsedBatch.error`. With
    `sink`, the valid rows go to it as they are read instead of into the batch's table (a JSON Lines
    file is then never held whole); after an error, what it took is to be thrown away."""
    source = str(path)
    suffix = path.suffix.lower()
    readers: dict[str, Callable[[Path, str, RowSink | None], ParsedBatch]] = {
        ".jsonl": _read_jsonl,
        ".json": _read_jsonl,
        ".csv": _read_csv,
        ".parquet": _read_parquet,
    }
    reader = readers.get(suffix)
    if reader is None:
        return _failed(
            source, f"unknown file type {suffix or '(no suffix)'!r}; expected .jsonl, .json, .csv or .parquet"
        )
    try:
        return reader(path, source, sink)
    except OSError as error:
        return _failed(source, f"cannot read: {error}")


def _read_jsonl(path: Path, source: str, sink: RowSink | None) -> ParsedBatch:
    with path.open("rb") as file:
        offset = 3 if file.read(3) == b"\xef\xbb\xbf" else 0  # skip a byte order mark
        file.seek(offset)
        reader = _JsonLines(source, offset)

        def parts() -> Iterator[_Part]:
            while block := file.read(_BLOCK_BYTES) + file.readline():
                part = reader.read(block)
                if reader.error:
                    return
                if part is not None:
                    yield part

        def raw(p: int, i: int) -> str:
            resume = file.tell()
            file.seek(int(reader.offsets[p][i]))
            line = file.readline()
            file.seek(resume)
            return line.decode("utf-8", "replace").rstrip("\r\n")

        batch = _finish(source, parts(), reader.quarantined, raw, sink)
        return _failed(source, reader.error) if reader.error else batch


class _JsonLines:
    """A JSON Lines file read block by block: the file offsets of the rows' lines of each part so far."""

    def __init__(self, source: str, offset: int) -> None:
        self.source = source
        self.offset = offset  # in the file, of the next line
        self.line = 1  # number of the next line
        self.offsets: list[np.ndarray[Any, np.dtype[np.int64]]] = []
        self.quarantined: list[QuarantinedRow] = []
        self.error: str | None = None
        """Why the whole file is unreadable, once found."""

    def read(self, block: bytes) -> _Part | None:
        """A block of whole lines as pyarrow reads it, or else as orjson reads each line (None if no
        line holds an object, or if the whole file is found unreadable: `error`)."""
        starts = _line_starts(block)
        part = None if starts is None else _arrow_block(block, len(starts))
        if part is None or starts is None:
            return self._by_line(block)
        part.rows += self.line - 1
        self.offsets.append(starts + self.offset)
        self.offset += len(block)
        self.line += len(starts)
        return part

    def _by_line(self, block: bytes) -> _Part | None:
        """Parse line by line with orjson, the reference behaviour."""
        objects: list[dict[str, Any]] = []
        numbers: list[int] = []
        offsets: list[int] = []
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        for line in io.BytesIO(block):
            number, offset = self.line, self.offset
            self.line += 1
            self.offset += len(line)
            try:
                obj = loads(line)
            except decode_error as error:
                whole, reason = _line_problem(line, number, error)
                if whole:
                    self.error = reason
                    return None
                if reason:
                    self._quarantine(number, reason, line)
                continue
            if type(obj) is dict:
                objects.append(obj)
                numbers.append(number)
                offsets.append(offset)
            else:
                kind = "array" if isinstance(obj, list) else "string" if isinstance(obj, str) else "number or literal"
                self._quarantine(number, f"line is a JSON {kind}, not an object", line)
        if not objects:
            return None
        self.offsets.append(np.asarray(offsets, dtype=np.int64))
        return _json_part(objects, numbers, json_metadata=True)

    def _quarantine(self, number: int, reason: str, line: bytes) -> None:
        self.quarantined.append(QuarantinedRow(self.source, number, reason, _clip(line.decode().rstrip("\r\n"))))


def _line_starts(block: bytes) -> np.ndarray[Any, np.dtype[np.int64]] | None:
    """Where the lines of `block` start, if it is UTF-8 without NUL bytes and each line starts with
    ``{`` and ends with ``}`` (before an optional ``\\r``); else None (orjson reads it line by line).

    A line that ends with the ``}`` of a nested value cannot go on at a line starting with ``{``, so
    such lines hold whole objects: one each exactly when pyarrow reads as many rows as lines."""
    if b"\x00" in block:
        return None
    try:  # as one string, without a copy
        pa.StringArray.from_buffers(
            1, pa.array([0, len(block)], pa.int32()).buffers()[1], pa.py_buffer(block)
        ).validate(full=True)
    except pa.ArrowInvalid:
        return None
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    if not block.endswith(b"\n"):
        ends = np.append(ends, len(block))
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    last = ends - 1 - (data[ends - 1] == ord("\r"))
    if (last <= starts).any() or not ((data[starts] == ord("{")) & (data[last] == ord("}"))).all():
        return None
    return starts


def _arrow_block(block: bytes, lines: int) -> _Part | None:
    """The block's rows as pyarrow reads them (rows numbered from 1), or None where its reading could
    differ from orjson's: a parse error, another number of rows than lines, an unknown field, a
    required field missing or null, a number that is not finite, is -0 or is 2**53 or more (where the
    two may round differently), a fractional token count, or a metadata object that is not flat text
    (pyarrow's struct could not tell an absent key from a null one, nor 1 from 1.0)."""
    try:
        table = pj.read_json(pa.BufferReader(block), read_options=_JSON_READ, parse_options=_JSON_PARSE)
    except pa.ArrowInvalid:
        return None
    if table.num_rows != lines or not set(table.column_names) <= set(FIELDS):
        return None
    if any(table.column(name).null_count for name in REQUIRED):
        return None  # a missing field and a null one are both null here, but not the same mistake
    metadata = (
        _flat_metadata(table.column("metadata")) if "metadata" in table.column_names else pa.nulls(lines, pa.string())
    )
    if metadata is None:
        return None
    columns: dict[str, Callable[[], tuple[pa.Array, Reasons]]] = {"metadata": lambda: (metadata, {})}
    for name in FIELDS:
        kind = _KINDS[name]
        if kind in ("float", "int"):
            numbers = table.column(name).combine_chunks()
            x = numbers.drop_null().to_numpy()
            if not ((np.abs(x) < 2**53) & ~((x == 0) & np.signbit(x))).all():
                return None
            if kind == "int":
                if not (np.trunc(x) == x).all():
                    return None
                numbers = numbers.cast(pa.int64())
            columns[name] = partial(_numeric_checks, name, numbers, {})
        elif kind != "metadata":
            columns[name] = partial(_text, name, kind, table.column(name), name not in REQUIRED)
    return _convert(columns, range(1, lines + 1), {})


def _flat_metadata(column: pa.ChunkedArray) -> pa.Array | None:
    """Canonical metadata texts of a column pyarrow inferred, or None unless each value is null or an
    object whose members all hold strings (each distinct object is written once, by orjson)."""
    objects = column.combine_chunks()
    if pa.types.is_null(objects.type):
        return pa.nulls(len(objects), pa.string())
    if not pa.types.is_struct(objects.type):
        return None
    members = objects.flatten()  # the object's nulls carried into each member
    if any(not pa.types.is_string(m.type) or m.null_count != objects.null_count for m in members):
        return None  # a number, a nested value, or a key some objects lack (or hold null)
    present = np.flatnonzero(_mask(objects.is_valid()))
    encoded = [m.take(pa.array(present)).dictionary_encode() for m in members]
    codes = np.stack([e.indices.to_numpy() for e in encoded], axis=1) if encoded else np.zeros((len(present), 0))
    distinct, which = np.unique(codes, axis=0, return_inverse=True)
    names = [field.name for field in objects.type]
    texts = [
        canonical_metadata(
            {name: e.dictionary[int(code)].as_py() for name, e, code in zip(names, encoded, row, strict=True)}
        )
        for row in distinct.tolist()
    ]
    at = np.full(len(objects), -1)
    at[present] = np.asarray(which).reshape(-1)
    return pa.array(texts, pa.string()).take(pa.array(at, mask=at < 0))


def _line_problem(line: bytes, number: int, error: Exception) -> tuple[bool, str]:
    """(whole file unreadable?, reason) for a line orjson refused; reason "" for a blank line."""
    if b"\x00" in line:
        return True, f"line {number} contains NUL bytes; not a text file"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as bad:
        return True, f"not UTF-8 (line {number}, byte {bad.start}: {line[bad.start : bad.start + 1]!r})"
    return False, f"invalid JSON: {error}" if text.strip() else ""


def _json_part(objects: list[dict[str, Any]], numbers: Sequence[int], json_metadata: bool) -> _Part:
    extra: dict[int, list[str]] = {}
    if not set().union(*objects) <= set(FIELDS):
        for i, obj in enumerate(objects):
            unknown = [k for k in obj if k not in _KINDS]
            if unknown:
                extra[i] = [f"unknown field {k!r}" for k in unknown]

    def column(name: str) -> Callable[[], tuple[pa.Array, Reasons]]:
        def convert() -> tuple[pa.Array, Reasons]:
            nullable = TRAFFIC_SCHEMA.field(name).nullable
            values = [o.get(name) for o in objects] if nullable else [o.get(name, _MISSING) for o in objects]
            return _python(name, _KINDS[name], values, nullable, json_metadata)

        return convert

    return _convert({name: column(name) for name in FIELDS}, numbers, extra)


def _columns_error(names: Sequence[str], what: str) -> str | None:
    unknown = [n for n in names if n not in _KINDS]
    missing = [n for n in FIELDS if n in REQUIRED and n not in names]
    duplicated = sorted({n for n in names if list(names).count(n) > 1})
    problems = []
    if unknown:
        problems.append("unknown field" + "s" * (len(unknown) > 1) + " " + ", ".join(map(repr, unknown)))
    if missing:
        problems.append("missing required field" + "s" * (len(missing) > 1) + " " + ", ".join(map(repr, missing)))
    if duplicated:
        problems.append("repeated " + ", ".join(map(repr, duplicated)))
    return f"{what}: {'; '.join(problems)}" if problems else None


def _read_csv(path: Path, source: str, sink: RowSink | None) -> ParsedBatch:
    invalid: list[tuple[int, str, int]] = []

    def on_invalid(row: Any) -> Literal["skip"]:
        invalid.append((int(row.number) - 1, str(row.text), int(row.actual_columns)))
        return "skip"

    try:
        with path.open("rb") as file:
            header = file.readline()
        if not header.strip():
            return _failed(source, "empty file or empty first line; a CSV file needs a header")
        names = next(csv.reader([header.decode("utf-8-sig")]))
        error = _columns_error(names, "CSV header")
        if error:
            return _failed(source, error)
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(use_threads=False, encoding="utf8"),
            parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False
            ),
        )
    except UnicodeDecodeError as error:
        return _failed(source, f"not UTF-8 ({error})")
    except (pa.ArrowInvalid, ValueError) as error:
        return _failed(source, f"unreadable CSV: {error}")
    quarantined = [
        QuarantinedRow(source, number, f"row has {actual} fields, expected {len(names)}", _clip(text))
        for number, text, actual in invalid
    ]
    skipped = {number for number, _, _ in invalid}
    rows = [n for n in range(1, table.num_rows + len(skipped) + 1) if n not in skipped]

    def raw(_: int, i: int) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(table.slice(i, 1).to_pylist()[0].values())
        return out.getvalue()

    return _finish(source, [_table_part(table, rows)], quarantined, raw, sink)


def _table_part(table: pa.Table, rows: Sequence[int]) -> _Part:
    def column(name: str) -> Callable[[], tuple[pa.Array, Reasons]]:
        if name in table.column_names:
            return lambda: _arrow(name, _KINDS[name], table.column(name))
        return lambda: (pa.nulls(table.num_rows, TRAFFIC_SCHEMA.field(name).type), {})

    return _convert({name: column(name) for name in FIELDS}, rows, {})


def _read_parquet(path: Path, source: str, sink: RowSink | None) -> ParsedBatch:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, ValueError) as error:
        return _failed(source, f"unreadable Parquet: {error}")
    problem = _columns_error(table.column_names, "Parquet columns")
    if problem:
        return _failed(source, problem)
    parts = [_table_part(table, range(1, table.num_rows + 1))]
    return _finish(source, parts, [], lambda _, i: _row_json(table, i), sink)


def read_table_rows(url: str, table: str, after_id: int, up_to_id: int) -> ParsedBatch:
    """Rows of database `table` whose integer primary key `id` is in (`after_id`, `up_to_id`], by `id`.

    A table that lacks `id` or has the wrong columns is a whole-source error in the batch (the
    rows cannot be read until the table is fixed); a database that cannot be reached raises
    DatabaseUnreadable (password hidden), to be retried (see `lib/core/database.py`)."""
    rows = read_id_range(url, table, after_id, up_to_id)
    names, records = rows.columns, rows.records
    error = rows.error or _columns_error(names, f"table {table!r} columns")
    if error:
        return _failed(rows.source, error)
    if not records:
        return ParsedBatch(rows.source, empty_table(), [], None)

    def column(name: str) -> Callable[[], tuple[pa.Array, Reasons]]:
        def convert() -> tuple[pa.Array, Reasons]:
            nullable = TRAFFIC_SCHEMA.field(name).nullable
            if name not in names:
                return pa.nulls(len(records), TRAFFIC_SCHEMA.field(name).type), {}
            return _python(name, _KINDS[name], [r[name] for r in records], nullable, json_metadata=False)

        return convert

    part = _convert({name: column(name) for name in FIELDS}, rows.ids, {})
    return _finish(rows.source, [part], [], lambda _, i: json.dumps(records[i], default=str, ensure_ascii=False))


# --- daily partitions and quarantine -----------------------------------------------------------


def split_by_day(table: pa.Table) -> dict[str, pa.Table]:
    """Rows by UTC day, 'YYYY-MM-DD' → rows (in their order), days sorted.

    Rows already in day order (as a serving system writes them) are sliced without a copy;
    otherwise they are put in day order once (a stable sort) and sliced."""
    if table.num_rows == 0:
        return {}
    days = _days(table)
    if (np.diff(days) < 0).any():
        order = np.argsort(days, kind="stable")
        table, days = table.take(pa.array(order)), days[order]
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(days)) + 1, [days.size])).tolist()
    return {
        (_EPOCH + timedelta(days=int(days[start]))).isoformat(): table.slice(start, end - start)
        for start, end in pairwise(bounds)
    }


def _days(table: pa.Table) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Days since 1970-01-01 (UTC) of each row's timestamp."""
    micros = table.column("timestamp").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    return np.asarray(micros // _US_PER_DAY, dtype=np.int64)


def write_quarantine(path: Path, rows: Sequence[QuarantinedRow]) -> None:
    """Append `rows` to the JSON Lines file `path` (fields source, row, reason, raw); atomic per call."""
    if not rows:
        return
    old = path.read_bytes() if path.exists() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    new = b"".join(
        orjson.dumps({"source": r.source, "row": r.row, "reason": r.reason, "raw": r.raw}) + b"\n" for r in rows
    )
    with atomic_path(path) as tmp:
        tmp.write_bytes(old + new)
