"""Where state lives under GOVERNANCE_HOME, and how it is written safely."""

from __future__ import annotations

import glob
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_HOME = ".governance"
_UNSAFE_COMPONENT = re.compile(r"[\x00/\\]")


class UnsafePathError(ValueError):
    """A name that would leave the folder it is meant to stay in."""


def governance_home() -> Path:
    """The state folder: GOVERNANCE_HOME, else `.governance/` in the working directory."""
    return Path(os.environ.get("GOVERNANCE_HOME") or DEFAULT_HOME).absolute()


def safe_component(name: str, what: str) -> str:
    """Return `name` if it can be used as one path component, else raise UnsafePathError."""
    if not name or name in {".", ".."} or _UNSAFE_COMPONENT.search(name) or name.startswith("~"):
        raise UnsafePathError(
            f"{what} {name!r} is not a safe path component (empty, '.', '..', '~…', or contains '/', '\\' or NUL)"
        )
    return name


def path_within(root: Path, *components: str, what: str = "name") -> Path:
    """Join validated components under `root`, refusing anything that resolves outside it."""
    path = root.joinpath(*(safe_component(c, what) for c in components))
    if not path.resolve().is_relative_to(root.resolve()):
        raise UnsafePathError(f"{what} {'/'.join(components)!r} escapes {root}")
    return path


def _process_identity(pid: int) -> str | None:
    """`pid` and its start time (from /proc), or None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc: the pid alone, if it runs
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return f"{pid}-0"
    return f"{pid}-{stat.rsplit(')', 1)[1].split()[19]}"  # field 22, after the command's ")"


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporary files of `path` whose writers died (killed mid-write); return them."""
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        writer = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        pid = writer.split("-", 1)[0]
        if pid.isdigit() and _process_identity(int(pid)) != writer:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed over `path` only if the block succeeds.

    The temporary name carries the writer's pid and start time, so that the next writer of
    `path` deletes what a killed writer left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    writer = _process_identity(os.getpid()) or f"{os.getpid()}-0"
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{writer}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file so that readers see the old or the new content, never a part."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, "utf-8")


def stores_arrow_schema(schema: pa.Schema) -> bool:
    """Whether `parquet_writer` keeps Arrow's schema (with its metadata) in the file: only
    without dictionary-encoded columns. Otherwise the schema's metadata must be added to the
    file's key-value metadata before it is closed."""
    return not any(pa.types.is_dictionary(field.type) for field in schema)


def parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer (snappy) for tables of `schema`, written a batch at a time.

    Dictionary-encoded columns (a few values repeated, such as a run's name on each of its
    rows) are written as such, without hashing every value again and without min/max
    statistics, which cost more than the rest of their writing; they read back as plain
    columns: the file then keeps its key-value metadata but not Arrow's own schema, whose
    dictionary types readers would otherwise restore. A batch written with its own
    dictionaries becomes a row group of its own."""
    if stores_arrow_schema(schema):
        return pq.ParquetWriter(path, schema, compression="snappy")
    statistics = [field.name for field in schema if not pa.types.is_dictionary(field.type)]
    return pq.ParquetWriter(path, schema, compression="snappy", store_schema=False, write_statistics=statistics)


def write_parquet_atomic(path: Path, table: pa.Table) -> None:
    """Write a Parquet file atomically (temporary file, then rename), as `parquet_writer` does."""
    with atomic_path(path) as tmp, parquet_writer(tmp, table.schema) as writer:
        writer.write_table(table.unify_dictionaries())
        if not stores_arrow_schema(table.schema):
            writer.add_key_value_metadata(table.schema.metadata or {})


def write_arrow_atomic(path: Path, table: pa.Table) -> None:
    """Write an Arrow IPC file (uncompressed, memory-mappable) atomically."""
    with (
        atomic_path(path) as tmp,
        pa.OSFile(str(tmp), "wb") as sink,
        pa.ipc.new_file(sink, table.schema) as writer,
    ):
        writer.write_table(table)
