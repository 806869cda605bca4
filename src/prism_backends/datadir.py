"""The data directory: made private to its owner, and refused with one clear
line (naming the path and the cause) when it cannot be used."""

from __future__ import annotations

import os
from pathlib import Path


class DataDirError(OSError):
    """The data directory cannot be made or written; the message names it and why."""


def prepare_data_dir(path: Path) -> None:
    """Create the data directory private to its owner (0700); refuse one that
    is not a directory or cannot be written, naming the path and the cause."""
    private_directory(path, "the data directory")


def private_directory(path: Path, what: str) -> None:
    """Create ``path`` 0700 if it is missing (one that exists keeps the mode its
    owner gave it); refuse one that is not a directory or cannot be written.
    ``what`` names it in the error: "the data directory", "the metrics directory"."""
    try:
        if not path.exists():
            path.mkdir(parents=True, mode=0o700)
            path.chmod(0o700)  # mkdir's mode passes through the umask
    except OSError as exc:
        raise DataDirError(f"{what} {path} cannot be created: {exc.strerror}") from exc
    if not path.is_dir():
        raise DataDirError(f"{what} {path} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise DataDirError(f"{what} {path} is not writable by this user")


def private_file(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does (it would follow the umask;
    its -wal and -shm files take the database file's mode)."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    except OSError as exc:
        raise DataDirError(f"the database file {path} cannot be created: {exc.strerror}") from exc
