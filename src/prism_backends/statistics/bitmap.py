"""Uptime samples as day bitmaps (pure): slot arithmetic, setting and reading bits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

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
