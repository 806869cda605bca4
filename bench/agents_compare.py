"""Ours against the anchor: the figures of ``agents_streams`` side by side, their ratios,
and the targets the agents endpoint is held to.

The targets are for the full population: 10,000 streams in at most 512 MiB of resident
memory, at most 20 % of one core per 10 s heartbeat round, and a connect that costs at
most 1.5 times the anchor's CPU. A smaller run is held to them by projecting linearly from
what it measured per stream and per agent; the projected rows say which figures are such
projections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Summary = dict[str, Any]

TARGET_STREAMS = 10_000
TARGET_RSS_MIB = 512.0
TARGET_HEARTBEAT_SECONDS = 10.0
TARGET_CORE_SHARE = 0.20  # of one core, per heartbeat round
TARGET_CONNECT_CPU_RATIO = 1.5  # ours / the anchor
# 20 % of a core for a 10 s round, shared by 10,000 agents: 0.2 ms each.
TARGET_CPU_MS_PER_AGENT_PER_ROUND = (
    1000 * TARGET_CORE_SHARE * TARGET_HEARTBEAT_SECONDS / TARGET_STREAMS
)


def figure(summary: Summary, key: str) -> float | None:
    value = summary.get(key)
    return None if value is None else float(value)


def rss_at_target_mib(summary: Summary) -> float | None:
    """The idle RSS plus the target's streams, each at the measured cost of one."""
    idle, per_stream = figure(summary, "rss_idle_mib"), figure(summary, "rss_per_stream_kib")
    if idle is None or per_stream is None:
        return None
    return idle + TARGET_STREAMS * per_stream / 1024


def core_percent_at_target(summary: Summary) -> float | None:
    """The target's agents at the measured CPU per agent per round, over a target round."""
    per_agent_ms = figure(summary, "agents_cpu_ms_per_agent_per_round")
    if per_agent_ms is None:
        return None
    return 100 * TARGET_STREAMS * per_agent_ms / 1000 / TARGET_HEARTBEAT_SECONDS


def rss_per_stream_budget_kib(summary: Summary) -> float | None:
    """What one stream may hold for the target's streams to fit beside this idle RSS."""
    idle = figure(summary, "rss_idle_mib")
    return None if idle is None else (TARGET_RSS_MIB - idle) * 1024 / TARGET_STREAMS


def ratio(ours: float | None, anchor: float | None) -> float | None:
    if ours is None or anchor is None or anchor == 0:
        return None
    return ours / anchor


def at_most(value: float | None, limit: float | None) -> bool | None:
    return None if value is None or limit is None else value <= limit


@dataclass(frozen=True, slots=True)
class Target:
    text: str
    met: bool | None  # None: not measured


# A target judges ours, from its summary, the figure and the ratio to the anchor.
Judge = Callable[[Summary, float | None, float | None], Target]


def rss_target(_ours: Summary, value: float | None, _ratio: float | None) -> Target:
    return Target(f"<= {TARGET_RSS_MIB:.0f} MiB", at_most(value, TARGET_RSS_MIB))


def rss_per_stream_target(ours: Summary, value: float | None, _ratio: float | None) -> Target:
    budget = rss_per_stream_budget_kib(ours)
    if budget is None:
        return Target("-", None)
    return Target(f"<= {budget:.1f} KiB for {TARGET_STREAMS:,}", at_most(value, budget))


def connect_cpu_target(_ours: Summary, _value: float | None, ratio: float | None) -> Target:
    return Target(
        f"ours/anchor <= {TARGET_CONNECT_CPU_RATIO:g}", at_most(ratio, TARGET_CONNECT_CPU_RATIO)
    )


def per_agent_cpu_target(_ours: Summary, value: float | None, _ratio: float | None) -> Target:
    limit = TARGET_CPU_MS_PER_AGENT_PER_ROUND
    return Target(f"<= {limit:.2f} ms", at_most(value, limit))


def core_target(_ours: Summary, value: float | None, _ratio: float | None) -> Target:
    limit = 100 * TARGET_CORE_SHARE
    return Target(f"<= {limit:.0f} %", at_most(value, limit))


@dataclass(frozen=True, slots=True)
class Measure:
    key: str  # its name in the JSON's ratios and targets
    label: str
    value: Callable[[Summary], float | None]
    digits: int
    judge: Judge | None = None


def from_summary(key: str) -> Callable[[Summary], float | None]:
    return lambda summary: figure(summary, key)


def measures(heartbeat: float) -> list[Measure]:
    return [
        Measure("rss_idle_mib", "RSS idle (MiB)", from_summary("rss_idle_mib"), 0),
        Measure(
            "rss_connected_mib", "RSS all connected (MiB)", from_summary("rss_connected_mib"), 0
        ),
        Measure(
            "rss_per_stream_kib",
            "RSS per stream (KiB)",
            from_summary("rss_per_stream_kib"),
            1,
            rss_per_stream_target,
        ),
        Measure(
            "rss_at_target_streams_mib",
            f"RSS at {TARGET_STREAMS:,} streams, projected (MiB)",
            rss_at_target_mib,
            0,
            rss_target,
        ),
        Measure(
            "cpu_ms_per_connect",
            "CPU per connect (ms)",
            from_summary("server_cpu_ms_per_connect"),
            2,
            connect_cpu_target,
        ),
        Measure("connect_seconds_p50", "connect p50 (s)", from_summary("connect_seconds_p50"), 2),
        Measure("connect_seconds_p99", "connect p99 (s)", from_summary("connect_seconds_p99"), 2),
        Measure(
            "cpu_seconds_per_heartbeat_interval",
            f"CPU per {heartbeat:g} s heartbeat interval (s)",
            from_summary("agents_cpu_seconds_per_heartbeat_interval"),
            2,
        ),
        Measure(
            "cpu_percent_of_one_core",
            "  the same, % of one core",
            from_summary("agents_cpu_percent_of_one_core"),
            1,
        ),
        Measure(
            "cpu_ms_per_agent_per_round",
            "CPU per agent per round (ms)",
            from_summary("agents_cpu_ms_per_agent_per_round"),
            3,
            per_agent_cpu_target,
        ),
        Measure(
            "core_percent_at_target",
            f"{TARGET_STREAMS:,} agents per {TARGET_HEARTBEAT_SECONDS:g} s round, "
            "projected (% of one core)",
            core_percent_at_target,
            1,
            core_target,
        ),
    ]


@dataclass(frozen=True, slots=True)
class Row:
    measure: Measure
    ours: float | None
    anchor: float | None
    ratio: float | None
    target: Target | None


def compare(ours: Summary, anchor: Summary, *, heartbeat: float) -> list[Row]:
    rows = []
    for measure in measures(heartbeat):
        ours_value, anchor_value = measure.value(ours), measure.value(anchor)
        between = ratio(ours_value, anchor_value)
        judged = measure.judge(ours, ours_value, between) if measure.judge else None
        rows.append(Row(measure, ours_value, anchor_value, between, judged))
    return rows


def number_text(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def met_text(target: Target | None) -> str:
    if target is None or target.met is None:
        return ""
    return "met" if target.met else "NOT MET"


def comparison_table(rows: list[Row]) -> str:
    width = max(len(row.measure.label) for row in rows)
    header = (
        f"{'measure':<{width}}  {'ours':>10}  {'anchor':>10}  {'ours/anchor':>11}  "
        f"{'target (ours)':<28}  met"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        target = row.target.text if row.target else ""
        lines.append(
            f"{row.measure.label:<{width}}  {number_text(row.ours, row.measure.digits):>10}  "
            f"{number_text(row.anchor, row.measure.digits):>10}  "
            f"{number_text(row.ratio, 2):>11}  {target:<28}  {met_text(row.target)}".rstrip()
        )
    return "\n".join(lines)


def ratios_json(rows: list[Row]) -> dict[str, float | None]:
    return {row.measure.key: None if row.ratio is None else round(row.ratio, 3) for row in rows}


def targets_json(rows: list[Row]) -> dict[str, dict[str, Any]]:
    return {
        row.measure.key: {"target": row.target.text, "ours": row.ours, "met": row.target.met}
        for row in rows
        if row.target is not None
    }
