"""The Parquet warehouse: `warehouse/<asset key path>/<partition>.parquet`, readable without Dagster."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from governance_assets.lib.storage import (
    path_within,
    safe_component,
    write_arrow_atomic,
    write_parquet_atomic,
)

ANNOTATION_PREFIX = "governance."


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

        With `cache`, an uncompressed Arrow copy is kept beside it (in `.arrow_cache/`) so the
        next incremental rebuild can map it instead of decoding the Parquet file."""
        path = self.path(key, partition)
        if annotations:
            metadata = dict(table.schema.metadata or {})
            for name, value in annotations.items():
                metadata[f"{ANNOTATION_PREFIX}{name}".encode()] = json.dumps(value, sort_keys=True).encode()
            table = table.replace_schema_metadata(metadata)
        write_parquet_atomic(path, table)
        if cache:
            write_arrow_atomic(self._cache_path(key, partition), table)
        return path

    def _cache_path(self, key: Sequence[str], partition: str | None) -> Path:
        return self.root / ".arrow_cache" / self.path(key, partition).relative_to(self.root).with_suffix(".arrow")

    def read_cached(self, key: Sequence[str], partition: str | None) -> pa.Table | None:
        """The table through its Arrow cache when the cache matches the Parquet file, else from Parquet."""
        path, cache = self.path(key, partition), self._cache_path(key, partition)
        if cache.exists() and path.exists():
            cached = pa.ipc.open_file(pa.memory_map(str(cache))).read_all()
            if cached.schema.metadata == pq.read_schema(path).metadata:
                return cached
        return self.read(key, partition)

    def read(self, key: Sequence[str], partition: str | None = None) -> pa.Table | None:
        """The table, or None when it was never written."""
        path = self.path(key, partition)
        return pq.ParquetFile(path).read() if path.exists() else None  # read_table would import pyarrow.dataset

    def read_annotation(self, key: Sequence[str], partition: str | None, name: str) -> Any:
        """An annotation stored with the table, or None."""
        return self.read_annotations(key, partition).get(name)

    def read_annotations(self, key: Sequence[str], partition: str | None) -> dict[str, Any]:
        """Every annotation stored with the table (only its footer is read); empty when never written."""
        path = self.path(key, partition)
        if not path.exists():
            return {}
        metadata = pq.read_schema(path).metadata or {}
        prefix = ANNOTATION_PREFIX.encode()
        return {
            name[len(prefix) :].decode(): json.loads(raw) for name, raw in metadata.items() if name.startswith(prefix)
        }
