"""The storage root that workers on several machines share: `GOVERNANCE_SHARED_ROOT`, a URL
(`s3://bucket/prefix`, `gs://…`, `hdfs://…`: any filesystem pyarrow opens, through fsspec's
`ArrowFSWrapper`) or a path on a shared volume. An S3-compatible endpoint comes from
`AWS_ENDPOINT_URL`, credentials from the usual `AWS_*` variables, never from configuration.

Each process keeps working in its own local `GOVERNANCE_HOME`; a suite's durable state (its HELM
run folders, its warehouse tables, its reports) is published to the shared root when written and
pulled from it wherever another machine needs it (`SuiteExchange`: before a run's steps, and after
each step that succeeded). The layout under the root is GOVERNANCE_HOME's
(`warehouse/helm/run_stats/v1.parquet`, …), so that pandas or DuckDB read it there too. A file
already pulled and unchanged on both sides is not copied again: a pulled file takes the root's
modification time, which the next pull compares with the root's listing (and its size).

The tables record their HELM run folders by absolute path: every machine uses the same
GOVERNANCE_HOME path (its own disk mounted at the same place, as the pods of a Helm chart do).

`s3fs` is not used: under the project's pins (fsspec is held by HELM's `datasets`) it resolves
only to 0.6.0; pyarrow's own S3 filesystem, wrapped as an fsspec filesystem, does the same job.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

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
BASELINE_TABLES = (PurePosixPath("warehouse", "helm", "runs"), PurePosixPath("warehouse", "helm", "instance_stats"))
"""What a suite's steps read of the suites before it: the baselines of the regression gates and of
evaluation drift (`defs/helm/inputs.earlier_suites`)."""
STEPS_SHARE_TAG = {"governance/shared_root": "by-step"}
"""The tag of a job whose steps pull and publish what they use themselves (`helm_fan_out`): the
state resource then exchanges nothing for them."""
Listing = dict[PurePosixPath, tuple[int, int | None]]
"""Files relative to the root (or to GOVERNANCE_HOME): their size and modification time (ns)."""


def shared_root_configured() -> bool:
    """Whether GOVERNANCE_SHARED_ROOT names a shared root."""
    return bool(os.environ.get(SHARED_ROOT_VARIABLE, "").strip())


def is_shareable(relative: PurePosixPath) -> bool:
    """Whether a file may be shared at all: never a temporary file or the local Arrow cache."""
    return not relative.name.endswith(".tmp") and ".arrow_cache" not in relative.parts


def belongs_to_suite(relative: PurePosixPath, suite: str) -> bool:
    """Whether a file (relative to GOVERNANCE_HOME) is part of `suite`'s state: its HELM runs, its
    warehouse partitions (not the local Arrow cache), its reports; never a temporary file."""
    if not is_shareable(relative):
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
        return cls.open(os.environ[SHARED_ROOT_VARIABLE].strip()) if shared_root_configured() else None

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
        files = [local] if local.is_file() else [path for path in local.rglob("*") if path.is_file()]
        names = (PurePosixPath(path.relative_to(home).as_posix()) for path in files)
        return self.publish_files(home, filter(is_shareable, names))

    def _listing(self, relative: PurePosixPath) -> Listing:
        """The files under `relative` on the root (or the file itself), with their size and mtime."""
        remote = self._remote(relative)
        if not self.filesystem.exists(remote):
            return {}
        if self.filesystem.isfile(remote):
            found = {remote: self.filesystem.info(remote)}
        else:
            found = self.filesystem.find(remote, detail=True)
        return {
            self._relative(name): (int(info["size"]), _nanoseconds(info.get("mtime")))
            for name, info in found.items()
            if info.get("type") != "directory"
        }

    def _pull_listed(self, listing: Listing, home: Path) -> list[PurePosixPath]:
        """Copy the listed files into `home`, each replaced whole and given the root's mtime; a file
        whose local copy has the root's size and mtime (pulled before, unchanged since) is kept.
        Returns the files copied."""
        copied = []
        for name, (size, mtime) in sorted(listing.items()):
            if mtime is not None and _local_signature(home / name) == (size, mtime):
                continue
            with atomic_path(home / name) as temporary:
                self.filesystem.get_file(self._remote(name), str(temporary))
                if mtime is not None:
                    os.utime(temporary, ns=(mtime, mtime))
            copied.append(name)
        return copied

    def pull(self, relative: PurePath | str, home: Path) -> list[PurePosixPath]:
        """Copy a file or a folder's files from the root into `home`, each file replaced whole."""
        return self._pull_listed(self._listing(PurePosixPath(PurePath(relative).as_posix())), home)

    def pull_matching(
        self, folders: Iterable[PurePosixPath], keep: Callable[[PurePosixPath], bool], home: Path
    ) -> list[PurePosixPath]:
        """The files under `folders` on the root that `keep` selects, into `home`."""
        listing = {name: found for folder in folders for name, found in self._listing(folder).items() if keep(name)}
        return self._pull_listed(listing, home)

    def publish_files(self, home: Path, names: Iterable[PurePosixPath]) -> list[PurePosixPath]:
        """Copy files of `home` (relative names) to the same places under the root."""
        written = sorted(names)
        for name in written:
            self._write(home / name, name)
        return written

    def publish_suite(self, home: Path, suite: str) -> list[PurePosixPath]:
        """Every file of `suite`'s state in `home` (HELM runs, warehouse partitions, reports)."""
        return self.publish_files(home, suite_files(home, safe_component(suite, "suite name")))

    def pull_suite(self, suite: str, home: Path) -> list[PurePosixPath]:
        """Every file of `suite`'s state from the root into `home`."""
        safe_component(suite, "suite name")
        return self.pull_matching(_suite_folders(suite), lambda name: belongs_to_suite(name, suite), home)


@dataclass
class SuiteExchange:
    """One process's share of the state on the root, for the steps it runs of one Dagster run.

    For a run of `suites` (usually one), `pull` copies in each suite's whole state and the tables of
    the other suites that a suite's steps read as baselines (`BASELINE_TABLES`); after a step
    succeeded, `publish_changes` copies out the files of those suites that are new or changed since
    (nothing temporary, nothing pulled and left as it was); after a step failed,
    `pass_over_changes` leaves what it wrote unpublished. A run of no suite (the assets that read
    every suite: `monitoring/trends`, the audit ledger) pulls every suite's tables and reports and
    publishes nothing: what those assets write is not a suite's state."""

    shared: SharedRoot
    home: Path
    suites: tuple[str, ...]
    _known: dict[PurePosixPath, tuple[int, int]] = field(default_factory=dict, init=False, repr=False)
    _unpublished: dict[PurePosixPath, tuple[int, int]] = field(default_factory=dict, init=False, repr=False)

    def pull(self) -> list[PurePosixPath]:
        """What the run's steps read, from the root; returns the files copied."""
        suites = [safe_component(suite, "suite name") for suite in self.suites]
        if suites:
            folders = dict.fromkeys(folder for suite in suites for folder in _suite_folders(suite))
            pulled = self.shared.pull_matching(folders, lambda name: self._reads(name, suites), self.home)
        else:
            pulled = self.shared.pull_matching(SUITE_FOLDERS, is_shareable, self.home)
        self._known = self._local()
        return pulled

    def publish_changes(self) -> list[PurePosixPath]:
        """The run's suites' files written since the pull or the last publication, to the root; a
        file that could not be written (the root unreachable) stays to publish the next time."""
        current = self._local()
        self._unpublished.update({name: sig for name, sig in current.items() if self._known.get(name) != sig})
        published = []
        for name in sorted(self._unpublished):
            self.shared.publish_files(self.home, [name])
            self._known[name] = self._unpublished.pop(name)
            published.append(name)
        return published

    def pass_over_changes(self) -> None:
        """After a step failed: what it wrote is never published (what earlier steps that succeeded
        wrote and could not publish still is)."""
        current = self._local()
        self._known.update({name: sig for name, sig in current.items() if name not in self._unpublished})

    @staticmethod
    def _reads(name: PurePosixPath, suites: list[str]) -> bool:
        baseline = is_shareable(name) and any(name.is_relative_to(table) for table in BASELINE_TABLES)
        return baseline or any(belongs_to_suite(name, suite) for suite in suites)

    def _local(self) -> dict[PurePosixPath, tuple[int, int]]:
        return {
            name: signature
            for suite in self.suites
            for name in suite_files(self.home, suite)
            if (signature := _local_signature(self.home / name)) is not None
        }


def _suite_folders(suite: str) -> tuple[PurePosixPath, ...]:
    return (SUITE_RUNS / suite, *SUITE_FOLDERS)


def suite_files(home: Path, suite: str) -> Iterator[PurePosixPath]:
    """The files of `suite`'s state in `home`."""
    for folder in _suite_folders(suite):
        for path in sorted((home / folder).rglob("*")):
            name = PurePosixPath(path.relative_to(home).as_posix())
            if belongs_to_suite(name, suite) and path.is_file():
                yield name


def _local_signature(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_size, status.st_mtime_ns


def _nanoseconds(mtime: Any) -> int | None:
    """A listing's modification time (pyarrow: a datetime; a local filesystem: seconds) in ns."""
    if isinstance(mtime, datetime):
        return int(mtime.timestamp() * 1e9)
    if isinstance(mtime, int | float):
        return int(mtime * 1e9)
    return None
