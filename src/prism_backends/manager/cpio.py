"""A reproducible cpio ("newc") archive of a directory tree, as Linux unpacks
an initramfs: entries sorted by path, owners root, times zero, inode numbers
in order, so the same tree always gives the same bytes."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Protocol

TRAILER = "TRAILER!!!"


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


def write_tree(root: Path, out: Sink) -> int:
    """Write every file, directory and symlink under ``root``; the number of entries."""
    paths = sorted(path for path in root.rglob("*"))
    inode = 1
    for path in paths:
        name = str(path.relative_to(root))
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            _entry(out, name, inode, stat.S_IFLNK | 0o777, os.readlink(path).encode())
        elif stat.S_ISDIR(info.st_mode):
            _entry(out, name, inode, stat.S_IFDIR | _permissions(info.st_mode), b"")
        elif stat.S_ISREG(info.st_mode):
            _entry(out, name, inode, stat.S_IFREG | _permissions(info.st_mode), path.read_bytes())
        else:
            continue  # devices and sockets are made at boot, not shipped
        inode += 1
    _entry(out, TRAILER, 0, 0, b"", links=1)
    return inode - 1


def _permissions(mode: int) -> int:
    # Keep only whether it runs: builds under different umasks give the same archive.
    return 0o755 if mode & 0o111 else 0o644


def _entry(out: Sink, name: str, inode: int, mode: int, data: bytes, links: int = 0) -> None:
    encoded = name.encode() + b"\0"
    nlink = links or (2 if stat.S_ISDIR(mode) else 1)
    fields = [inode, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    out.write(header + encoded + _pad(len(header) + len(encoded)))
    out.write(data + _pad(len(data)))


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)
