"""A VM's serial console is copied from QEMU's socket into a log that is
rotated past its size, keeping a bounded number of old logs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from prism_backends.manager.supervisor import (
    CONSOLE_LOG,
    CONSOLE_SOCKET,
    ConsoleCopier,
    find_by_name,
)
from tests.manager.processes import eventually


def test_console_output_is_logged_and_rotated(tmp_path: Path) -> None:
    # A long directory name: socket paths are limited to 108 bytes, VM directories are not.
    directory = tmp_path / ("v" * 120)
    directory.mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(f"/proc/self/fd/{_dir_fd(directory)}/{CONSOLE_SOCKET}")
    server.listen(1)
    lines = [f"line {index:05d} ".ljust(99, ".").encode() + b"\n" for index in range(300)]

    def qemu() -> None:
        connection, _ = server.accept()
        with connection:
            for line in lines:
                connection.sendall(line)

    talker = threading.Thread(target=qemu, daemon=True)
    talker.start()
    copier = ConsoleCopier(directory, max_bytes=8192, kept=2)
    copier.start()
    talker.join(10)
    log = directory / CONSOLE_LOG
    # QEMU closing the console (the VM ended) ends the copier.
    eventually(lambda: not copier._thread.is_alive(), what="the copier stops at end of console")
    copier.stop()
    server.close()
    kept = [log.with_name(f"{CONSOLE_LOG}.{index}") for index in (1, 2)]
    assert all(path.is_file() for path in kept)
    assert not log.with_name(f"{CONSOLE_LOG}.3").exists()
    assert all(path.stat().st_size == 8192 for path in kept)
    newest = kept[1].read_bytes() + kept[0].read_bytes() + log.read_bytes()
    assert b"".join(lines).endswith(newest)  # the most recent output, in order, nothing lost
    assert len(newest) == 2 * 8192 + len(b"".join(lines)) % 8192


def _dir_fd(directory: Path) -> int:
    return os.open(directory, os.O_PATH | os.O_DIRECTORY)


def test_a_qemu_whose_pid_was_never_recorded_is_found_by_its_name(tmp_path: Path) -> None:
    name = f"vm-{os.getpid()}-{tmp_path.name}"
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-name", name])
    try:
        found = eventually(lambda: find_by_name(name), what="the process is found")
        assert found[0] == process.pid
        assert find_by_name(f"{name}-other") is None
    finally:
        process.kill()
        process.wait()
    assert find_by_name(name) is None
