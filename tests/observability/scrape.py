"""Reading a ``/metrics`` answer as a test compares it: sample values by name
and labels. The test process keeps its metrics in memory for every test it
runs, so tests compare a scrape before and after their workload."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when absent (a labelled series appears on first use)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def labelled(samples: Samples, name: str) -> list[Mapping[str, str]]:
    """The label sets of every sample called ``name``."""
    return [dict(labels) for (each, labels) in samples if each == name]
