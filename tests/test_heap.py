"""settle_heap: start-up's objects leave the collector's passes; later ones do not.

Each check runs in a fresh interpreter: collecting in a test process would
finalise what earlier tests left behind, and freezing would keep the rest."""

from __future__ import annotations

import subprocess
import sys
import textwrap

_CYCLES = """
import gc
import weakref

from prism_backends.heap import settle_heap


class Node:
    other = None


def cycle():
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)
"""


def _run(check: str) -> None:
    script = _CYCLES + textwrap.dedent(check)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_start_up_garbage_is_collected_and_what_remains_is_frozen() -> None:
    _run(
        """
        left_behind = cycle()
        settle_heap()
        assert left_behind() is None, "start-up garbage was frozen, not collected"
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()
        """
    )


def test_cycles_made_afterwards_are_still_collected() -> None:
    _run(
        """
        settle_heap()
        later = cycle()
        gc.collect()
        assert later() is None
        """
    )
