"""The parts of ``prism-backends cvms`` that need no service: where requests
go (flags, environment, profiles), the uptime bar, the wait's progress lines
and what is done with text agents write."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from rich.console import Console

from prism_backends.cli import connection, cvm_views
from prism_backends.client.models import CVMOut, EventOut, StatSample
from tests.client.test_client_unit import TOKEN, cvm, token_for


@pytest.fixture
def profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "profiles.toml"
    monkeypatch.setenv(connection.PROFILES_ENV, str(path))
    return path


def test_without_a_profile_file_the_token_names_the_domain(profiles: Path) -> None:
    resolved = connection.resolve(None, TOKEN, None, None)
    assert resolved == connection.Connection(connection.DEFAULT_URL, TOKEN, "acme")
    assert connection.resolve("https://x/backends", TOKEN, "other", None).domain == "other"


def test_a_profile_fills_what_flags_and_environment_leave_out(profiles: Path) -> None:
    other = token_for({"domain": "elsewhere"})
    profiles.write_text(
        'default = "work"\n'
        '[profiles.work]\nurl = "https://work.example/backends"\n'
        f'token = "{TOKEN}"\ndomain = "team"\n'
    )
    profiles.chmod(0o600)
    assert connection.resolve(None, None, None, None) == connection.Connection(
        "https://work.example/backends", TOKEN, "team"
    )
    # A token from elsewhere brings its own domain, not the profile's.
    assert connection.resolve(None, other, None, None).domain == "elsewhere"
    assert connection.resolve(None, other, "given", "work").domain == "given"
    assert (
        connection.resolve("http://flag/backends", None, None, None).url == "http://flag/backends"
    )


def test_profile_mistakes_are_usage_errors(
    profiles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(typer.Exit) as missing_file:
        connection.resolve(None, TOKEN, None, "work")
    assert missing_file.value.exit_code == 2
    profiles.write_text("[profiles.work\n")
    with pytest.raises(typer.Exit):
        connection.resolve(None, TOKEN, None, None)
    assert "cannot read" in capsys.readouterr().err
    profiles.write_text("[profiles.work]\ntoken = 3\n")
    with pytest.raises(typer.Exit):
        connection.resolve(None, None, None, "work")
    assert "profiles.work.token must be a string" in capsys.readouterr().err
    with pytest.raises(typer.Exit):
        connection.resolve("ftp://x", TOKEN, None, None)
    assert "http:// or https://" in capsys.readouterr().err


def test_a_profile_file_others_can_read_is_warned_about(
    profiles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profiles.write_text(f'[profiles.default]\ntoken = "{TOKEN}"\n')
    profiles.chmod(0o644)
    assert connection.resolve(None, None, None, None).token == TOKEN
    assert "others may read it" in capsys.readouterr().err


def _sample(at: str, up: bool) -> StatSample:
    return StatSample(id=at, cvm_id="c", timestamp=at, status=up)


def test_the_uptime_bar_has_a_block_per_half_hour_and_a_row_per_day() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    samples = [
        _sample("2026-12-01T12:05:00Z", True),  # before the window's day boundary: row 1
        _sample("2026-12-02T00:00:00Z", True),
        _sample("2026-12-02T00:10:00Z", True),
        _sample("2026-12-02T00:31:00Z", True),
        _sample("2026-12-02T00:40:00Z", False),
        _sample("2026-12-02T01:00:00Z", False),
        _sample("2026-11-20T00:00:00Z", True),  # outside the window: not shown
    ]
    first, second = cvm_views.uptime_rows(samples, days=1, now=now)
    assert (first.day, second.day) == ("2026-12-01", "2026-12-02")
    assert len(first.bar) == len(second.bar) == cvm_views.CELLS_PER_DAY
    assert first.bar[24] == cvm_views.UP and first.bar.count(cvm_views.NO_SAMPLE) == 47
    assert second.bar[:4] == "█▒░·"
    assert (second.up, second.samples) == (3, 5)


def test_the_wait_prints_a_line_per_change_off_a_terminal() -> None:
    out = io.StringIO()
    display = cvm_views.WaitDisplay(Console(file=out, force_terminal=False))
    seen = [
        ("pending", "starting"),
        ("provisioning", "starting"),
        ("provisioning", "starting"),
        ("provisioned", "running"),
    ]
    with display:
        for state, status in seen:
            display(CVMOut.model_validate(cvm(state=state, status=status)))
    lines = out.getvalue().splitlines()
    assert [line.split(maxsplit=1)[1] for line in lines] == [
        "state pending, status starting",
        "state provisioning, status starting",
        "state provisioned, status running",
    ]
    assert "\x1b" not in out.getvalue()


def _event(number: int, kind: str, level: str, message: str) -> EventOut:
    return EventOut(
        id=str(number), cvm_id="c", kind=kind, timestamp="2026-12-02T05:27:48Z",
        received_at="2026-12-02T05:27:48Z", level=level, message=message, computation_id="",
        details={},
    )  # fmt: skip


def test_followed_events_keep_the_columns_of_the_table() -> None:
    out = io.StringIO()
    follower = cvm_views.EventFollower(Console(file=out, force_terminal=False, width=200))
    follower.print([_event(8, "log", "info", "agent started")])
    follower.print([])
    follower.print([_event(9, "connected", "", "agent connected")])
    follower.print([_event(10, "disconnected", "warn", "agent disconnected")])
    follower.print([_event(11, "a-kind-of-its-own", "error", "later rows widen a column")])
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["id", "received", "kind", "level", "message"]
    assert len(lines) == 5  # one header; an empty look prints nothing
    starts = [lines[0].index(name) for name in ("received", "kind", "level", "message")]
    for line in lines[1:4]:
        assert [line.index(word) for word in line.split()[1:3]] == starts[:2], line
        assert line.index("agent") == starts[3], line
    assert lines[4].index("later") > starts[3]


def test_control_characters_from_agents_are_shown_not_sent() -> None:
    assert cvm_views.printable("plain text") == "plain text"
    assert cvm_views.printable("red \x1b[31m\x07") == "red \\x1b[31m\\x07"
