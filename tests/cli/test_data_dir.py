"""The data directory: made private (0700, files 0600); one that cannot be
used is one line naming the path and the cause (exit 1), never a traceback;
an empty path is refused rather than taken as the current directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

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
