"""A host manager beside ``serve`` (``--local-manager``): the embedded default's
way to real VMs with no other configuration.

It runs ``prism-backends manager`` as a child process in development mode
(plain VMs allowed, marked not confidential) with its data in
``DATA_DIR/manager``, restarts it if it dies (its VMs are re-adopted), and
hands the service the ``[config]`` of an ``ultraviolet`` provider that reaches it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

READY_SECONDS = 900.0  # the first start builds the guest image
RESPAWN_SECONDS = 2.0
PORT_FILE = "local-port"


class LocalManager:
    def __init__(self, data_dir: Path, *, log_level: str = "info") -> None:
        self.data_dir = data_dir
        self._log_level = log_level
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._watcher = threading.Thread(target=self._watch, name="local-manager", daemon=True)
        self.port = self._stable_port()

    @property
    def pid(self) -> int:
        return self._process.pid if self._process else 0

    def start(self, ready_seconds: float = READY_SECONDS) -> dict[str, object]:
        """Start the manager and wait until it answers; the ``[config]`` of an
        ultraviolet provider that reaches it. Raises RuntimeError (with its
        log's tail) if it does not come up."""
        self._spawn()
        self._wait_ready(ready_seconds)
        self._watcher.start()
        return self.provider_settings()

    def provider_settings(self) -> dict[str, object]:
        client = self.data_dir / "tls" / "client"
        manager = {
            "url": f"localhost:{self.port}",
            "platforms": ["sev-snp", "tdx"],
            "client_cert": str(client / "cert.pem"),
            "client_key": str(client / "key.pem"),
            "ca_cert": str(client / "ca.pem"),
        }
        return {"managers": [manager]}

    def stop(self) -> None:
        """Stop the manager; its VMs keep running and are re-adopted at the next start."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _stable_port(self) -> int:
        """The manager's port, chosen once and kept, so a respawned manager is
        found where the service's provider configuration says."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / PORT_FILE
        if path.is_file():
            return int(path.read_text().strip())
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        path.write_text(f"{port}\n")
        return port

    def _spawn(self) -> None:
        (self.data_dir / "manager.json").unlink(missing_ok=True)
        log_file = (self.data_dir / "manager.log").open("ab")
        argv = [
            sys.executable, "-m", "prism_backends", "manager",
            "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
            "--port", str(self.port), "--health-port", "0",
            "--development", "--log-level", self._log_level,
        ]  # fmt: skip
        with self._lock:
            self._process = subprocess.Popen(  # noqa: S603 - our own command
                argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        log_file.close()

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        announced = False
        while time.monotonic() < deadline:
            if (self.data_dir / "manager.json").is_file():
                return
            process = self._process
            if process is not None and process.poll() is not None:
                raise RuntimeError(
                    f"the local manager exited ({process.returncode}): {self._tail()}"
                )
            if not announced and time.monotonic() > deadline - seconds + 3:
                log.info("local manager starting (the first start builds the guest image)...")
                announced = True
            time.sleep(0.2)
        raise RuntimeError(f"the local manager did not come up in {seconds:.0f} s: {self._tail()}")

    def _tail(self) -> str:
        try:
            lines = (self.data_dir / "manager.log").read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-5:])

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            process = self._process
            if process is None or process.poll() is None:
                continue
            if self._stopping.is_set():
                return
            log.warning("the local manager exited (%s); starting it again", process.returncode)
            time.sleep(RESPAWN_SECONDS)
            try:
                self._spawn()
                self._wait_ready(READY_SECONDS)
            except (OSError, RuntimeError):
                log.exception("the local manager does not start again")


def manager_state(data_dir: Path) -> dict[str, int | str]:
    """What a running manager wrote of itself (ports), or {} before it is up."""
    try:
        state: dict[str, int | str] = json.loads((data_dir / "manager.json").read_text())
    except (OSError, ValueError):
        return {}
    return state
