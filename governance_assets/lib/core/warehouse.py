"""The Parquet warehouse: `warehouse/<asset key path>/<partition>.parquet`, readable without Dagster.

A table written with its Arrow cache also has a memory-mappable copy in
`.arrow_cache/<asset key path>/<partition>/`: Arrow IPC segment files and `layout.json`, which
lists the stretches of segment rows that make up the table. A rebuild that reuses most rows of
the cached table (`write_rebuilt`) writes only its new rows as a new segment; the segments are
compacted into one when they hold more dead rows than live ones, or become too many. A
dictionary-encoded column is cached twice: decoded, which readers map without copying, and
encoded (`<name>#dictionary`), which rebuilds reuse."""

from __future__ import annotations

import bisect
import itertools
import json
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from governance_assets.lib.core.storage import (
    path_within,
    safe_component,
    write_arrow_atomic,
    write_parquet_atomic,
    write_text_atomic,
)

ANNOTATION_PREFIX = "governance."
MAX_CACHE_SEGMENTS = 8

Piece = tuple[pa.Table, int, int]
"""Rows `offset : offset + length` of a table."""
Stretch = tuple[str, int, int]
"""Rows `offset : offset + length` of one cache segment file."""


@dataclass(frozen=True)
class Footer:
    """What a table's Parquet footer says without reading its rows."""

    annotations: dict[str, Any]
    rows: int


@dataclass(frozen=True)
class CachedTable:
    """A table read through its Arrow cache, and the segment stretches its rows come from."""

    table: pa.Table
    stretches: tuple[Stretch, ...]
    segment_rows: Mapping[str, int]
    """Rows in each segment file, live or not."""

    def locate(self, offset: int, length: int) -> list[Stretch]:
        """The segment stretches that hold rows `offset : offset + length` of `table`."""
        starts = list(itertools.accumulate((rows for _, _, rows in self.stretches), initial=0))
        found = []
        index = bisect.bisect_right(starts, offset) - 1
        end = offset + length
        while offset < end:
            segment, segment_offset, rows = self.stretches[index]
            taken = min(end, starts[index] + rows) - offset
            found.append((segment, segment_offset + offset - starts[index], taken))
            offset += taken
            index += 1
        return found


def joined(pieces: Sequence[Piece]) -> pa.Table:
    """One table of the rows of `pieces`, in order (zero-copy)."""
    return pa.concat_tables([table.slice(offset, rows) for table, offset, rows in pieces])


ENCODED_SUFFIX = "#dictionary"


def _for_cache(table: pa.Table, encoded_columns: Sequence[str]) -> pa.Table:
    """`table` as cached: its dictionary-encoded `encoded_columns` decoded in place, each
    encoding appended as `<name>#dictionary`."""
    if not encoded_columns:
        return table
    table = table.unify_dictionaries()  # the IPC file format allows one dictionary per column
    cached = table
    for name in encoded_columns:
        column = table[name]
        cached = cached.set_column(cached.schema.get_field_index(name), name, column.cast(column.type.value_type))
        cached = cached.append_column(f"{name}{ENCODED_SUFFIX}", column)
    return cached


def _from_cache(table: pa.Table, encoded_columns: Sequence[str], encoded: bool) -> pa.Table:
    """A cached table with its `encoded_columns` dictionary-encoded, as written, or decoded
    (zero-copy either way)."""
    extras = [f"{name}{ENCODED_SUFFIX}" for name in encoded_columns]
    if encoded:
        for name, extra in zip(encoded_columns, extras, strict=True):
            table = table.set_column(table.schema.get_field_index(name), name, table[extra])
    return table.drop_columns(extras)


def _merged(stretches: Sequence[Stretch]) -> list[Stretch]:
    """Adjacent stretches of one segment joined into one."""
    merged: list[Stretch] = []
    for segment, offset, rows in stretches:
        if merged and merged[-1][0] == segment and merged[-1][1] + merged[-1][2] == offset:
            merged[-1] = (segment, merged[-1][1], merged[-1][2] + rows)
        elif rows:
            merged.append((segment, offset, rows))
    return merged


def _file_identity(path: Path) -> list[int]:
    """What changes whenever the file is replaced or rewritten."""
    st = path.stat()
    return [st.st_ino, st.st_size, st.st_mtime_ns]


@dataclass(frozen=True)
class Warehouse:
    """Tables under one folder, one Parquet file per asset partition."""

    root: Path

    def path(self, key: Sequence[str], partition: str | None = None) -> Path:
        """The file of `key` (e.g. `["helm", "run_stats"]`) for `partition`; names are validated."""
        if partition is None:
            *parents, leaf = key
            return path_within(self.root, *parents, f"{leaf}.parquet", what="asset key")
        safe_component(partition, "partition key")
        return path_within(self.root, *key, f"{partition}.parquet", what="partition key")

    def write(
        self,
        key: Sequence[str],
        partition: str | None,
        table: pa.Table,
        annotations: Mapping[str, Any] | None = None,
        cache: bool = False,
    ) -> Path:
        """Write atomically; `annotations` (JSON-able, e.g. run fingerprints) travel in the file.

        With `cache`, the Arrow copy is written too, so that the next incremental rebuild can
        map it instead of decoding the Parquet file."""
        path = self._write_parquet(key, partition, table, annotations)
        if cache:
            self._write_cache(key, partition, [(table, 0, table.num_rows)], None, path)
        return path

    def delete(self, key: Sequence[str], partition: str | None = None) -> None:
        """Remove a table's file and its Arrow cache (nothing happens when neither exists)."""
        self.path(key, partition).unlink(missing_ok=True)
        shutil.rmtree(self._cache_folder(key, partition), ignore_errors=True)

    def write_rebuilt(
        self,
        key: Sequence[str],
        partition: str | None,
        pieces: Sequence[Piece],
        reused: CachedTable | None,
        annotations: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the table made of `pieces`, with its Arrow cache. Pieces of `reused.table` (the
        cached table read for this rebuild) keep their cache segments: only other rows are written
        to the cache. `pieces` holds at least one piece, which may be empty, to give the schema."""
        path = self._write_parquet(key, partition, joined(pieces), annotations)
        self._write_cache(key, partition, pieces, reused, path)
        return path

    def _write_parquet(
        self, key: Sequence[str], partition: str | None, table: pa.Table, annotations: Mapping[str, Any] | None
    ) -> Path:
        path = self.path(key, partition)
        metadata = dict(table.schema.metadata or {})
        for name, value in (annotations or {}).items():
            metadata[f"{ANNOTATION_PREFIX}{name}".encode()] = json.dumps(value, sort_keys=True).encode()
        write_parquet_atomic(path, table.replace_schema_metadata(metadata or None))
        return path

    def _cache_folder(self, key: Sequence[str], partition: str | None) -> Path:
        return self.root / ".arrow_cache" / self.path(key, partition).relative_to(self.root).with_suffix("")

    def _write_cache(
        self, key: Sequence[str], partition: str | None, pieces: Sequence[Piece], reused: CachedTable | None, path: Path
    ) -> None:
        """Write the new rows as one segment and the layout that points at `path`'s version;
        then remove the segments no longer used."""
        folder = self._cache_folder(key, partition)
        segment = f"{uuid.uuid4().hex}.arrow"
        stretches: list[Stretch] = []
        new_rows: list[Piece] = []
        written = 0
        for table, offset, rows in pieces:
            if reused is not None and table is reused.table:
                stretches.extend(reused.locate(offset, rows))
            else:
                stretches.append((segment, written, rows))
                new_rows.append((table, offset, rows))
                written += rows
        stretches = _merged(stretches)
        kept = {name for name, _, _ in stretches} - {segment}
        segment_rows = {name: reused.segment_rows[name] for name in kept} if reused is not None else {}
        segment_rows |= {segment: written} if written else {}
        live_rows = sum(rows for _, _, rows in stretches)
        if not live_rows or len(segment_rows) > MAX_CACHE_SEGMENTS or sum(segment_rows.values()) > 2 * live_rows:
            new_rows = list(pieces)  # compact into one segment (an empty table too: it gives the schema)
            segment_rows = {segment: live_rows}
            stretches = [(segment, 0, live_rows)] if live_rows else []
        encoded = [field.name for field in pieces[0][0].schema if pa.types.is_dictionary(field.type)]
        if segment in segment_rows:
            write_arrow_atomic(folder / segment, _for_cache(joined(new_rows), encoded))
        layout = {
            "parquet": _file_identity(path),
            "segments": segment_rows,
            "stretches": stretches,
            "encoded_columns": encoded,
        }
        write_text_atomic(folder / "layout.json", json.dumps(layout))
        for stale in folder.glob("*.arrow"):
            if stale.name not in segment_rows:
                stale.unlink(missing_ok=True)

    def read_cache(self, key: Sequence[str], partition: str | None) -> CachedTable | None:
        """The table through its Arrow cache, dictionary columns encoded as they were written;
        None when there is none or it does not belong to the current Parquet file (written
        since, or segments missing)."""
        found = self._read_segments(key, partition)
        if found is None:
            return None
        table, stretches, segment_rows, encoded_columns = found
        return CachedTable(_from_cache(table, encoded_columns, encoded=True), stretches, segment_rows)

    def read_cached(self, key: Sequence[str], partition: str | None) -> pa.Table | None:
        """The table through its Arrow cache when the cache matches the Parquet file (mapped, not
        copied), else from Parquet; either way with the Parquet file's column types."""
        found = self._read_segments(key, partition)
        return _from_cache(found[0], found[3], encoded=False) if found is not None else self.read(key, partition)

    def _read_segments(
        self, key: Sequence[str], partition: str | None
    ) -> tuple[pa.Table, tuple[Stretch, ...], dict[str, int], list[str]] | None:
        """The cached table as stored, its stretches, segment sizes and dictionary-encoded
        columns; None if it cannot be used."""
        folder = self._cache_folder(key, partition)
        try:
            layout = json.loads((folder / "layout.json").read_bytes())
            if layout["parquet"] != _file_identity(self.path(key, partition)):
                return None
            segments = {
                name: pa.ipc.open_file(pa.memory_map(str(folder / safe_component(name, "cache segment")))).read_all()
                for name in layout["segments"]
            }
            stretches = tuple((name, offset, rows) for name, offset, rows in layout["stretches"])
            if any(segments[name].num_rows != rows for name, rows in layout["segments"].items()) or any(
                offset < 0 or rows < 0 or offset + rows > segments[name].num_rows for name, offset, rows in stretches
            ):
                return None
            slices = [segments[name].slice(offset, rows) for name, offset, rows in stretches]
            encoded_columns = [str(name) for name in layout["encoded_columns"]]
            stored = set(next(iter(segments.values())).schema.names) if segments else set()
            if not stored.issuperset(encoded_columns + [f"{name}{ENCODED_SUFFIX}" for name in encoded_columns]):
                return None
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            return None  # missing, half-removed or unreadable: the Parquet file is the truth
        if not segments:
            return None
        table = pa.concat_tables(slices) if slices else next(iter(segments.values())).slice(0, 0)
        return table, stretches, dict(layout["segments"]), encoded_columns

    def read(self, key: Sequence[str], partition: str | None = None) -> pa.Table | None:
        """The table, or None when it was never written."""
        path = self.path(key, partition)
        return pq.ParquetFile(path).read() if path.exists() else None  # read_table would import pyarrow.dataset

    def read_annotation(self, key: Sequence[str], partition: str | None, name: str) -> Any:
        """An annotation stored with the table, or None."""
        return self.read_annotations(key, partition).get(name)

    def read_annotations(self, key: Sequence[str], partition: str | None) -> dict[str, Any]:
        """Every annotation stored with the table; empty when never written."""
        footer = self.read_footer(key, partition)
        return footer.annotations if footer is not None else {}

    def read_footer(self, key: Sequence[str], partition: str | None) -> Footer | None:
        """The table's annotations and row count (only the Parquet footer is read), or None."""
        path = self.path(key, partition)
        if not path.exists():
            return None
        metadata = pq.read_metadata(path)
        prefix = ANNOTATION_PREFIX.encode()
        annotations = {
            name[len(prefix) :].decode(): json.loads(raw)
            for name, raw in (metadata.metadata or {}).items()
            if name.startswith(prefix)
        }
        return Footer(annotations, metadata.num_rows)
