"""Staging production traffic: each source (a landing file or a database batch) is parsed once.

A `stage_traffic` run hands its source to `stage_file` (a landing file, read a part at a time) or
`stage_source` (a database batch), which validate it and write its valid rows split by UTC day,
plus its quarantined rows, under ``<staging>/<source id>/``:

    <day>.parquet       the source's valid rows of that day (TRAFFIC_SCHEMA)
    quarantine.jsonl    rows that broke the schema, with the reason (only when there are any)
    source.json         written last: what was staged (days, counts, whole-source error)

A source id names content, not a location: a landing file's id is its name plus a digest of its
bytes, so the same file seen again (a restart, a copy) stages nothing new, and a file rewritten with
other content is a new source. A database batch's id is its table and primary-key range; the table
must be append-only for that to hold. `source.json` makes staging idempotent: once it exists, the
source is staged and staging it again only reads it back.

The `monitoring/traffic` asset of a day is rebuilt from every staged part of that day by
`assemble_day` (first occurrence of a request id wins, in staging order), so re-materialising a day
is deterministic and a source staged twice cannot duplicate rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from governance_assets.lib.core.storage import atomic_path, parquet_writer, safe_component
from governance_assets.lib.monitoring.traffic import (
    FIELDS,
    TRAFFIC_SCHEMA,
    ParsedBatch,
    QuarantinedRow,
    empty_table,
    read_landing_file,
    split_by_day,
    write_quarantine,
)

SOURCE_FILE = "source.json"
QUARANTINE_FILE = "quarantine.jsonl"
_READ_BLOCK = 1 << 20
_BUFFER_BYTES = 64 << 20  # rows held before they are written (a row group per day)


@dataclass(frozen=True)
class StagedSource:
    """What one staged source contributed."""

    source_id: str
    source: str
    """The file path, or the database URL (password hidden) and table."""
    staged_at: str
    days: dict[str, int]
    """Valid rows per UTC day."""
    quarantined: int
    error: str | None
    """Set when the whole source was unreadable (nothing staged from it)."""

    @property
    def rows(self) -> int:
        return sum(self.days.values())


@dataclass(frozen=True)
class AssembledDay:
    """A day's traffic rebuilt from its staged parts."""

    table: pa.Table
    sources: list[StagedSource]
    duplicates: int
    """Rows dropped because an earlier row (same or earlier source) had their request id."""


def file_source_id(path: Path) -> str:
    """`<file name>-<xxh64 of its bytes>`: the same content under the same name is the same source."""
    digest = xxhash.xxh64()
    with path.open("rb") as file:
        while block := file.read(_READ_BLOCK):
            digest.update(block)
    return safe_component(f"{path.name}-{digest.hexdigest()}", "source id")


def read_staged(staging: Path, source_id: str) -> StagedSource | None:
    """The record of a staged source, or None when it has not been staged (completely)."""
    path = staging / safe_component(source_id, "source id") / SOURCE_FILE
    if not path.exists():
        return None
    return StagedSource(**json.loads(path.read_text("utf-8")))


def _outside_partitions(table: pa.Table, first_day: date, last_day: date) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Rows whose UTC day lies outside [first_day, last_day] as (row index, reason), and the rest."""
    stamps = table.column("timestamp")
    low = pa.scalar(datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC), stamps.type)
    after = date.fromordinal(last_day.toordinal() + 1)
    high = pa.scalar(datetime(after.year, after.month, after.day, tzinfo=UTC), stamps.type)
    early = pc.less(stamps, low).to_numpy(zero_copy_only=False)
    late = pc.greater_equal(stamps, high).to_numpy(zero_copy_only=False)
    if not (early.any() or late.any()):
        return table, []  # the usual case: no copy of the rows
    problems = [(int(i), f"timestamp is before the first accepted day ({first_day})") for i in early.nonzero()[0]]
    problems += [(int(i), f"timestamp is after the last daily partition ({last_day})") for i in late.nonzero()[0]]
    return table.filter(pa.array(~(early | late))), sorted(problems)


def stage_file(staging: Path, path: Path, first_day: date, last_day: date) -> tuple[StagedSource, bool]:
    """Stage landing file `path` unless its content already is; returns the record and whether it is new.

    The file is read a part at a time and its rows written by day as they come (`DayFiles`): a
    large file is never held whole."""
    source_id = file_source_id(path)
    staged = read_staged(staging, source_id)
    if staged is not None:
        return staged, False
    with DayFiles(staging / source_id, first_day, last_day, str(path)) as days:
        batch = read_landing_file(path, sink=days)
        return _record(staging, source_id, batch, days), True


def stage_source(
    staging: Path, source_id: str, batch: ParsedBatch, first_day: date, last_day: date
) -> tuple[StagedSource, bool]:
    """Stage `batch` (a database batch, or a file read whole) as `source_id` unless it already is;
    returns the record and whether it is new."""
    staged = read_staged(staging, source_id)
    if staged is not None:
        return staged, False
    with DayFiles(staging / safe_component(source_id, "source id"), first_day, last_day, batch.source) as days:
        if batch.error is None:
            days(batch.table)
        return _record(staging, source_id, batch, days), True


class StagingWriteError(Exception):
    """The staged rows could not be written (a full or failing disk); the source is not rejected."""


class DayFiles:
    """A source's valid rows written by UTC day as they come, one Parquet file a day (temporary
    files, renamed by `commit`, removed if it is not called). Rows outside the daily partitions
    [first_day, last_day] are quarantined with the reason, as row 0: their line is no longer known
    after validation; `raw` holds the parsed row."""

    def __init__(self, folder: Path, first_day: date, last_day: date, source: str) -> None:
        self.folder, self.first_day, self.last_day, self.source = folder, first_day, last_day, source
        self.rows: dict[str, int] = {}
        self.outside: list[QuarantinedRow] = []
        self._buffered: dict[str, list[pa.Table]] = {}
        self._buffered_bytes = 0
        self._writers: dict[str, pq.ParquetWriter] = {}

    def __enter__(self) -> DayFiles:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def __call__(self, table: pa.Table) -> None:
        try:
            self._take(table)
        except OSError as error:  # not the source's fault: raised, so that the run fails and is retried
            raise StagingWriteError(f"writing {self.folder}: {error}") from error

    def _take(self, table: pa.Table) -> None:
        kept, outside = _outside_partitions(table, self.first_day, self.last_day)
        self.outside += [
            QuarantinedRow(self.source, 0, reason, json.dumps(_row(table, i), default=str, ensure_ascii=False))
            for i, reason in outside
        ]
        for day, rows in split_by_day(kept).items():
            self.rows[day] = self.rows.get(day, 0) + rows.num_rows
            self._buffered.setdefault(day, []).append(rows)
        self._buffered_bytes += kept.nbytes
        if self._buffered_bytes > _BUFFER_BYTES:
            self._flush()

    def _temporary(self, day: str) -> Path:
        return self.folder / f".{day}.parquet.tmp"

    def _flush(self) -> None:
        for day, tables in self._buffered.items():
            if day not in self._writers:
                self._writers[day] = parquet_writer(self._temporary(day), TRAFFIC_SCHEMA)
            self._writers[day].write_table(pa.concat_tables(tables))
        self._buffered, self._buffered_bytes = {}, 0

    def commit(self) -> dict[str, int]:
        """Write what is left and put each day's file in place; the rows per day."""
        self._flush()
        for day, writer in self._writers.items():
            writer.close()
            self._temporary(day).replace(self.folder / f"{day}.parquet")
        self._writers = {}
        return dict(sorted(self.rows.items()))

    def __exit__(self, *_: object) -> None:
        for day, writer in self._writers.items():
            writer.close()
            self._temporary(day).unlink(missing_ok=True)


def _record(staging: Path, source_id: str, batch: ParsedBatch, days: DayFiles) -> StagedSource:
    """Put the source's day files (none if it was unreadable) and quarantine in place, then its record."""
    rows = days.commit() if batch.error is None else {}
    quarantined = list(batch.quarantined) + days.outside
    (days.folder / QUARANTINE_FILE).unlink(missing_ok=True)  # left by an attempt that did not finish
    write_quarantine(days.folder / QUARANTINE_FILE, quarantined)
    staged = StagedSource(
        source_id=source_id,
        source=batch.source,
        staged_at=datetime.now(UTC).isoformat(timespec="microseconds"),
        days=rows,
        quarantined=len(quarantined),
        error=batch.error,
    )
    with atomic_path(days.folder / SOURCE_FILE) as tmp:
        tmp.write_text(json.dumps(asdict(staged), indent=2, sort_keys=True), "utf-8")
    return staged


def _row(table: pa.Table, index: int) -> dict[str, Any]:
    return dict(table.slice(index, 1).to_pylist()[0])


def staged_sources(staging: Path) -> list[StagedSource]:
    """Every completely staged source, in staging order."""
    if not staging.exists():
        return []
    records = [read_staged(staging, folder.name) for folder in staging.iterdir() if folder.is_dir()]
    return sorted((r for r in records if r is not None), key=lambda r: (r.staged_at, r.source_id))


def assemble_day(staging: Path, day: str) -> AssembledDay:
    """The day's rows from every staged source, in staging order, without repeated request ids."""
    sources = [s for s in staged_sources(staging) if day in s.days]
    parts = [pq.read_table(staging / s.source_id / f"{day}.parquet", schema=TRAFFIC_SCHEMA) for s in sources]
    if not parts:
        return AssembledDay(empty_table(), [], 0)
    table = pa.concat_tables(parts).select(list(FIELDS))
    keep = _first_occurrences(table.column("request_id"))
    return AssembledDay(table.filter(pa.array(keep)), sources, int(table.num_rows - keep.sum()))


def _first_occurrences(ids: pa.ChunkedArray) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Whether each row holds the first occurrence of its id (pyarrow's dictionary codes count up
    from 0 in order of first occurrence)."""
    codes = np.concatenate([c.indices.to_numpy() for c in ids.dictionary_encode().chunks] or [np.zeros(0, np.int32)])
    if len(codes) == 0:
        return np.zeros(0, dtype=bool)
    return np.concatenate(([True], codes[1:] > np.maximum.accumulate(codes)[:-1]))


def quarantined_rows(staging: Path, sources: list[StagedSource]) -> list[dict[str, Any]]:
    """The quarantined rows of `sources`, each with its source, row, reason and raw text."""
    rows: list[dict[str, Any]] = []
    for source in sources:
        path = staging / source.source_id / QUARANTINE_FILE
        if path.exists():
            rows += [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return rows
