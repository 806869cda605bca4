"""Day bitmaps of uptime samples."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from prism_backends.statistics.bitmap import (
    bitmap_size,
    samples_of,
    slot_index,
    slot_start,
    slots_per_day,
    with_sample,
)


def test_sizes_for_the_default_interval() -> None:
    assert slots_per_day(300) == 288
    assert bitmap_size(300) == 36
    assert bitmap_size(7) == 1543  # 12343 slots: a partial last byte


def test_slots_restart_at_midnight_utc() -> None:
    moment = datetime(2026, 11, 27, 13, 7, 59, tzinfo=UTC)
    assert slot_start(moment, 300) == datetime(2026, 11, 27, 13, 5, tzinfo=UTC)
    assert slot_index(slot_start(moment, 300), 300) == (date(2026, 11, 27), 157)


@given(
    st.dictionaries(st.integers(min_value=0, max_value=287), st.booleans(), max_size=60),
)
def test_recorded_samples_read_back(samples: dict[int, bool]) -> None:
    seen = up = bytes(bitmap_size(300))
    for index, is_up in samples.items():
        seen, up = with_sample(seen, up, index, is_up)
    day = date(2026, 1, 1)
    read = samples_of(day, 300, seen, up)
    assert {sample.index: sample.up for sample in read} == samples
    midnight = datetime(2026, 1, 1, tzinfo=UTC)
    assert all(s.timestamp == midnight + timedelta(seconds=300 * s.index) for s in read)


def test_a_later_sample_of_the_same_slot_wins() -> None:
    seen = up = bytes(36)
    seen, up = with_sample(seen, up, 5, True)
    seen, up = with_sample(seen, up, 5, False)
    (sample,) = samples_of(date(2026, 1, 1), 300, seen, up)
    assert sample.up is False
