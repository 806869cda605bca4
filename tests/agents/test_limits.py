"""The pure budgets and cuts that bound what one agent may make the service keep,
and the keyed limiter of HTTP requests built on the same buckets."""

from __future__ import annotations

from prism_backends.agents.limits import (
    MIN_MESSAGE_COST,
    AgentLimits,
    Budget,
    cut,
)
from prism_backends.buckets import KeyedLimiter, TokenBucket


def test_a_bucket_spends_what_it_has_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(capacity=10, rate=2, updated=0.0)
    assert bucket.take(10, now=0.0)
    assert not bucket.take(1, now=0.0)
    assert not bucket.take(3, now=1.0)  # 2 back after a second, not 3
    assert bucket.take(2, now=1.0)
    assert bucket.full(now=100.0) and bucket.tokens == 10  # never past its capacity


def test_a_refused_take_spends_nothing() -> None:
    bucket = TokenBucket(capacity=5, rate=1, updated=0.0)
    assert not bucket.take(6, now=0.0)
    assert bucket.take(5, now=0.0)


def test_text_within_the_cap_is_kept_whole() -> None:
    assert cut("héllo", 6) == "héllo"  # 6 bytes of UTF-8


def test_longer_text_is_cut_on_a_character_and_says_how_long_it_was() -> None:
    text = "é" * 5000  # 10,000 bytes
    kept = cut(text, 256)
    assert len(kept.encode()) <= 256
    assert kept.endswith("[cut: 10000 bytes]")
    assert kept.startswith("é" * 50) and "\ufffd" not in kept


def test_a_budget_refuses_past_its_burst_and_reports_what_it_dropped_once() -> None:
    limits = AgentLimits(bytes_per_second=1024, evidence_per_minute=2)
    budget = Budget(limits, now=0.0)
    allowed = sum(budget.allow_message(1024, now=0.0) for _ in range(40))
    assert allowed == 16  # sixteen seconds' worth
    assert [budget.allow_evidence(now=0.0) for _ in range(3)] == [True, True, False]
    dropped = budget.take_dropped()
    assert dropped is not None
    assert (dropped.messages, dropped.size, dropped.evidence) == (24, 24 * 1024, 1)
    assert dropped.describe(limits) == (
        "dropped 24 messages (24576 bytes) over the rate of 1024 bytes per second "
        "and 1 evidence over the rate of 2 a minute"
    )
    assert budget.take_dropped() is None


def test_tiny_messages_cost_a_floor_and_long_ones_what_is_kept() -> None:
    budget = Budget(AgentLimits(bytes_per_second=1024), now=0.0)
    floods = sum(budget.allow_message(0, now=0.0) for _ in range(1000))
    assert floods == 16 * 1024 // MIN_MESSAGE_COST
    fresh = Budget(AgentLimits(bytes_per_second=1024), now=0.0)
    # A 1 MiB line is kept cut to 1 KiB here: it costs 1 KiB, not 1 MiB.
    assert sum(fresh.allow_message(1 << 20, now=0.0, kept=1024) for _ in range(20)) == 16


def test_a_budget_is_idle_once_refilled_and_reported() -> None:
    budget = Budget(AgentLimits(bytes_per_second=1024, evidence_per_minute=1), now=0.0)
    budget.allow_message(4096, now=0.0)
    assert not budget.idle(now=1.0)
    assert budget.idle(now=5.0)


def test_a_keyed_limiter_limits_each_key_apart_and_says_when_to_retry() -> None:
    limiter = KeyedLimiter(rate=2, burst=3)
    assert [limiter.retry_after("a", now=0.0) for _ in range(4)] == [None, None, None, 1]
    assert limiter.retry_after("b", now=0.0) is None  # another key, its own bucket
    assert limiter.retry_after("a", now=0.5) is None  # one back after half a second
    slow = KeyedLimiter(rate=0.1, burst=1)
    assert slow.retry_after("a", now=0.0) is None
    assert slow.retry_after("a", now=0.0) == 10


def test_a_keyed_limiter_remembers_a_bounded_number_of_keys() -> None:
    limiter = KeyedLimiter(rate=1, burst=1, max_keys=2)
    for key in ("a", "b", "c"):
        assert limiter.retry_after(key, now=0.0) is None
    assert limiter.retry_after("c", now=0.0) == 1  # remembered
    assert limiter.retry_after("a", now=0.0) is None  # forgotten: a full bucket again
