"""The Parquet warehouse: `warehouse/<asset key path>/<partition>.parquet`, readable without Dagster.

Tables are written a piece at a time (`Warehouse.writer`): each piece goes to the Parquet file
as row groups as soon as it is given, so that writing a table holds a few pieces in memory,
never the whole table.

A table written with its Arrow cache also has a memory-mappable copy in
`.arrow_cache/<asset key path>/<partition>/`: Arrow IPC segment files and `layout.json`, which
lists the stretches of segment rows that make up the table. A rebuild that reuses rows of the
cached table writes only its new rows, as a new segment; the segments are compacted into one
when they hold more dead rows than live ones, or become too many. A dictionary-encoded column
is cached twice: decoded, which readers map without copying, and encoded (`<name>#dictionary`),
which rebuilds reuse; a segment keeps one dictionary per column, grown by deltas as pieces
with dictionaries of their own are appended."""

from __future__ import annotations

import base64
import bisect
import itertools
import json
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from governance_assets.lib.core.storage import (
    atomic_path,
    parquet_writer,
    path_within,
    remove_stale_temporaries,
    safe_component,
    stores_arrow_schema,
    write_text_atomic,
)

ANNOTATION_PREFIX = "governance."
PACKED_PREFIX = f"{ANNOTATION_PREFIX}packed."
"""Footer keys of packed annotations (base64 of a zstd Arrow IPC stream), read as tables."""
MAX_CACHE_SEGMENTS = 8
ROW_GROUP_ROWS = 128 * 1024
"""The most rows of a Parquet row group (the writer encodes a row group in memory)."""

Piece = tuple[pa.Table, int, int]
"""Rows `offset : offset + length` of a table."""
Stretch = tuple[str, int, int]
"""Rows `offset : offset + length` of one cache segment file."""


@dataclass(frozen=True)
class Footer:
    """What a table's Parquet footer says without reading its rows."""

    annotations: dict[str, Any]
    rows: int
    packed: dict[str, pa.Buffer]
    """Packed annotations (`RowPacker`), unpacked by `unpack_rows`."""


class RowPacker:
    """Rows appended a batch at a time and kept compressed (a zstd Arrow IPC stream in memory):
    per-run bookkeeping of a large suite held in a few bytes per run, never as Python objects."""

    def __init__(self, schema: pa.Schema) -> None:
        self._sink = pa.BufferOutputStream()
        self._writer = ipc.new_stream(self._sink, schema, options=ipc.IpcWriteOptions(compression="zstd"))

    def append(self, rows: pa.Table) -> None:
        self._writer.write_table(rows)

    def finish(self) -> pa.Buffer:
        """The packed rows (no more can be appended)."""
        self._writer.close()
        return self._sink.getvalue()


def pack_rows(rows: pa.Table) -> pa.Buffer:
    """`rows` packed as `RowPacker` packs them."""
    packer = RowPacker(rows.schema)
    packer.append(rows)
    return packer.finish()


def unpack_rows(packed: pa.Buffer) -> pa.Table:
    """The rows a `RowPacker` packed."""
    return ipc.open_stream(packed).read_all()


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


ENCODED_SUFFIX = "#dictionary"


def _encoded_columns(schema: pa.Schema) -> list[str]:
    return [field.name for field in schema if pa.types.is_dictionary(field.type)]


def _for_cache(table: pa.Table, encoded_columns: Sequence[str]) -> pa.Table:
    """`table` as cached: its dictionary-encoded `encoded_columns` decoded in place, each
    encoding appended as `<name>#dictionary`."""
    cached = table
    for name in encoded_columns:
        column = table[name]
        cached = cached.set_column(cached.schema.get_field_index(name), name, column.cast(column.type.value_type))
        cached = cached.append_column(f"{name}{ENCODED_SUFFIX}", column)
    return cached


class _GrowingDictionaries:
    """Re-encodes dictionary columns against one dictionary per column that only grows, so that
    pieces with dictionaries of their own go to one Arrow IPC file (as dictionary deltas)."""

    def __init__(self) -> None:
        self._values: dict[str, pa.Array] = {}

    def conform(self, table: pa.Table) -> pa.Table:
        for index, field in enumerate(table.schema):
            if pa.types.is_dictionary(field.type):
                chunks = [self._conform(field.name, chunk) for chunk in table.column(index).chunks]
                table = table.set_column(index, field, pa.chunked_array(chunks, field.type))
        return table

    def _conform(self, name: str, chunk: pa.DictionaryArray) -> pa.DictionaryArray:
        known = self._values.get(name)
        if known is None:
            self._values[name] = chunk.dictionary
            return chunk
        # Hash the chunk's few values, not the grown dictionary (a suite's run names): memory
        # and work per piece stay those of the piece.
        at = pc.index_in(known, value_set=chunk.dictionary)  # per known value: its place in the chunk's
        found = pc.is_valid(at)
        positions = np.full(len(chunk.dictionary), -1, dtype=np.int32)  # per chunk value: its place in `known`
        positions[at.filter(found).to_numpy()] = pc.indices_nonzero(found).to_numpy()
        new = np.flatnonzero(positions < 0)
        if len(new):
            positions[new] = np.arange(len(known), len(known) + len(new), dtype=np.int32)
            known = self._values[name] = pa.concat_arrays([known, chunk.dictionary.take(new)])
        return pa.DictionaryArray.from_arrays(pa.array(positions).take(chunk.indices), known)


class _Segment:
    """One cache segment file being written, a table (or piece) at a time."""

    def __init__(self, stack: ExitStack, path: Path, schema: pa.Schema) -> None:
        self.encoded = _encoded_columns(schema)
        tmp = stack.enter_context(atomic_path(path))
        sink = stack.enter_context(pa.OSFile(str(tmp), "wb"))
        options = ipc.IpcWriteOptions(emit_dictionary_deltas=True)
        self._writer = stack.enter_context(
            ipc.new_file(sink, _for_cache(schema.empty_table(), self.encoded).schema, options=options)
        )
        self._dictionaries = _GrowingDictionaries()

    def write(self, table: pa.Table, as_cached: bool = False) -> None:
        """Append `table` (or, `as_cached`, rows of another segment as stored)."""
        stored = table if as_cached else _for_cache(table, self.encoded)
        self._writer.write_table(self._dictionaries.conform(stored))


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


class TableWriter:
    """A table being written a piece at a time (see `Warehouse.writer`). Each piece is written
    when it is given (a background writer was tried: its thread's allocator kept twice the
    memory of a catalogue it wrote, for no speed on two busy cores)."""

    def __init__(
        self, stack: ExitStack, path: Path, schema: pa.Schema, cache_folder: Path | None, reused: CachedTable | None
    ) -> None:
        self.path, self.schema, self._reused = path, schema, reused
        self.annotations: dict[str, Any] = {}
        self.packed_annotations: dict[str, pa.Buffer] = {}
        """Annotations packed by `RowPacker` (read back as `Footer.packed`)."""
        self._parquet = stack.enter_context(parquet_writer(stack.enter_context(atomic_path(path)), schema))
        self.segment_name = f"{uuid.uuid4().hex}.arrow"
        self._segment = _Segment(stack, cache_folder / self.segment_name, schema) if cache_folder else None
        self.stretches: list[Stretch] = []
        self._new_rows = 0

    def write(self, table: pa.Table, offset: int = 0, rows: int | None = None) -> None:
        """Append rows `offset : offset + rows` of `table` (all from `offset` by default)."""
        rows = table.num_rows - offset if rows is None else rows
        to_cache = self._segment is not None
        if self._reused is not None and table is self._reused.table:
            self.stretches.extend(self._reused.locate(offset, rows))  # already cached: not copied again
            to_cache = False
        elif to_cache:
            self.stretches.append((self.segment_name, self._new_rows, rows))
            self._new_rows += rows
        if rows:
            piece = table.slice(offset, rows)
            self._parquet.write_table(piece, row_group_size=ROW_GROUP_ROWS)
            if to_cache and self._segment is not None:
                self._segment.write(piece)

    def finish(self) -> None:
        """Add the annotations (and the schema's own metadata, when the file does not keep
        Arrow's schema) to the Parquet footer."""
        metadata = {} if stores_arrow_schema(self.schema) else dict(self.schema.metadata or {})
        for name, value in self.annotations.items():
            metadata[f"{ANNOTATION_PREFIX}{name}".encode()] = json.dumps(value, sort_keys=True).encode()
        for name, packed in self.packed_annotations.items():
            metadata[f"{PACKED_PREFIX}{name}".encode()] = base64.b64encode(packed)
        self._parquet.add_key_value_metadata(metadata)


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

    @contextmanager
    def writer(
        self,
        key: Sequence[str],
        partition: str | None,
        schema: pa.Schema,
        cache: bool = False,
        reused: CachedTable | None = None,
    ) -> Iterator[TableWriter]:
        """A writer of the table of `key` and `partition`, written piece by piece; the file
        replaces the old one only when the block ends without an error. Set its `annotations`
        (JSON-able, e.g. run fingerprints) to store them in the file.

        With `cache`, the Arrow copy is written too, so that the next incremental rebuild can map
        it instead of decoding the Parquet file. Pieces of `reused.table` (the cached table read
        for this rebuild) keep their cache segments: only other rows are written to the cache."""
        folder = self._cache_folder(key, partition) if cache else None
        own_metadata = {
            k: v for k, v in (schema.metadata or {}).items() if not k.startswith(ANNOTATION_PREFIX.encode())
        }
        with ExitStack() as stack:
            writer = TableWriter(stack, self.path(key, partition), schema.with_metadata(own_metadata), folder, reused)
            yield writer
            writer.finish()
        if folder is not None:
            self._write_layout(folder, writer, reused)

    def write(
        self,
        key: Sequence[str],
        partition: str | None,
        table: pa.Table,
        annotations: Mapping[str, Any] | None = None,
        cache: bool = False,
    ) -> Path:
        """Write a whole table atomically, as `writer` does."""
        return self.write_rebuilt(key, partition, [(table, 0, table.num_rows)], None, annotations, cache)

    def write_rebuilt(
        self,
        key: Sequence[str],
        partition: str | None,
        pieces: Sequence[Piece],
        reused: CachedTable | None,
        annotations: Mapping[str, Any] | None = None,
        cache: bool = True,
    ) -> Path:
        """Write the table made of `pieces` (at least one, which may be empty, to give the
        schema), as `writer` does."""
        with self.writer(key, partition, pieces[0][0].schema, cache, reused) as writer:
            writer.annotations = dict(annotations or {})
            for piece in pieces:
                writer.write(*piece)
        return writer.path

    def delete(self, key: Sequence[str], partition: str | None = None) -> None:
        """Remove a table's file and its Arrow cache (nothing happens when neither exists)."""
        self.path(key, partition).unlink(missing_ok=True)
        shutil.rmtree(self._cache_folder(key, partition), ignore_errors=True)

    def _cache_folder(self, key: Sequence[str], partition: str | None) -> Path:
        return self.root / ".arrow_cache" / self.path(key, partition).relative_to(self.root).with_suffix("")

    def _write_layout(self, folder: Path, writer: TableWriter, reused: CachedTable | None) -> None:
        """Point the cache at the Parquet file just written: its segments, compacted into one
        when they hold too many dead rows or are too many; then remove the segments no longer
        used (and temporary files of killed writers)."""
        stretches = _merged(writer.stretches)
        segment = writer.segment_name
        kept = {name for name, _, _ in stretches} - {segment}
        segment_rows = {name: reused.segment_rows[name] for name in kept} if reused is not None else {}
        written = sum(rows for name, _, rows in stretches if name == segment)
        segment_rows |= {segment: written} if written else {}
        live_rows = sum(rows for _, _, rows in stretches)
        if not live_rows:
            segment_rows, stretches = {segment: 0}, []  # the empty segment gives the schema
        elif len(segment_rows) > MAX_CACHE_SEGMENTS or sum(segment_rows.values()) > 2 * live_rows:
            segment = self._compact(folder, stretches, writer.schema)
            segment_rows, stretches = {segment: live_rows}, [(segment, 0, live_rows)]
        layout = {
            "parquet": _file_identity(writer.path),
            "segments": segment_rows,
            "stretches": stretches,
            "encoded_columns": _encoded_columns(writer.schema),
        }
        write_text_atomic(folder / "layout.json", json.dumps(layout))
        for stale in folder.glob("*.arrow"):
            if stale.name not in segment_rows:
                stale.unlink(missing_ok=True)
        for tmp in folder.glob(".*.arrow.*.tmp"):  # `.<segment>.<writer>.<random>.tmp`: its writer was killed?
            remove_stale_temporaries(folder / f"{tmp.name[1:].split('.arrow.', 1)[0]}.arrow")

    def _compact(self, folder: Path, stretches: Sequence[Stretch], schema: pa.Schema) -> str:
        """Copy `stretches` of the segments in `folder`, in order, into one new segment; its name."""
        name = f"{uuid.uuid4().hex}.arrow"
        sources: dict[str, pa.Table] = {}
        with ExitStack() as stack:
            compacted = _Segment(stack, folder / name, schema)
            for source, offset, rows in stretches:
                if source not in sources:
                    sources[source] = ipc.open_file(pa.memory_map(str(folder / source))).read_all()
                compacted.write(sources[source].slice(offset, rows), as_cached=True)
        return name

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
        prefix, packed_prefix = ANNOTATION_PREFIX.encode(), PACKED_PREFIX.encode()
        annotations, packed = {}, {}
        for name, raw in (metadata.metadata or {}).items():
            if name.startswith(packed_prefix):
                packed[name[len(packed_prefix) :].decode()] = pa.py_buffer(base64.b64decode(raw))
            elif name.startswith(prefix):
                annotations[name[len(prefix) :].decode()] = json.loads(raw)
        return Footer(annotations, metadata.num_rows, packed)
