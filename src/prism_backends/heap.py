"""What a long-running process does with its heap once it has started."""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Collect what start-up left behind, then exempt everything that remains
    (modules, classes, the app's routes and validators) from later collections.

    Those objects live as long as the process, yet each full collection walked
    them all again: about 100 ms with the GIL held, every few seconds under load,
    which every request in flight waited out (a view's p99 was 140 ms against a
    p50 of 25 ms; bench/README.md). Objects made after this call are collected
    as before.
    """
    gc.collect()
    gc.freeze()
