"""The data directory: made private (0700, files 0600); one that cannot be
used is one line naming the path and the cause (exit 1), never a traceback;
an empty path is refused rather than taken as the current directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.served import free_port

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_BACKENDS_")}
    return subprocess.run(
        [sys.executable, "-m", "prism_backends", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("path", "cause"),
    [("/etc/passwd/x", "Not a directory"), ("/proc/nonexistent", "No such file or directory")],
)
def test_an_unusable_data_dir_is_one_line_and_exit_1(path: str, cause: str) -> None:
    result = run("migrate", "--data-dir", path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: the data directory {path} cannot be created: {cause}"


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = run("token", "issue", "--domain", "d", "--data-dir", str(afile))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: the data directory {afile} is not a directory"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_empty_data_dir_is_refused(how: str) -> None:
    if how == "flag":
        result = run("migrate", "--data-dir", "")
    else:
        result = run("migrate", env={"PRISM_BACKENDS_DATA_DIR": ""})
    assert result.returncode == 2
    assert "must not be empty" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_data_dir_and_its_files_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert run("migrate", "--data-dir", str(data_dir)).returncode == 0
    assert run("token", "issue", "--domain", "d", "--data-dir", str(data_dir)).returncode == 0
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    for name in ("prism-backends.db", "issuer-ed25519.pem"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name


def _ready_line(command: str, agents_port: int) -> tuple[list[str], str]:
    """The arguments that run ``command`` on free ports, and the line it logs once up."""
    port = free_port()
    if command in ("serve", "api"):
        extra = ["--port", str(port)]
        if command == "serve":
            extra += ["--agents-port", str(agents_port), "--no-sign-in-link"]
        return extra, f"HTTP API on http://127.0.0.1:{port}"
    if command == "agents":
        return ["--agents-port", str(agents_port)], f"agents endpoint on 127.0.0.1:{agents_port}"
    return [], "lifecycle workers started"


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "postgres"])
@pytest.mark.parametrize("command", ["serve", "api", "worker", "agents"])
def test_a_long_running_process_makes_a_fresh_data_dir_private(
    command: str, store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The metrics directory lives in the data directory and is made first: it must
    not leave the data directory with the umask's mode (0755 under umask 022)."""
    env = {"PRISM_BACKENDS_LOG_LEVEL": "info"}
    if store == "postgres":
        env["PRISM_BACKENDS_DATABASE_URL"] = request.getfixturevalue("postgres_schema")
    if store == "postgres" or command != "serve":
        # api, worker and agents refuse a store that is not migrated; serve migrates its own.
        prepared = run("migrate", "--data-dir", str(tmp_path / "migrated"), env=env)
        assert prepared.returncode == 0, prepared.stderr
        migrated = tmp_path / "migrated" / "prism-backends.db"
        env.setdefault("PRISM_BACKENDS_DATABASE_URL", f"sqlite:///{migrated}")
    data_dir = tmp_path / "fresh" / "data"
    extra, ready = _ready_line(command, free_port())
    log_path = tmp_path / f"{command}.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PRISM_BACKENDS_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prism_backends", command, "--data-dir", str(data_dir), *extra],
            cwd=ROOT,
            env={**clean, **env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            umask=0o022,
        )
        try:
            deadline = time.monotonic() + 60
            while ready not in log_path.read_text(errors="replace"):
                assert process.poll() is None, log_path.read_text(errors="replace")
                assert time.monotonic() < deadline, log_path.read_text(errors="replace")
                time.sleep(0.1)
            for directory in (data_dir, data_dir / "metrics"):
                assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
        finally:
            process.terminate()
            process.wait(timeout=30)
