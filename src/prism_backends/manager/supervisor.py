"""QEMU processes: start them in a session of their own (so they outlive a
manager restart), recognise them again by PID and start time, stop them
(SIGTERM, then SIGKILL after a grace period), and copy each serial console
into a rotated log."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

CONSOLE_LOG = "console.log"
CONSOLE_SOCKET = "console.sock"
QEMU_LOG = "qemu.log"


def start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat (ticks since boot): a PID reused later differs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name may hold spaces and parentheses: split after the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def is_alive(pid: int, started: str) -> bool:
    if pid <= 0:
        return False
    current = start_time(pid)
    if not current or current != started:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def find_by_name(name: str) -> tuple[int, str] | None:
    """The QEMU process launched with ``-name NAME`` (PID, start time), if any:
    how a VM is found again when the manager died before recording its PID."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        for index, word in enumerate(argv[:-1]):
            if word == b"-name" and argv[index + 1] == name.encode():
                pid = int(entry.name)
                started = start_time(pid)
                if started and is_alive(pid, started):
                    return pid, started
    return None


class Supervisor:
    def __init__(self, *, grace_seconds: float, log_bytes: int, logs_kept: int) -> None:
        self._grace = grace_seconds
        self._log_bytes = log_bytes
        self._logs_kept = logs_kept
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._consoles: dict[str, ConsoleCopier] = {}
        self._lock = threading.Lock()

    def launch(self, vm_id: str, argv: list[str], directory: Path) -> tuple[int, str]:
        """Start QEMU; its PID and start time."""
        with (directory / QEMU_LOG).open("ab") as errors:
            process = subprocess.Popen(  # noqa: S603 - argv built from our settings
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
                cwd=directory,
            )
        with self._lock:
            self._children[process.pid] = process
        self.follow_console(vm_id, directory)
        return process.pid, start_time(process.pid)

    def follow_console(self, vm_id: str, directory: Path) -> None:
        copier = ConsoleCopier(directory, self._log_bytes, self._logs_kept)
        with self._lock:
            previous = self._consoles.pop(vm_id, None)
            self._consoles[vm_id] = copier
        if previous is not None:
            previous.stop()
        copier.start()

    def alive(self, pid: int, started: str) -> bool:
        with self._lock:
            child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            with self._lock:
                self._children.pop(pid, None)
            return False
        return is_alive(pid, started)

    def stop(self, vm_id: str, pid: int, started: str) -> None:
        """End the VM's QEMU: SIGTERM, then SIGKILL past the grace period."""
        with self._lock:
            copier = self._consoles.pop(vm_id, None)
        if self.alive(pid, started):
            self._signal(pid, signal.SIGTERM)
            if not self._wait_gone(pid, started, self._grace):
                log.warning("VM %s did not stop in %.0f s; killing it", vm_id, self._grace)
                self._signal(pid, signal.SIGKILL)
                self._wait_gone(pid, started, 10.0)
        if copier is not None:
            copier.stop()

    def _signal(self, pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def _wait_gone(self, pid: int, started: str, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.alive(pid, started):
                with self._lock:
                    child = self._children.pop(pid, None)
                if child is not None:
                    child.wait()
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        with self._lock:
            copiers = list(self._consoles.values())
            self._consoles.clear()
        for copier in copiers:
            copier.stop()


class ConsoleCopier:
    """Reads a VM's serial console from QEMU's socket into a rotated log file.
    After a manager restart a new copier connects to the same socket."""

    def __init__(self, directory: Path, max_bytes: int, kept: int) -> None:
        self._directory = directory
        self._log_path = directory / CONSOLE_LOG
        self._max_bytes = max_bytes
        self._kept = kept
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            connection = self._connect()
            if connection is None:
                return
            with connection:
                self._copy(connection)

    def _connect(self) -> socket.socket | None:
        # Through the directory's descriptor: a socket's path may not exceed 108
        # bytes, and the data directory's may.
        try:
            directory = os.open(self._directory, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            return None
        try:
            while not self._stop.is_set():
                connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    connection.connect(f"/proc/self/fd/{directory}/{CONSOLE_SOCKET}")
                except OSError:
                    connection.close()
                    if self._stop.wait(0.02):
                        return None
                    continue
                connection.settimeout(0.5)
                return connection
            return None
        finally:
            os.close(directory)

    def _copy(self, connection: socket.socket) -> None:
        sink = self._log_path.open("ab")
        try:
            while not self._stop.is_set():
                try:
                    chunk = connection.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    self._stop.set()  # QEMU closed the console: the VM ended
                    return
                while chunk:
                    room = max(self._max_bytes - sink.tell(), 0)
                    sink.write(chunk[:room])
                    chunk = chunk[room:]
                    if sink.tell() >= self._max_bytes:
                        sink.close()
                        self._rotate()
                        sink = self._log_path.open("ab")
                sink.flush()
        finally:
            sink.close()

    def _rotate(self) -> None:
        for index in range(self._kept - 1, 0, -1):
            older = self._log_path.with_name(f"{self._log_path.name}.{index}")
            if older.exists():
                older.replace(self._log_path.with_name(f"{self._log_path.name}.{index + 1}"))
        self._log_path.replace(self._log_path.with_name(f"{self._log_path.name}.1"))
        overflow = self._log_path.with_name(f"{self._log_path.name}.{self._kept + 1}")
        overflow.unlink(missing_ok=True)
