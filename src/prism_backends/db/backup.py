"""SQLite's data at rest: a checkpoint on shutdown (so the ``.db`` file alone
holds everything: WAL mode keeps recent writes in ``-wal`` until then) and an
online backup that is consistent while the service runs."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from sqlalchemy import Engine

log = logging.getLogger(__name__)


def checkpoint(engine: Engine) -> None:
    """Fold the write-ahead log into the database file and empty it."""
    if engine.dialect.name != "sqlite":
        return
    # On the driver's connection: a checkpoint cannot run inside the
    # transaction SQLAlchemy would begin (BEGIN IMMEDIATE, see engine.py).
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        row = cursor.fetchone()
        cursor.close()
    finally:
        raw.close()
    if row is not None and row[0]:
        # Another process was reading: what it can still see stays in the log.
        log.warning("the SQLite checkpoint was partial: another process has the store open")


def backup(database: Path, target: Path) -> int:
    """Copy the live database to ``target`` with SQLite's online backup (pages
    copied under a read lock, so writers may go on); the pages copied."""
    if target.exists():
        raise FileExistsError(f"{target} exists: give a new path")
    source = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        destination = sqlite3.connect(target)
        try:
            source.backup(destination)
            pages: int = destination.execute("PRAGMA page_count").fetchone()[0]
            if destination.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError(f"the backup at {target} failed its integrity check")
        finally:
            destination.close()
    finally:
        source.close()
    target.chmod(0o600)
    return pages
