"""SQLite at rest: a clean shutdown checkpoints the write-ahead log, so the
.db file alone holds every write (even while another process has the store
open); ``prism-backends backup`` copies the live store consistently."""

from __future__ import annotations

import shutil
import sqlite3
import stat
from pathlib import Path

from typer.testing import CliRunner

from prism_backends.cli.main import app
from prism_backends.config import Settings
from prism_backends.db import migrate as migrations
from prism_backends.runtime import Runtime
from tests.factories import insert_cvm


def _runtime(data_dir: Path) -> Runtime:
    runtime = Runtime(Settings(data_dir=data_dir))
    migrations.upgrade(runtime.engine)
    return runtime


def _count(database: Path) -> int:
    connection = sqlite3.connect(database)
    try:
        count: int = connection.execute("SELECT count(*) FROM cvms").fetchone()[0]
        return count
    finally:
        connection.close()


def test_a_clean_shutdown_leaves_everything_in_the_db_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    runtime = _runtime(data_dir)
    database = data_dir / "prism-backends.db"
    # Another process (or a thread not yet stopped) with the store open: then
    # closing our connections is not closing the last one, and SQLite does not
    # fold the log in by itself.
    reader = sqlite3.connect(database)
    reader.execute("SELECT count(*) FROM cvms").fetchall()
    try:
        for index in range(5):
            insert_cvm(runtime.sessions, name=f"cvm-{index}")
        runtime.close()
        copy = tmp_path / "copy.db"
        shutil.copyfile(database, copy)  # the .db file alone, without -wal
        assert _count(copy) == 5
    finally:
        reader.close()


def test_backup_copies_the_live_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    runtime = _runtime(data_dir)
    insert_cvm(runtime.sessions, name="kept")
    target = tmp_path / "backup.db"
    try:
        result = CliRunner().invoke(app, ["backup", str(target), "--data-dir", str(data_dir)])
    finally:
        runtime.close()
    assert result.exit_code == 0, result.output
    assert _count(target) == 1
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    again = CliRunner().invoke(app, ["backup", str(target), "--data-dir", str(data_dir)])
    assert again.exit_code == 1 and "give a new path" in again.output


def test_backup_of_postgresql_points_at_pg_dump(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["backup", str(tmp_path / "x.db"), "--database-url", "postgresql+psycopg://h/db"]
    )
    assert result.exit_code == 2 and "pg_dump" in result.output


def test_backup_without_a_store_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["backup", str(tmp_path / "x.db"), "--data-dir", str(tmp_path / "empty")]
    )
    assert result.exit_code == 1 and "there is no store" in result.output
