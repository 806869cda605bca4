"""How ``prism-backends cvms`` shows things to people: rich tables, the uptime
bar, the progress of a wait. Off a terminal rich writes no control codes (no
colour, no cursor movement) and the wait's progress is one plain line per change."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from rich.console import Console, RenderableType
from rich.status import Status
from rich.table import Table
from rich.text import Text

from prism_backends.client.models import Certificate, CVMOut, CVMPage, EventOut, StatSample

# Wide enough off a terminal that a table of ids is not wrapped into a pipe.
PIPE_WIDTH = 240
NEVER = "0001-01-01T00:00:00Z"

CELLS_PER_DAY = 48  # half an hour each
UP, PARTLY, DOWN, NO_SAMPLE = "█", "▒", "░", "·"
LEGEND = f"{UP} up  {PARTLY} partly up  {DOWN} down  {NO_SAMPLE} no sample (half an hour each)"


def console(*, stderr: bool = False) -> Console:
    # No markup or emoji codes: names and messages are the tenant's and the agents' text.
    shown = Console(stderr=stderr, highlight=False, soft_wrap=False, markup=False, emoji=False)
    if not shown.is_terminal:
        shown.width = PIPE_WIDTH
    return shown


def show(shown: Console, renderable: RenderableType) -> None:
    """Print a renderable; off a terminal without the padding rich puts at the
    end of table lines, so that a pipe gets clean lines."""
    if shown.is_terminal:
        shown.print(renderable)
        return
    with shown.capture() as captured:
        shown.print(renderable)
    lines = [line.rstrip() for line in captured.get().splitlines()]
    shown.file.write("".join(f"{line}\n" for line in lines))
    shown.file.flush()


def cvm_table(page: CVMPage) -> Table:
    table = Table(
        "id", "name", "provider", "platform", "vcpus", "state", "status", "monthly cost",
        "created", box=None, pad_edge=False, header_style="bold",
    )  # fmt: skip
    for cvm in page.cvms:
        table.add_row(
            cvm.id, cvm.name, cvm.provider, cvm.cc_platform, str(cvm.vcpus),
            Text(cvm.state, style=_state_style(cvm.state)),
            Text(cvm.status, style=_status_style(cvm.status)),
            cvm.monthly_cost_estimate, cvm.created_at,
        )  # fmt: skip
    first = page.offset + 1 if page.cvms else page.offset
    table.caption = f"{first}-{page.offset + len(page.cvms)} of {page.total}"
    return table


def cvm_details(cvm: CVMOut) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in cvm.model_dump().items():
        shown: str | Text = printable(str(value))
        if key == "attestation":
            shown = f"{len(value) * 3 // 4} bytes (base64 in --output json)" if value else ""
        elif key == "attestation_token" and value:
            shown = f"{value[:24]}... (whole in --output json)"
        elif key == "deleted_at" and value == NEVER:
            shown = ""
        elif key == "state":
            shown = Text(value, style=_state_style(value))
        elif key == "status":
            shown = Text(value, style=_status_style(value))
        table.add_row(key, shown)
    return table


def event_table(events: Iterable[EventOut]) -> Table:
    table = Table(*EVENT_COLUMNS, box=None, pad_edge=False, header_style="bold")
    for event in events:
        table.add_row(*event_row(event))
    return table


EVENT_COLUMNS = ("id", "received", "kind", "level", "message")
# What a column of a followed table is at least as wide as: the service's own kinds
# and the agents' levels, so that the usual rows to come do not shift it.
EVENT_MIN_WIDTHS = (0, 0, len("disconnected"), len("debug"), 0)


class EventFollower:
    """``events --follow`` for people: the rows of ``event_table``, printed as they
    come, in its columns. A column keeps the widest width it has had (a longer id
    or kind widens it from there on); the header is printed once, above the first."""

    def __init__(self, shown: Console) -> None:
        self._shown = shown
        pairs = zip(EVENT_COLUMNS, EVENT_MIN_WIDTHS, strict=True)
        self._widths = [max(len(name), least) for name, least in pairs]
        self._header = True

    def print(self, events: Iterable[EventOut]) -> None:
        rows = [event_row(event) for event in events]
        if not rows and not self._header:
            return
        for row in rows:
            for index, cell in enumerate(row[:-1]):
                self._widths[index] = max(self._widths[index], len(cell))
        table = Table(box=None, pad_edge=False, header_style="bold", show_header=self._header)
        for name, width in zip(EVENT_COLUMNS, self._widths, strict=True):
            table.add_column(name, min_width=width if name != "message" else None)
        for row in rows:
            table.add_row(*row)
        show(self._shown, table)
        self._header = False


def event_row(event: EventOut) -> tuple[str, str, str, str, str]:
    return (
        event.id, event.received_at, printable(event.kind), printable(event.level),
        printable(event.message),
    )  # fmt: skip


def certificate_table(certificates: Iterable[Certificate]) -> Table:
    table = Table(
        "serial", "state", "not before", "not after", "revoked", "sha-256", box=None,
        pad_edge=False, header_style="bold",
    )  # fmt: skip
    for each in certificates:
        table.add_row(
            each.serial, Text(each.state, style=_certificate_style(each.state)), each.not_before,
            each.not_after, each.revoked_at or "", each.fingerprint_sha256,
        )  # fmt: skip
    return table


def _certificate_style(state: str) -> str:
    return {"active": "green", "pending": "yellow"}.get(state, "dim")


def printable(text: str) -> str:
    """What an agent or a provider wrote, with control characters (a terminal's
    escape sequences among them) shown as escapes instead of acted on."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _state_style(state: str) -> str:
    return {"provisioned": "green", "failed": "red", "deleted": "dim"}.get(state, "yellow")


def _status_style(status: str) -> str:
    return {"running": "green", "failed": "red", "offline": "red"}.get(status, "yellow")


# --- uptime ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UptimeRow:
    day: str
    bar: str
    up: int
    samples: int


def uptime_rows(samples: Iterable[StatSample], days: int, now: datetime) -> list[UptimeRow]:
    """One row per UTC day of the window, oldest first: a block per half hour
    (up, partly up, down, or no sample) and the day's counts."""
    first_day = (now - timedelta(days=days)).date()
    span = (now.date() - first_day).days + 1
    ups = [[0] * CELLS_PER_DAY for _ in range(span)]
    counts = [[0] * CELLS_PER_DAY for _ in range(span)]
    for sample in samples:
        moment = datetime.fromisoformat(sample.timestamp).astimezone(UTC)
        row = (moment.date() - first_day).days
        if not 0 <= row < span:
            continue
        cell = (moment.hour * 60 + moment.minute) * CELLS_PER_DAY // (24 * 60)
        counts[row][cell] += 1
        ups[row][cell] += sample.status
    rows = []
    for index in range(span):
        bar = "".join(_block(up, n) for up, n in zip(ups[index], counts[index], strict=True))
        day = (first_day + timedelta(days=index)).isoformat()
        rows.append(UptimeRow(day, bar, sum(ups[index]), sum(counts[index])))
    return rows


def _block(up: int, samples: int) -> str:
    if samples == 0:
        return NO_SAMPLE
    if up == samples:
        return UP
    return PARTLY if up else DOWN


def uptime_table(rows: list[UptimeRow]) -> Table:
    table = Table("day (UTC)", "uptime", "up", box=None, pad_edge=False, header_style="bold")
    for row in rows:
        percent = f"{100 * row.up / row.samples:.1f}% of {row.samples}" if row.samples else "-"
        table.add_row(row.day, Text(row.bar, style=_bar_style(row)), percent)
    table.caption = LEGEND
    return table


def _bar_style(row: UptimeRow) -> str:
    if not row.samples:
        return "dim"
    return "green" if row.up == row.samples else "yellow"


# --- waiting -------------------------------------------------------------------------------------


class WaitDisplay:
    """``wait_running``'s progress callback: on a terminal a live status line
    (state, status, elapsed time); elsewhere a plain line whenever the state or
    status changes. Always on stderr, so stdout holds only the result."""

    def __init__(self, shown: Console) -> None:
        self._console = shown
        self._started = time.monotonic()
        self._last: tuple[str, str] | None = None
        self._status: Status | None = None

    def __enter__(self) -> WaitDisplay:
        if self._console.is_terminal:
            self._status = self._console.status("waiting for the CVM...")
            self._status.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._status is not None:
            self._status.stop()

    def __call__(self, cvm: CVMOut) -> None:
        elapsed = time.monotonic() - self._started
        seen = (cvm.state, cvm.status)
        line = f"{elapsed:6.1f}s  state {cvm.state}, status {cvm.status}"
        if seen != self._last:
            self._console.print(line)
            self._last = seen
        if self._status is not None:
            self._status.update(f"state {cvm.state}, status {cvm.status}  ({elapsed:.0f}s)")
