"""A fake cloud shared by many processes: its machines live in a SQLite ledger.

Enable it with a providers-directory TOML such as::

    name = "aws"
    enabled = true
    driver = "tests.fakes.ledger_provider:make_ledger_provider"
    [config]
    ledger = "/tmp/chaos/ledger.db"   # required; shared by every process
    latency_min_ms = 5                # each call sleeps uniformly in [min, max]
    latency_max_ms = 50
    retryable_rate = 0.1              # RetryableProviderError, any call
    retryable_after_create_share = 0.5  # of a create's retryable failures: after recording
    terminal_rate = 0.05              # TerminalProviderError on create
    terminal_after_create_share = 0.5   # of those: after the machine was recorded
    delete_terminal_rate = 0.0        # TerminalProviderError on delete
    creating_rate = 0.2               # share of new machines that boot slowly ...
    creating_seconds = 1.0            # ... reporting "creating" for this long
    seed = 1                          # optional; default: random per process

Like a real cloud, it is idempotent on the caller's key (``request.cvm_id``):
creating again while a machine of that key is live returns that machine. A
machine that was deleted stays in the ledger with ``deleted_at`` set, so a
second creation for one key (a resurrection) is visible afterwards. Every call
is recorded in ``calls`` with its outcome, in the same transaction as its effect.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prism_backends.providers.base import (
    Machine,
    MachineRequest,
    MachineState,
    OwnedMachine,
    RetryableProviderError,
    TerminalProviderError,
)
from prism_backends.providers.config import ProviderConfig, ProviderConfigError, vcpu_list
from prism_backends.vocabulary import Platform

BUSY_TIMEOUT_SECONDS = 30.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS machines (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    provider_machine_id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    ready_at REAL NOT NULL,
    deleted_at REAL,
    created_by_pid INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_machines_key ON machines (key);
CREATE TABLE IF NOT EXISTS calls (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    pid INTEGER NOT NULL,
    op TEXT NOT NULL,
    key TEXT NOT NULL,
    provider_machine_id TEXT NOT NULL,
    outcome TEXT NOT NULL
);
"""


class Outcome:
    """The words recorded in ``calls.outcome``."""

    CREATED = "created"
    FOUND_AGAIN = "found_again"
    RETRYABLE = "retryable"
    RETRYABLE_AFTER_CREATE = "retryable_after_create"
    TERMINAL = "terminal"
    TERMINAL_AFTER_CREATE = "terminal_after_create"
    DELETED = "deleted"
    NOT_FOUND = "not_found"
    # delete() named a provider machine id that is not a live machine of the key.
    MISMATCH = "mismatch"
    DESCRIBED = "described"


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    ledger: Path
    latency_min_ms: float = 0.0
    latency_max_ms: float = 0.0
    retryable_rate: float = 0.0
    retryable_after_create_share: float = 0.5
    terminal_rate: float = 0.0
    terminal_after_create_share: float = 0.5
    delete_terminal_rate: float = 0.0
    creating_rate: float = 0.0
    creating_seconds: float = 0.0
    seed: int | None = None

    @classmethod
    def parse(cls, settings: Mapping[str, Any], source: str) -> LedgerSettings:
        raw_path = settings.get("ledger")
        if not isinstance(raw_path, str) or not raw_path:
            raise ProviderConfigError(f"{source}: [config] ledger must be a file path")
        seed = settings.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ProviderConfigError(f"{source}: [config] seed must be an integer")
        parsed = cls(
            ledger=Path(raw_path),
            latency_min_ms=_number(settings, "latency_min_ms", 0.0, source),
            latency_max_ms=_number(settings, "latency_max_ms", 0.0, source),
            retryable_rate=_rate(settings, "retryable_rate", 0.0, source),
            retryable_after_create_share=_rate(
                settings, "retryable_after_create_share", 0.5, source
            ),
            terminal_rate=_rate(settings, "terminal_rate", 0.0, source),
            terminal_after_create_share=_rate(settings, "terminal_after_create_share", 0.5, source),
            delete_terminal_rate=_rate(settings, "delete_terminal_rate", 0.0, source),
            creating_rate=_rate(settings, "creating_rate", 0.0, source),
            creating_seconds=_number(settings, "creating_seconds", 0.0, source),
            seed=seed,
        )
        if parsed.latency_max_ms < parsed.latency_min_ms:
            raise ProviderConfigError(f"{source}: [config] latency_max_ms < latency_min_ms")
        if parsed.retryable_rate + parsed.terminal_rate > 1.0:
            raise ProviderConfigError(f"{source}: [config] retryable_rate + terminal_rate > 1")
        return parsed


def _number(settings: Mapping[str, Any], key: str, default: float, source: str) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ProviderConfigError(f"{source}: [config] {key} must be a number >= 0")
    return float(value)


def _rate(settings: Mapping[str, Any], key: str, default: float, source: str) -> float:
    value = _number(settings, key, default, source)
    if value > 1.0:
        raise ProviderConfigError(f"{source}: [config] {key} must be between 0 and 1")
    return value


@dataclass(frozen=True, slots=True)
class LedgerMachine:
    key: str
    provider_machine_id: str
    created_at: float
    ready_at: float
    deleted_at: float | None

    @property
    def live(self) -> bool:
        return self.deleted_at is None


class Ledger:
    """The shared SQLite file: the cloud's state and the record of every call.

    A connection per operation keeps it safe across threads and processes; a
    process killed in the middle of a transaction leaves nothing behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as connection:
            # WAL lets readers (the test) go on while a writer holds the lock.
            connection.execute("PRAGMA journal_mode=WAL")
            with self.transaction(connection):
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            connection.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
            yield connection
        finally:
            connection.close()

    @staticmethod
    @contextlib.contextmanager
    def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front, so check-then-insert is atomic."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @staticmethod
    def record(
        connection: sqlite3.Connection, op: str, key: str, provider_machine_id: str, outcome: str
    ) -> None:
        connection.execute(
            "INSERT INTO calls (at, pid, op, key, provider_machine_id, outcome) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (time.time(), os.getpid(), op, key, provider_machine_id, outcome),
        )

    def record_call(self, op: str, key: str, provider_machine_id: str, outcome: str) -> None:
        with self.connect() as connection, self.transaction(connection):
            self.record(connection, op, key, provider_machine_id, outcome)

    # Reading, for the tests' assertions.

    def machines(self) -> list[LedgerMachine]:
        with self.connect() as connection:
            rows = connection.execute(
                "SELECT key, provider_machine_id, created_at, ready_at, deleted_at "
                "FROM machines ORDER BY seq"
            ).fetchall()
        return [LedgerMachine(str(r[0]), str(r[1]), r[2], r[3], r[4]) for r in rows]

    def live_machines(self) -> list[LedgerMachine]:
        return [machine for machine in self.machines() if machine.live]

    def creations_by_key(self) -> dict[str, int]:
        with self.connect() as connection:
            rows = connection.execute("SELECT key, COUNT(*) FROM machines GROUP BY key").fetchall()
        return {str(key): int(count) for key, count in rows}

    def outcome_counts(self) -> dict[tuple[str, str], int]:
        """(op, outcome) -> number of calls."""
        with self.connect() as connection:
            rows = connection.execute(
                "SELECT op, outcome, COUNT(*) FROM calls GROUP BY op, outcome"
            ).fetchall()
        return {(str(op), str(outcome)): int(count) for op, outcome, count in rows}

    def calls_for(self, key: str) -> list[tuple[float, int, str, str, str]]:
        """(at, pid, op, provider_machine_id, outcome) of every call for one key, in order."""
        with self.connect() as connection:
            rows = connection.execute(
                "SELECT at, pid, op, provider_machine_id, outcome FROM calls "
                "WHERE key = ? ORDER BY seq",
                (key,),
            ).fetchall()
        return [(float(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]


class LedgerProvider:
    """A Provider (see prism_backends.providers.base) whose cloud is a Ledger."""

    def __init__(
        self,
        name: str,
        offerings: Mapping[Platform, frozenset[int]],
        settings: LedgerSettings,
    ) -> None:
        self._name = name
        self._offerings = dict(offerings)
        self._settings = settings
        self._rng = random.Random(settings.seed)
        self.ledger = Ledger(settings.ledger)

    @property
    def name(self) -> str:
        return self._name

    @property
    def offerings(self) -> Mapping[Platform, frozenset[int]]:
        return self._offerings

    @property
    def provisions_instantly(self) -> bool:
        return False

    # Chaos.

    def _sleep(self) -> None:
        low, high = self._settings.latency_min_ms, self._settings.latency_max_ms
        if high > 0:
            time.sleep(self._rng.uniform(low, high) / 1000)

    def _roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    # The Provider interface.

    def create(self, request: MachineRequest) -> Machine:
        with _store_errors_are_retryable():
            return self._create(request)

    def delete(self, cvm_id: str, provider_machine_id: str) -> None:
        with _store_errors_are_retryable():
            self._delete(cvm_id, provider_machine_id)

    def describe(self, cvm_id: str, provider_machine_id: str) -> Machine | None:
        with _store_errors_are_retryable():
            return self._describe(cvm_id, provider_machine_id)

    def owned_machines(self) -> Iterable[OwnedMachine]:
        with _store_errors_are_retryable():
            return [
                OwnedMachine(machine.key, machine.provider_machine_id)
                for machine in self.ledger.live_machines()
            ]

    def _create(self, request: MachineRequest) -> Machine:
        key = request.cvm_id
        settings = self._settings
        self._sleep()
        draw = self._rng.random()
        retryable = draw < settings.retryable_rate
        terminal = not retryable and draw < settings.retryable_rate + settings.terminal_rate
        after = self._rng.random()
        if retryable and after >= settings.retryable_after_create_share:
            self.ledger.record_call("create", key, "", Outcome.RETRYABLE)
            raise RetryableProviderError("injected: capacity temporarily unavailable")
        if terminal and after >= settings.terminal_after_create_share:
            self.ledger.record_call("create", key, "", Outcome.TERMINAL)
            raise TerminalProviderError("injected: the image cannot be booted")
        slow = self._roll(settings.creating_rate)
        with self.ledger.connect() as connection, self.ledger.transaction(connection):
            row = connection.execute(
                "SELECT provider_machine_id, ready_at FROM machines "
                "WHERE key = ? AND deleted_at IS NULL ORDER BY seq LIMIT 1",
                (key,),
            ).fetchone()
            now = time.time()
            if row is not None:
                machine_id, ready_at = str(row[0]), float(row[1])
                outcome = Outcome.FOUND_AGAIN
            else:
                machine_id = f"i-{uuid.uuid4().hex[:17]}"
                ready_at = now + (settings.creating_seconds if slow else 0.0)
                connection.execute(
                    "INSERT INTO machines "
                    "(key, provider_machine_id, created_at, ready_at, deleted_at, created_by_pid) "
                    "VALUES (?, ?, ?, ?, NULL, ?)",
                    (key, machine_id, now, ready_at, os.getpid()),
                )
                outcome = Outcome.CREATED
            if retryable:
                outcome = Outcome.RETRYABLE_AFTER_CREATE
            elif terminal:
                outcome = Outcome.TERMINAL_AFTER_CREATE
            self.ledger.record(connection, "create", key, machine_id, outcome)
        # The answer is lost on the way back: the machine exists all the same.
        if retryable:
            self._sleep()
            raise RetryableProviderError("injected: timed out waiting for the create to answer")
        if terminal:
            self._sleep()
            raise TerminalProviderError("injected: the machine failed its first boot")
        state = MachineState.RUNNING if now >= ready_at else MachineState.CREATING
        return Machine(provider_machine_id=machine_id, state=state)

    def _delete(self, cvm_id: str, provider_machine_id: str) -> None:
        settings = self._settings
        self._sleep()
        draw = self._rng.random()
        if draw < settings.retryable_rate:
            self.ledger.record_call("delete", cvm_id, provider_machine_id, Outcome.RETRYABLE)
            raise RetryableProviderError("injected: throttled")
        if draw < settings.retryable_rate + settings.delete_terminal_rate:
            self.ledger.record_call("delete", cvm_id, provider_machine_id, Outcome.TERMINAL)
            raise TerminalProviderError("injected: the delete was refused")
        with self.ledger.connect() as connection, self.ledger.transaction(connection):
            live = [
                str(row[0])
                for row in connection.execute(
                    "SELECT provider_machine_id FROM machines WHERE key = ? AND deleted_at IS NULL",
                    (cvm_id,),
                )
            ]
            if provider_machine_id and provider_machine_id not in live:
                known = connection.execute(
                    "SELECT key FROM machines WHERE provider_machine_id = ?",
                    (provider_machine_id,),
                ).fetchone()
                if known is None or str(known[0]) != cvm_id:
                    # The caller named a machine that is not this key's: never touch it.
                    self.ledger.record(
                        connection, "delete", cvm_id, provider_machine_id, Outcome.MISMATCH
                    )
            connection.execute(
                "UPDATE machines SET deleted_at = ? WHERE key = ? AND deleted_at IS NULL",
                (time.time(), cvm_id),
            )
            outcome = Outcome.DELETED if live else Outcome.NOT_FOUND
            self.ledger.record(connection, "delete", cvm_id, ",".join(live), outcome)

    def _describe(self, cvm_id: str, provider_machine_id: str) -> Machine | None:
        self._sleep()
        if self._roll(self._settings.retryable_rate):
            self.ledger.record_call("describe", cvm_id, provider_machine_id, Outcome.RETRYABLE)
            raise RetryableProviderError("injected: throttled")
        with self.ledger.connect() as connection, self.ledger.transaction(connection):
            if provider_machine_id:
                row = connection.execute(
                    "SELECT provider_machine_id, ready_at FROM machines "
                    "WHERE provider_machine_id = ? AND key = ? AND deleted_at IS NULL",
                    (provider_machine_id, cvm_id),
                ).fetchone()
            else:
                row = connection.execute(
                    "SELECT provider_machine_id, ready_at FROM machines "
                    "WHERE key = ? AND deleted_at IS NULL ORDER BY seq LIMIT 1",
                    (cvm_id,),
                ).fetchone()
            found = "" if row is None else str(row[0])
            outcome = Outcome.DESCRIBED if row is not None else Outcome.NOT_FOUND
            self.ledger.record(connection, "describe", cvm_id, found, outcome)
        if row is None:
            return None
        state = MachineState.RUNNING if time.time() >= float(row[1]) else MachineState.CREATING
        return Machine(provider_machine_id=str(row[0]), state=state)


@contextlib.contextmanager
def _store_errors_are_retryable() -> Iterator[None]:
    """A locked or unreachable ledger is the cloud's API timing out: nothing happened."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise RetryableProviderError(f"ledger unavailable: {exc}") from exc


def make_ledger_provider(config: ProviderConfig) -> LedgerProvider:
    """The driver factory: ``driver = "tests.fakes.ledger_provider:make_ledger_provider"``."""
    settings = LedgerSettings.parse(config.settings, config.source)
    offerings = {
        Platform.SEV_SNP: vcpu_list(config.settings, "vcpusSEV", config.source),
        Platform.TDX: vcpu_list(config.settings, "vcpusTDX", config.source),
    }
    return LedgerProvider(
        config.name,
        {platform: counts for platform, counts in offerings.items() if counts},
        settings,
    )
