"""Crash-safe appends of one line to a file: the writer shared by the alert ledger and OpenLineage's file transport."""

from __future__ import annotations

import os
import sys
from pathlib import Path

if sys.platform != "win32":
    import fcntl


def append_line(path: Path, line: bytes, *, lock: bool = False) -> None:
    """Append `line` (ending in a newline) to `path`, creating it and its folders, flushed and fsynced.

    After a last line cut short by a crash, `line` starts on a new line. With `lock`, other
    writers that lock too wait until this append is done (not on Windows). Raises OSError.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    with path.open("a+b") as file:
        if lock and sys.platform != "win32":
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)  # other writers wait; released on close
        size = file.seek(0, os.SEEK_END)
        if size:
            file.seek(size - 1)
            if file.read(1) != b"\n":  # a previous write was cut short
                line = b"\n" + line
        file.write(line)
        file.flush()
        os.fsync(file.fileno())
    if created:
        _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a new directory entry durable; best effort (not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
