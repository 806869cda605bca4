"""The ``prism-backends`` command, as an operator runs it.

Most tests use typer's CliRunner; those marked ``slow`` run the real
``python -m prism_backends`` in a subprocess.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from prism_backends.auth.keys import KEY_FILE, load_issuer_key
from prism_backends.auth.permissions import Role
from prism_backends.cli import main as cli_main
from prism_backends.config import Settings
from prism_backends.db import migrate as migrations
from prism_backends.db.engine import make_engine
from prism_backends.runtime import Runtime
from tests.conftest import BACKENDS, POSTGRES_ENV, postgres_base_url

UNREACHABLE_POSTGRES = "postgresql+psycopg://nobody@127.0.0.1:1/prism"
SUBPROCESS_TIMEOUT = 240


def _head_revision() -> str:
    engine = make_engine("sqlite://")
    try:
        head = migrations.head_revision(engine)
    finally:
        engine.dispose()
    assert head is not None
    return head


HEAD = _head_revision()

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_BOX = re.compile(r"[\u2500-\u257f]")


def plain(output: str) -> str:
    """Terminal output without colours, frames and line wrapping."""
    return " ".join(_BOX.sub(" ", _ANSI.sub("", output)).split())


@pytest.fixture(autouse=True)
def _operator_shell(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A clean, wide shell in an empty directory."""
    for name in list(os.environ):
        if name.startswith("PRISM_BACKENDS_") and not name.startswith("PRISM_BACKENDS_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERMINAL_WIDTH", "200")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(autouse=True)
def _close_runtimes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Commands that exit early leave their engine open; close it after the test so
    that no connection is garbage-collected during a later one."""
    built: list[Runtime] = []
    original = cli_main._runtime

    def _recording(settings: Settings, *, share_metrics: bool = False) -> Runtime:
        # Not shared: multiprocess metrics would switch this whole test process over.
        runtime = original(settings)
        built.append(runtime)
        return runtime

    monkeypatch.setattr(cli_main, "_runtime", _recording)
    yield
    for runtime in built:
        runtime.close()


def invoke(runner: CliRunner, *args: str) -> Result:
    """Run the command as a fresh process would: the root logger has no handlers
    (pytest's own are set aside meanwhile), so its logging setup really happens."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.handlers.clear()
    try:
        return runner.invoke(cli_main.app, list(args), prog_name="prism-backends")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(params=BACKENDS)
def empty_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store nobody has migrated: a new SQLite file or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    base = postgres_base_url()
    if base is None:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}")
    schema = f"prism_cli_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def revision_of(url: str) -> str | None:
    engine = make_engine(url)
    try:
        return migrations.current_revision(engine)
    finally:
        engine.dispose()


def sqlite_revision(path: Path) -> str | None:
    connection = sqlite3.connect(path)
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if "alembic_version" not in tables:
            return None
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        return str(row[0]) if row else None
    finally:
        connection.close()


def sqlite_tables(path: Path) -> set[str]:
    connection = sqlite3.connect(path)
    try:
        return {
            str(row[0])
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    finally:
        connection.close()


def verify(token: str, data_dir: Path) -> dict[str, object]:
    """The token's claims, checked against the public half of the data dir's key."""
    public = load_issuer_key(data_dir / KEY_FILE).public_key()
    claims: dict[str, object] = jwt.decode(
        token, public, algorithms=["EdDSA"], issuer="prism-backends", audience="prism-backends"
    )
    return claims


def assert_usage_error(result: Result, *fragments: str) -> None:
    message = plain(result.output)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in message, result.output


# --- token issue -----------------------------------------------------------------------


def test_token_issue_prints_one_verifiable_token(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(runner, "token", "issue", "--domain", "dom-1", "--data-dir", str(data_dir))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    claims = verify(lines[0], data_dir)
    assert claims["domain"] == "dom-1"
    assert claims["role"] == "admin"  # the default
    assert claims["sub"] == "admin"


def test_token_issue_carries_role_user_and_ttl(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(
        runner,
        "token", "issue",
        "--domain", "team.a_b-9",
        "--role", "member",
        "--user", "bob",
        "--ttl", "30m",
        "--data-dir", str(data_dir),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    claims = verify(result.stdout.strip(), data_dir)
    assert claims["domain"] == "team.a_b-9"
    assert claims["role"] == "member"
    assert claims["sub"] == "bob"
    assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
    assert claims["exp"] - claims["iat"] == 30 * 60


@pytest.mark.parametrize(("ttl", "seconds"), [("90s", 90), ("24h", 86400), ("7d", 7 * 86400)])
def test_token_issue_ttl_units(runner: CliRunner, data_dir: Path, ttl: str, seconds: int) -> None:
    result = invoke(
        runner, "token", "issue", "--domain", "d", "--ttl", ttl, "--data-dir", str(data_dir)
    )
    assert result.exit_code == 0, result.output
    claims = verify(result.stdout.strip(), data_dir)
    assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
    assert claims["exp"] - claims["iat"] == seconds


def test_token_issue_reuses_the_data_dir_key(runner: CliRunner, data_dir: Path) -> None:
    first = invoke(runner, "token", "issue", "--domain", "a", "--data-dir", str(data_dir))
    key_pem = (data_dir / KEY_FILE).read_bytes()
    second = invoke(runner, "token", "issue", "--domain", "b", "--data-dir", str(data_dir))

    assert (data_dir / KEY_FILE).read_bytes() == key_pem
    assert (data_dir / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert verify(first.stdout.strip(), data_dir)["domain"] == "a"
    assert verify(second.stdout.strip(), data_dir)["domain"] == "b"


def test_issued_token_is_accepted_by_the_service_verifier(
    runner: CliRunner, data_dir: Path
) -> None:
    result = invoke(
        runner, "token", "issue", "--domain", "dom-1", "--role", "member",
        "--data-dir", str(data_dir),
    )  # fmt: skip

    principal = Runtime(Settings(data_dir=data_dir)).verifier.verify(result.stdout.strip())

    assert dict(principal.roles_by_domain) == {"dom-1": Role.MEMBER}


def test_token_issue_uses_issuer_and_audience_from_the_config_file(
    runner: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "prism.toml"
    config.write_text('jwt_issuer = "prism-eu"\njwt_audience = "tenants"\n', encoding="utf-8")

    result = invoke(
        runner, "token", "issue", "--domain", "d", "--config", str(config),
        "--data-dir", str(data_dir),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    public = load_issuer_key(data_dir / KEY_FILE).public_key()
    claims = jwt.decode(
        result.stdout.strip(), public, algorithms=["EdDSA"], issuer="prism-eu", audience="tenants"
    )
    assert claims["domain"] == "d"


def test_token_issue_key_location_follows_env_data_dir(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir = tmp_path / "from-env"
    monkeypatch.setenv("PRISM_BACKENDS_DATA_DIR", str(env_dir))

    result = invoke(runner, "token", "issue", "--domain", "d")

    assert result.exit_code == 0, result.output
    assert verify(result.stdout.strip(), env_dir)["domain"] == "d"


@pytest.mark.parametrize("ttl", ["0h", "5x", "-1h", "1.5h", "h", "24", ""])
def test_token_issue_bad_ttl_is_a_usage_error(runner: CliRunner, data_dir: Path, ttl: str) -> None:
    result = invoke(
        runner, "token", "issue", "--domain", "d", "--ttl", ttl, "--data-dir", str(data_dir)
    )
    assert_usage_error(result, f"'{ttl}'", "24h")


def test_token_issue_bad_ttl_message_names_the_option(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(
        runner, "token", "issue", "--domain", "d", "--ttl", "5x", "--data-dir", str(data_dir)
    )
    # As for --domain and --role: the operator is told which option is wrong.
    assert_usage_error(result, "--ttl")


@pytest.mark.parametrize("domain", ["bad domain", "a/b", "x" * 65, "", "dom!"])
def test_token_issue_bad_domain_is_a_usage_error(
    runner: CliRunner, data_dir: Path, domain: str
) -> None:
    result = invoke(runner, "token", "issue", "--domain", domain, "--data-dir", str(data_dir))
    assert_usage_error(result, "--domain", "1-64 characters")


def test_token_issue_without_domain_is_a_usage_error(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(runner, "token", "issue", "--data-dir", str(data_dir))
    assert_usage_error(result, "--domain")


@pytest.mark.parametrize("role", ["owner", "ADMIN ", "root", ""])
def test_token_issue_bad_role_is_a_usage_error(
    runner: CliRunner, data_dir: Path, role: str
) -> None:
    result = invoke(
        runner, "token", "issue", "--domain", "d", "--role", role, "--data-dir", str(data_dir)
    )
    assert_usage_error(result, "--role", "admin", "member")


# --- --help --------------------------------------------------------------------------

COMMON = {
    "--config": "TOML config file",
    "--data-dir": "Data directory for the SQLite store and keys",
    "--database-url": "postgresql+psycopg://",
    "--set": "Any setting by its name",
}
SERVER = {
    **COMMON,
    "--host": "Listen address",
    "--port": "HTTP port",
    "--log-level": "debug, info, warning or error",
}
HELP_CASES: list[tuple[tuple[str, ...], str, dict[str, str]]] = [
    (("serve",), "Run everything in one process", SERVER),
    (("api",), "Run only the HTTP API", SERVER),
    (
        ("worker",),
        "Run only the lifecycle workers",
        {
            **COMMON,
            "--log-level": "debug, info, warning or error",
            "--concurrency": "CVMs handled at once",
        },
    ),
    (("migrate",), "Apply the database migrations", COMMON),
    (
        ("token", "issue"),
        "Print one bearer token",
        {
            "--domain": "Domain (workspace) id",
            "--role": "admin: read, create, delete; member: read",
            "--user": "The token's subject",
            "--ttl": "Lifetime: 90s, 30m, 24h, 7d",
            "--config": "TOML config file",
            "--data-dir": "Data directory for the SQLite store and keys",
        },
    ),
]


@pytest.mark.parametrize(
    ("command", "summary", "options"),
    HELP_CASES,
    ids=[" ".join(case[0]) for case in HELP_CASES],
)
def test_help_lists_every_option_with_its_help(
    runner: CliRunner, command: tuple[str, ...], summary: str, options: dict[str, str]
) -> None:
    result = invoke(runner, *command, "--help")

    assert result.exit_code == 0, result.output
    page = plain(result.output)
    assert summary in page
    for option, help_text in options.items():
        assert re.search(rf"{re.escape(option)}\b", page), f"{option} missing:\n{result.output}"
        start = page.index(option)
        assert help_text in page[start : start + 400], f"help of {option}:\n{result.output}"


def test_top_level_help_lists_the_commands(runner: CliRunner) -> None:
    result = invoke(runner, "--help")

    assert result.exit_code == 0, result.output
    page = plain(result.output)
    for command in ("serve", "api", "worker", "migrate", "token"):
        assert re.search(rf"\b{command}\b", page), command
    assert "Control plane for confidential VMs" in page


def test_no_arguments_shows_help(runner: CliRunner) -> None:
    result = invoke(runner)
    page = plain(result.output)
    assert "migrate" in page and "serve" in page
    assert "Traceback" not in result.output


# --- migrate ------------------------------------------------------------------------


def test_migrate_creates_the_sqlite_store_at_head(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(runner, "migrate", "--data-dir", str(data_dir))

    assert result.exit_code == 0, result.output
    database = data_dir / "prism-backends.db"
    assert database.is_file()
    assert sqlite_revision(database) == HEAD
    assert {"cvms", "cvm_uptime_days", "agent_credentials"} <= sqlite_tables(database)
    assert f"store is at schema {HEAD}" in result.stderr


def test_migrate_twice_is_harmless(runner: CliRunner, data_dir: Path) -> None:
    assert invoke(runner, "migrate", "--data-dir", str(data_dir)).exit_code == 0
    again = invoke(runner, "migrate", "--data-dir", str(data_dir))
    assert again.exit_code == 0, again.output
    assert sqlite_revision(data_dir / "prism-backends.db") == HEAD


def test_migrate_an_empty_store_by_url(runner: CliRunner, empty_store_url: str) -> None:
    assert revision_of(empty_store_url) is None

    result = invoke(runner, "migrate", "--database-url", empty_store_url)

    assert result.exit_code == 0, result.output
    assert revision_of(empty_store_url) == HEAD


def test_migrate_data_dir_flag_beats_env_which_beats_config_file(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "prism.toml"
    config.write_text(f'data_dir = "{tmp_path / "from-file"}"\n', encoding="utf-8")

    assert invoke(runner, "migrate", "--config", str(config)).exit_code == 0
    assert (tmp_path / "from-file" / "prism-backends.db").is_file()

    monkeypatch.setenv("PRISM_BACKENDS_DATA_DIR", str(tmp_path / "from-env"))
    assert invoke(runner, "migrate", "--config", str(config)).exit_code == 0
    assert (tmp_path / "from-env" / "prism-backends.db").is_file()

    result = invoke(
        runner, "migrate", "--config", str(config), "--data-dir", str(tmp_path / "from-flag")
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-flag" / "prism-backends.db").is_file()


def test_migrate_default_data_dir_is_in_the_working_directory(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = invoke(runner, "migrate")
    assert result.exit_code == 0, result.output
    assert sqlite_revision(tmp_path / ".prism-backends" / "prism-backends.db") == HEAD


def test_migrate_config_file_named_by_environment(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "prism.toml"
    config.write_text(f'data_dir = "{tmp_path / "configured"}"\n', encoding="utf-8")
    monkeypatch.setenv("PRISM_BACKENDS_CONFIG", str(config))

    result = invoke(runner, "migrate")

    assert result.exit_code == 0, result.output
    assert sqlite_revision(tmp_path / "configured" / "prism-backends.db") == HEAD


def test_migrate_unreachable_store_fails_cleanly(runner: CliRunner) -> None:
    result = invoke(runner, "migrate", "--database-url", UNREACHABLE_POSTGRES)

    assert result.exit_code == 1, result.output
    assert "cannot migrate the store" in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


# --- bad configuration ----------------------------------------------------------------


def test_missing_config_file_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    result = invoke(runner, "migrate", "--config", str(missing))
    assert_usage_error(result, "--config", "missing.toml")


BAD_CONFIGS: list[tuple[str, str, str]] = [
    ("unknown-key", "prot = 9000\n", "prot"),
    ("out-of-range", "worker_concurrency = 0\n", "worker_concurrency"),
    ("wrong-type", 'port = "http"\n', "port"),
    ("toml-syntax", "port = \n", "prism.toml"),
]


@pytest.mark.parametrize(
    ("content", "named"), [case[1:] for case in BAD_CONFIGS], ids=[case[0] for case in BAD_CONFIGS]
)
def test_bad_config_file_is_a_usage_error_naming_the_problem(
    runner: CliRunner, tmp_path: Path, content: str, named: str
) -> None:
    config = tmp_path / "prism.toml"
    config.write_text(content, encoding="utf-8")

    result = invoke(runner, "migrate", "--config", str(config), "--data-dir", str(tmp_path / "d"))

    assert_usage_error(result, named)
    assert not (tmp_path / "d").exists()


BAD_ENVIRONMENT: list[tuple[str, str, str]] = [
    ("PRISM_BACKENDS_PORT", "http", "port"),
    ("PRISM_BACKENDS_WORKER_CONCURRENCY", "0", "worker_concurrency"),
    ("PRISM_BACKENDS_JWT_ALGORITHMS", "EdDSA", "jwt_algorithms"),
]


@pytest.mark.parametrize(("variable", "value", "named"), BAD_ENVIRONMENT)
def test_bad_environment_is_a_usage_error_naming_the_setting(
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    variable: str,
    value: str,
    named: str,
) -> None:
    monkeypatch.setenv(variable, value)
    result = invoke(runner, "migrate", "--data-dir", str(data_dir))
    assert_usage_error(result, named)


class _ServeCalled(Exception):
    pass


class _WorkersBuilt(Exception):
    pass


@pytest.fixture
def no_servers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the HTTP server and the workers: a test learns whether they were
    reached instead of having them run forever."""
    reached: list[str] = []

    def fake_serve(runtime: Runtime) -> None:
        reached.append("http")
        raise _ServeCalled

    class FakeWorkers:
        def __init__(self, *args: object) -> None:
            reached.append("workers")
            raise _WorkersBuilt

    monkeypatch.setattr(cli_main, "_serve_http", fake_serve)
    monkeypatch.setattr(cli_main, "LifecycleWorkers", FakeWorkers)
    return reached


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--port", "0"), "port"),
        (("--port", "70000"), "port"),
        (("--log-level", "loud"), "log_level"),
    ],
)
def test_api_bad_flag_is_a_usage_error(
    runner: CliRunner, data_dir: Path, no_servers: list[str], args: tuple[str, ...], named: str
) -> None:
    result = invoke(runner, "api", "--data-dir", str(data_dir), *args)
    assert_usage_error(result, named)
    assert no_servers == []


@pytest.mark.parametrize("concurrency", ["0", "257", "many"])
def test_worker_bad_concurrency_is_a_usage_error(
    runner: CliRunner, data_dir: Path, no_servers: list[str], concurrency: str
) -> None:
    result = invoke(runner, "worker", "--data-dir", str(data_dir), "--concurrency", concurrency)
    assert_usage_error(result, "--concurrency")
    assert no_servers == []


# --- api and worker need a migrated store -----------------------------------------------


@pytest.mark.parametrize("command", ["api", "worker"])
def test_refuses_to_start_on_a_store_that_is_not_migrated(
    runner: CliRunner, no_servers: list[str], data_dir: Path, command: str
) -> None:
    result = invoke(runner, command, "--data-dir", str(data_dir))

    assert result.exit_code == 1, result.output
    assert "prism-backends migrate" in result.stderr
    assert "Traceback" not in result.output
    assert no_servers == []
    # It does not migrate on its own either.
    assert sqlite_revision(data_dir / "prism-backends.db") is None


@pytest.mark.parametrize("command", ["api", "worker"])
def test_refuses_to_start_on_an_empty_store_by_url(
    runner: CliRunner, no_servers: list[str], empty_store_url: str, command: str
) -> None:
    result = invoke(runner, command, "--database-url", empty_store_url)

    assert result.exit_code == 1, result.output
    assert "prism-backends migrate" in result.stderr
    assert no_servers == []
    assert revision_of(empty_store_url) is None


@pytest.mark.parametrize("command", ["api", "worker"])
def test_unreachable_store_is_reported_without_a_traceback(
    runner: CliRunner, no_servers: list[str], command: str
) -> None:
    result = invoke(runner, command, "--database-url", UNREACHABLE_POSTGRES)

    assert result.exit_code == 1, result.output
    assert "cannot reach the store" in result.stderr
    assert "Traceback" not in result.output
    assert no_servers == []


def test_api_starts_serving_on_a_migrated_store(
    runner: CliRunner, no_servers: list[str], data_dir: Path
) -> None:
    assert invoke(runner, "migrate", "--data-dir", str(data_dir)).exit_code == 0

    result = invoke(runner, "api", "--data-dir", str(data_dir))

    assert isinstance(result.exception, _ServeCalled), result.output
    assert no_servers == ["http"]


def test_worker_starts_its_workers_on_a_migrated_store(
    runner: CliRunner, no_servers: list[str], data_dir: Path
) -> None:
    assert invoke(runner, "migrate", "--data-dir", str(data_dir)).exit_code == 0

    result = invoke(runner, "worker", "--data-dir", str(data_dir))

    assert isinstance(result.exception, _WorkersBuilt), result.output
    assert no_servers == ["workers"]


def test_serve_migrates_before_it_starts(
    runner: CliRunner, no_servers: list[str], data_dir: Path
) -> None:
    result = invoke(runner, "serve", "--data-dir", str(data_dir))

    assert isinstance(result.exception, _WorkersBuilt), result.output
    assert sqlite_revision(data_dir / "prism-backends.db") == HEAD


# --- real processes ----------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PRISM_BACKENDS_") or name.startswith("PRISM_BACKENDS_TEST_")
    }
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "prism_backends", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


@pytest.mark.slow
def test_process_token_issue_prints_exactly_one_token(tmp_path: Path, data_dir: Path) -> None:
    started = int(time.time())
    done = run_cli(
        "token", "issue", "--domain", "dom-9", "--role", "member", "--data-dir", str(data_dir),
        cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    assert done.stdout.endswith("\n")
    (token,) = done.stdout.splitlines()
    claims = verify(token, data_dir)
    assert claims["domain"] == "dom-9"
    assert claims["role"] == "member"
    assert isinstance(claims["exp"], int)
    assert claims["exp"] >= started + 24 * 3600  # the default lifetime
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_process_token_issue_bad_values_are_usage_errors(tmp_path: Path, data_dir: Path) -> None:
    done = run_cli(
        "token", "issue", "--domain", "no spaces", "--data-dir", str(data_dir), cwd=tmp_path
    )

    assert done.returncode == 2
    assert done.stdout == ""
    assert "--domain" in plain(done.stderr)
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_process_migrate_creates_the_store_at_head(tmp_path: Path, data_dir: Path) -> None:
    done = run_cli("migrate", "--data-dir", str(data_dir), cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    database = data_dir / "prism-backends.db"
    assert sqlite_revision(database) == HEAD
    assert {"cvms", "cvm_uptime_days", "agent_credentials"} <= sqlite_tables(database)
    assert f"store is at schema {HEAD}" in done.stderr
    assert "Traceback" not in done.stderr


def test_token_issue_refuses_a_lifetime_beyond_the_cap(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(
        runner, "token", "issue", "--domain", "d", "--ttl", "1000000d", "--data-dir", str(data_dir)
    )
    assert_usage_error(result, "--ttl", "at most 90d")
    assert (
        invoke(
            runner, "token", "issue", "--domain", "d", "--ttl", "90d", "--data-dir", str(data_dir)
        ).exit_code
        == 0
    )


# --- every setting: --set and 'settings' -----------------------------------------------


def test_settings_lists_every_setting_with_its_help_as_a_config_file(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = invoke(runner, "settings", "--data-dir", str(tmp_path / "d"))
    assert result.exit_code == 0, result.output
    for name, field in Settings.model_fields.items():
        assert re.search(rf"^#? ?{name} =", result.stdout, re.M), name
        assert f"env: PRISM_BACKENDS_{name.upper()}" in result.stdout
        assert (field.description or "").split()[0] in result.stdout
    written = tmp_path / "settings.toml"
    written.write_text(result.stdout)
    again = invoke(runner, "settings", "--config", str(written))
    assert again.exit_code == 0, again.output
    assert again.stdout == result.stdout  # its output is a config file meaning the same


def test_set_gives_any_setting_a_flag(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(
        runner,
        "settings",
        "--data-dir",
        str(data_dir),
        "--set",
        "rate_limit_per_source=7",
        "--set",
        'jwt-algorithms=["ES256", "EdDSA"]',
        "--set",
        "attestation_crl=closed",
    )
    assert result.exit_code == 0, result.output
    assert "rate_limit_per_source = 7.0" in result.stdout
    assert 'jwt_algorithms = ["ES256", "EdDSA"]' in result.stdout
    assert 'attestation_crl = "closed"' in result.stdout


@pytest.mark.parametrize(
    ("item", "fragments"),
    [
        ("rate_limit_per_sourc=7", ("no setting", "did you mean rate_limit_per_source")),
        ("port", ("NAME=VALUE",)),
        ("port=eighty", ("port", "valid integer")),
        ("jwt_algorithms=EdDSA", ("not JSON",)),
    ],
)
def test_a_bad_set_is_a_usage_error_naming_it(
    runner: CliRunner, data_dir: Path, item: str, fragments: tuple[str, ...]
) -> None:
    result = invoke(runner, "settings", "--data-dir", str(data_dir), "--set", item)
    assert_usage_error(result, *fragments)


def test_a_named_flag_beats_set(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(
        runner, "settings", "--set", f"data_dir={data_dir}-set", "--data-dir", str(data_dir)
    )
    assert f'data_dir = "{data_dir}"' in result.stdout


def test_settings_shows_no_secret(runner: CliRunner, data_dir: Path) -> None:
    result = invoke(
        runner,
        "settings",
        "--database-url",
        "postgresql+psycopg://prism:hunter2@db/prism",
        "--set",
        "agents_key_encryption_key=" + "A" * 44,
    )
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.stdout and "A" * 44 not in result.stdout
    assert "postgresql+psycopg://prism:***@db/prism" in result.stdout
