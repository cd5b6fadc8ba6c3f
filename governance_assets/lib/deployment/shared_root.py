"""The storage root that workers on several machines share: `GOVERNANCE_SHARED_ROOT`, a URL
(`s3://bucket/prefix`, `gs://…`, `hdfs://…`: any filesystem pyarrow opens, through fsspec's
`ArrowFSWrapper`) or a path on a shared volume. An S3-compatible endpoint comes from
`AWS_ENDPOINT_URL`, credentials from the usual `AWS_*` variables, never from configuration.

Each process keeps working in its own local `GOVERNANCE_HOME`; a suite's durable state (its HELM
run folders, its warehouse tables, its reports) is published to the shared root when written and
pulled from it wherever another machine needs it. The layout under the root is GOVERNANCE_HOME's
(`warehouse/helm/run_stats/v1.parquet`, …), so that pandas or DuckDB read it there too.

`s3fs` is not used: under the project's pins (fsspec is held by HELM's `datasets`) it resolves
only to 0.6.0; pyarrow's own S3 filesystem, wrapped as an fsspec filesystem, does the same job.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath

import fsspec
import pyarrow.fs
from fsspec.implementations.arrow import ArrowFSWrapper
from fsspec.implementations.local import LocalFileSystem

from governance_assets.lib.core.storage import atomic_path, safe_component

SHARED_ROOT_VARIABLE = "GOVERNANCE_SHARED_ROOT"
SUITE_RUNS = PurePosixPath("helm", "benchmark_output", "runs")
"""Where the platform's own HELM runs are, under GOVERNANCE_HOME and under the shared root."""
SUITE_FOLDERS = (PurePosixPath("warehouse"), PurePosixPath("reports"))
"""Folders whose files belong to a suite by their name (`<suite>.parquet`, `…/<suite>/…`)."""


def belongs_to_suite(relative: PurePosixPath, suite: str) -> bool:
    """Whether a file (relative to GOVERNANCE_HOME) is part of `suite`'s state: its HELM runs, its
    warehouse partitions (not the local Arrow cache), its reports; never a temporary file."""
    if relative.name.endswith(".tmp") or ".arrow_cache" in relative.parts:
        return False
    if relative.is_relative_to(SUITE_RUNS / suite):
        return True
    if relative.parts[0] == "warehouse":
        return relative.name == f"{suite}.parquet"
    return relative.parts[0] == "reports" and (suite in relative.parts[1:-1] or relative.stem == suite)


@dataclass(frozen=True)
class SharedRoot:
    """A storage root on a filesystem that every worker reaches."""

    url: str
    filesystem: fsspec.AbstractFileSystem
    root: str
    """The root's path within `filesystem` (`bucket/prefix` for S3)."""

    @classmethod
    def open(cls, url: str) -> SharedRoot:
        """`s3://bucket/prefix` and other URLs through pyarrow; a plain path or `file://` locally."""
        if "://" in url and not url.startswith("file://"):
            arrow_filesystem, root = pyarrow.fs.FileSystem.from_uri(url)
            return cls(url, ArrowFSWrapper(arrow_filesystem), root.rstrip("/"))
        local = Path(url.removeprefix("file://")).absolute()
        return cls(url, LocalFileSystem(), local.as_posix())

    @classmethod
    def from_environment(cls) -> SharedRoot | None:
        """The root named by GOVERNANCE_SHARED_ROOT, or None: everything stays in GOVERNANCE_HOME."""
        url = os.environ.get(SHARED_ROOT_VARIABLE, "").strip()
        return cls.open(url) if url else None

    def _remote(self, relative: PurePosixPath) -> str:
        return f"{self.root}/{relative.as_posix()}"

    def _relative(self, remote: str) -> PurePosixPath:
        return PurePosixPath(remote).relative_to(self.root)

    def _write(self, local: Path, relative: PurePosixPath) -> None:
        """One file written whole: object stores publish an upload only once it is complete; on a
        shared volume the file is written under a temporary name, then renamed."""
        target = self._remote(relative)
        if not isinstance(self.filesystem, LocalFileSystem):
            with local.open("rb") as source, self.filesystem.open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
            return
        self.filesystem.makedirs(self._remote(relative.parent), exist_ok=True)
        temporary = f"{target}.{uuid.uuid4().hex}.tmp"
        try:
            self.filesystem.put_file(str(local), temporary)
            self.filesystem.mv(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def publish(self, home: Path, relative: PurePath | str) -> list[PurePosixPath]:
        """Copy `home/relative` (a file, or a folder's files) to the same place under the root."""
        local = home / relative
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        written = [PurePosixPath(p.relative_to(home).as_posix()) for p in files if not p.name.endswith(".tmp")]
        for name in written:
            self._write(home / name, name)
        return written

    def _files(self, relative: PurePosixPath) -> list[str]:
        remote = self._remote(relative)
        if not self.filesystem.exists(remote):
            return []
        return [remote] if self.filesystem.isfile(remote) else sorted(self.filesystem.find(remote))

    def pull(self, relative: PurePath | str, home: Path) -> list[PurePosixPath]:
        """Copy a file or a folder's files from the root into `home`, each file replaced whole."""
        pulled = [self._relative(name) for name in self._files(PurePosixPath(PurePath(relative).as_posix()))]
        for name in pulled:
            with atomic_path(home / name) as temporary:
                self.filesystem.get_file(self._remote(name), str(temporary))
        return pulled

    def publish_suite(self, home: Path, suite: str) -> list[PurePosixPath]:
        """Every file of `suite`'s state in `home` (HELM runs, warehouse partitions, reports)."""
        names = [name for name in _local_files(home) if belongs_to_suite(name, safe_component(suite, "suite name"))]
        for name in names:
            self._write(home / name, name)
        return names

    def pull_suite(self, suite: str, home: Path) -> list[PurePosixPath]:
        """Every file of `suite`'s state from the root into `home`."""
        safe_component(suite, "suite name")
        folders = [SUITE_RUNS / suite, *SUITE_FOLDERS]
        names = [name for folder in folders for name in map(self._relative, self._files(folder))]
        return [name for name in names if belongs_to_suite(name, suite) and self.pull(name, home)]


def _local_files(home: Path) -> Iterator[PurePosixPath]:
    for folder in (SUITE_RUNS, *SUITE_FOLDERS):
        for path in sorted((home / folder).rglob("*")):
            if path.is_file():
                yield PurePosixPath(path.relative_to(home).as_posix())
