"""settle_heap: start-up's objects leave the collector's passes; later ones do not."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from prism_backends.heap import settle_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    return weakref.ref(first)


@pytest.fixture
def unfrozen_after() -> Iterator[None]:
    yield
    gc.unfreeze()


@pytest.mark.usefixtures("unfrozen_after")
def test_start_up_garbage_is_collected_and_what_remains_is_frozen() -> None:
    left_behind = _cycle()
    settle_heap()
    assert left_behind() is None  # collected, not frozen with the rest
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()


@pytest.mark.usefixtures("unfrozen_after")
def test_cycles_made_afterwards_are_still_collected() -> None:
    settle_heap()
    later = _cycle()
    gc.collect()
    assert later() is None
