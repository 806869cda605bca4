"""Uptime samples as day bitmaps (pure): slot arithmetic, setting and reading bits."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import groupby
from typing import Protocol

SECONDS_PER_DAY = 86_400


def slots_per_day(interval_seconds: int) -> int:
    return -(-SECONDS_PER_DAY // interval_seconds)


def bitmap_size(interval_seconds: int) -> int:
    """Bytes needed for one bit per slot of a day."""
    return -(-slots_per_day(interval_seconds) // 8)


def slot_start(moment: datetime, interval_seconds: int) -> datetime:
    """The start of the sampling slot ``moment`` falls in (slots restart at midnight UTC)."""
    moment = moment.astimezone(UTC)
    midnight = datetime.combine(moment.date(), time(), tzinfo=UTC)
    index = int((moment - midnight).total_seconds()) // interval_seconds
    return midnight + timedelta(seconds=index * interval_seconds)


def slot_index(slot_at: datetime, interval_seconds: int) -> tuple[date, int]:
    """(day, bit index) of a slot start."""
    slot_at = slot_at.astimezone(UTC)
    midnight = datetime.combine(slot_at.date(), time(), tzinfo=UTC)
    return slot_at.date(), int((slot_at - midnight).total_seconds()) // interval_seconds


def with_sample(seen: bytes, up: bytes, index: int, is_up: bool) -> tuple[bytes, bytes]:
    """The two bitmaps with slot ``index`` recorded."""
    seen_bits, up_bits = bytearray(seen), bytearray(up)
    byte, mask = index // 8, 1 << (index % 8)
    seen_bits[byte] |= mask
    if is_up:
        up_bits[byte] |= mask
    else:
        up_bits[byte] &= ~mask & 0xFF
    return bytes(seen_bits), bytes(up_bits)


@dataclass(frozen=True, slots=True)
class Sample:
    index: int
    timestamp: datetime
    up: bool


def samples_of(day: date, interval_seconds: int, seen: bytes, up: bytes) -> list[Sample]:
    """Every recorded slot of a day, oldest first."""
    midnight = datetime.combine(day, time(), tzinfo=UTC)
    found = []
    for byte_index, byte in enumerate(seen):
        if not byte:
            continue
        for bit in range(8):
            if byte & (1 << bit):
                index = byte_index * 8 + bit
                found.append(
                    Sample(
                        index=index,
                        timestamp=midnight + timedelta(seconds=index * interval_seconds),
                        up=bool(up[byte_index] & (1 << bit)),
                    )
                )
    return found


class DayBits(Protocol):
    """One stored day of a CVM's samples (``statistics.models.UptimeDay``)."""

    id: int
    day: date
    interval_seconds: int
    seen: bytes
    up: bytes


@dataclass(frozen=True, slots=True)
class Window:
    samples: list[tuple[str, Sample]]  # (sample id, sample), newest first: one page
    total: int  # samples in the whole window
    up: int  # of which the agent was up


def window(days: Sequence[DayBits], since: datetime, *, offset: int, limit: int) -> Window:
    """The samples at or after ``since`` of ``days`` (newest day first): counted
    from the bitmaps without reading them one by one, and only the page
    ``offset``, ``limit`` (newest first) made into samples."""
    total = up = 0
    page: list[tuple[str, Sample]] = []
    skip = offset
    for _, group in groupby(days, key=lambda row: row.day):
        rows = list(group)
        if len(rows) == 1:
            day_total, day_up, take = _one_row(rows[0], since)
        else:  # the sampling interval changed that day: rows interleave in time
            day_total, day_up, take = _merged_rows(rows, since)
        total, up = total + day_total, up + day_up
        wanted = limit - len(page)
        if wanted <= 0 or skip >= day_total:
            skip = max(0, skip - day_total) if wanted > 0 else skip
            continue
        page.extend(take(skip, wanted))
        skip = 0
    return Window(page, total, up)


_Take = Callable[[int, int], list[tuple[str, Sample]]]


def _one_row(row: DayBits, since: datetime) -> tuple[int, int, _Take]:
    interval = row.interval_seconds
    midnight = datetime.combine(row.day, time(), tzinfo=UTC)
    first = max(0, math.ceil((since - midnight).total_seconds() / interval))
    seen = int.from_bytes(row.seen, "little") >> first << first
    up = int.from_bytes(row.up, "little") & seen

    def take(skip: int, count: int) -> list[tuple[str, Sample]]:
        found: list[tuple[str, Sample]] = []
        bits = seen
        while bits and len(found) < count:
            index = bits.bit_length() - 1
            bits ^= 1 << index
            if skip:
                skip -= 1
                continue
            moment = midnight + timedelta(seconds=index * interval)
            found.append((f"{row.id}-{index}", Sample(index, moment, bool(up >> index & 1))))
        return found

    return seen.bit_count(), up.bit_count(), take


def _merged_rows(rows: list[DayBits], since: datetime) -> tuple[int, int, _Take]:
    merged = sorted(
        (
            (f"{row.id}-{sample.index}", sample)
            for row in rows
            for sample in samples_of(row.day, row.interval_seconds, row.seen, row.up)
            if sample.timestamp >= since
        ),
        key=lambda item: item[1].timestamp,
        reverse=True,
    )

    def take(skip: int, count: int) -> list[tuple[str, Sample]]:
        return merged[skip : skip + count]

    return len(merged), sum(1 for _, sample in merged if sample.up), take
