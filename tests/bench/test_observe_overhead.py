"""``bench.observe_overhead`` runs end to end on a small store and prints its figures
(what it measures is read by people, not asserted)."""

from __future__ import annotations

import re

import pytest

from bench import observe_overhead


def test_it_prints_the_middlewares_cost_in_both_modes_and_a_scrape(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert observe_overhead.main(["--cvms", "300", "--requests", "300", "--scrapes", "2"]) == 0
    printed = capsys.readouterr().out
    for mode in observe_overhead.MODES:
        assert re.search(rf"^{mode}\s+[\d.]+\s+[\d.]+\s+-?[\d.]+$", printed, re.MULTILINE), printed
    assert re.search(r"/metrics over 300 CVMs .*\n  p50 [\d.]+ ms, worst [\d.]+ ms", printed)
