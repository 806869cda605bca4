"""The statistics window from the bitmaps: the same samples, totals and pages
as reading every sample one by one and sorting them (the plain way)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from prism_backends.statistics.bitmap import (
    Sample,
    bitmap_size,
    samples_of,
    window,
)

FIRST_DAY = date(2026, 11, 1)


@dataclass
class Day:
    id: int
    day: date
    interval_seconds: int
    seen: bytes
    up: bytes


def _plain(days: list[Day], since: datetime, offset: int, limit: int) -> tuple[list[str], int, int]:
    every = sorted(
        (
            (f"{row.id}-{sample.index}", sample)
            for row in days
            for sample in samples_of(row.day, row.interval_seconds, row.seen, row.up)
            if sample.timestamp >= since
        ),
        key=lambda item: item[1].timestamp,
        reverse=True,
    )
    return (
        [key for key, _ in every[offset : offset + limit]],
        len(every),
        sum(1 for _, sample in every if sample.up),
    )


@st.composite
def stored_days(draw: st.DrawFn) -> list[Day]:
    rows: list[Day] = []
    for offset in range(draw(st.integers(1, 4))):
        day = FIRST_DAY + timedelta(days=offset)
        intervals = draw(st.sampled_from([[300], [300], [300], [300, 600], [3600]]))
        for interval in intervals:
            size = bitmap_size(interval)
            seen = draw(st.binary(min_size=size, max_size=size))
            up = draw(st.binary(min_size=size, max_size=size))
            rows.append(Day(len(rows) + 1, day, interval, seen, up))
    rows.sort(key=lambda row: (row.day, -row.interval_seconds), reverse=True)
    return rows


@settings(max_examples=300, deadline=None)
@given(
    days=stored_days(),
    since_seconds=st.integers(0, 4 * 86_400),
    offset=st.integers(0, 400),
    limit=st.integers(1, 300),
)
def test_the_window_matches_reading_every_sample(
    days: list[Day], since_seconds: int, offset: int, limit: int
) -> None:
    since = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=since_seconds, microseconds=1)
    found = window(days, since, offset=offset, limit=limit)
    keys, total, up = _plain(days, since, offset, limit)
    assert [key for key, _ in found.samples] == keys
    assert (found.total, found.up) == (total, up)
    assert all(isinstance(sample, Sample) for _, sample in found.samples)
