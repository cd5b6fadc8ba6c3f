"""Reading files from trees the platform does not own (historical HELM output): only regular files,
never through a symbolic link, never more than a size limit, never blocking on a FIFO or device."""

from __future__ import annotations

import os
import stat
from pathlib import Path

NO_LINKS = "(only files and folders inside the output root are read, never through a symbolic link)"
MAX_FILE_BYTES = 4 * 1024**3
"""The largest HELM file read (4 GiB; a 1,000-instance scenario_state.json is about 100 MB)."""


class UnreadableFileError(OSError):
    """A file refused or failed; `reason` says why in words a user can act on."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _refusal(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a folder"
        if stat.S_ISDIR(mode)
        else "not a regular file"
    )
    return f"is {kind}, not a regular file (only regular files are read)"


def _parent_refusal(path: Path) -> str | None:
    if path.parent.is_symlink():
        return f"its folder {path.parent.name} is a symbolic link {NO_LINKS}"
    return None


def read_regular_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of `path`, which must be a regular file reached without a symbolic link (neither
    the file nor its folder) and at most `max_bytes` long; else UnreadableFileError, at once (a
    FIFO without a writer or a device such as /dev/zero is refused, not read)."""
    refusal = _parent_refusal(path)
    if refusal:
        raise UnreadableFileError(path, refusal)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as error:
        if path.is_symlink():
            raise UnreadableFileError(path, f"is a symbolic link {NO_LINKS}") from None
        raise UnreadableFileError(path, f"cannot be opened: {error.strerror}") from None
    try:
        status = os.fstat(descriptor)
        refusal = _refusal(status.st_mode)
        if refusal:
            raise UnreadableFileError(path, refusal)
        if status.st_size > max_bytes:
            raise UnreadableFileError(path, f"is {status.st_size:,} bytes, over the limit of {max_bytes:,} bytes")
        with os.fdopen(descriptor, "rb", closefd=False) as file:
            data = file.read(status.st_size + 1)  # a buffer of the file's size, not of the limit
            if len(data) > status.st_size:  # grown since: read on, up to just past the limit
                data += file.read(max_bytes + 1 - len(data))
    finally:
        os.close(descriptor)
    if len(data) > max_bytes:
        raise UnreadableFileError(path, f"grew past the limit of {max_bytes:,} bytes while it was read")
    return data


def regular_file_problem(path: Path, max_bytes: int = MAX_FILE_BYTES) -> str | None:
    """Why `read_regular_file` would refuse `path` (without reading it), or None."""
    refusal = _parent_refusal(path)
    if refusal:
        return refusal
    try:
        status = path.lstat()
    except OSError as error:
        return f"cannot be read: {error.strerror}"
    if stat.S_ISLNK(status.st_mode):
        return f"is a symbolic link {NO_LINKS}"
    return _refusal(status.st_mode) or (
        f"is {status.st_size:,} bytes, over the limit of {max_bytes:,} bytes" if status.st_size > max_bytes else None
    )
