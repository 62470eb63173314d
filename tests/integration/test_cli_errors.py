"""Operational faults from the CLI: one ``error:`` line naming the fix, exit status 3,
never a traceback and never an unbounded wait (issue 7 item 15, issue 8 item 7)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from litegate.cli import main
from tests.helpers.cli import one_line_error, run_cli, run_litegate
from tests.helpers.servers import free_port
from tests.helpers.services import postgres_server

CONFIG = """
upstreams: [{name: mock, kind: openai, base_url: "http://127.0.0.1:9/v1"}]
routes: [{name: chat, variants: [{upstream: mock, model: m}]}]
"""


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture
def locked_home(tmp_path) -> Iterator:
    """An SQLite home whose database another process holds a write lock on."""
    home = tmp_path / "home"
    assert run_cli("keys", "list", home=home)[0] == 0  # creates and migrates it
    locker = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time\n"
         f"db = sqlite3.connect({str(home / 'litegate.db')!r}, isolation_level=None)\n"
         "db.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert locker.stdout.readline().strip() == "locked"
        yield home
    finally:
        locker.kill()
        locker.wait(10)


def test_locked_sqlite_fails_after_the_configured_wait_with_one_line(locked_home, tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    # Before: both hung ~31 s, then printed a SQLAlchemy traceback (the 20 s cap failed).
    for argv in (("config", "apply", str(config)), ("keys", "create", "--name", "k")):
        result = run_litegate(*argv, home=locked_home, timeout=20, LITEGATE_DB_TIMEOUT_S="1")
        line = one_line_error(result.returncode, result.stderr)
        assert "is locked by another writer (waited 1 s)" in line
        assert "LITEGATE_DB_TIMEOUT_S" in line


def test_unreachable_postgres_is_one_line(tmp_path):
    url = f"postgresql://litegate@127.0.0.1:{free_port()}/litegate"
    for argv in (("keys", "list"), ("config", "export"), ("db", "upgrade")):
        code, _, err = run_cli(*argv, "--db", url, home=tmp_path / "home")
        line = one_line_error(code, err)
        assert "cannot connect to the database at 127.0.0.1:" in line and "check --db" in line


def test_unusable_sqlite_home_is_one_line(tmp_path):
    code, _, err = run_cli("keys", "list", home=Path("/proc/litegate-cannot-live-here"))
    assert "cannot create the SQLite database /proc/litegate-cannot-live-here/litegate.db" \
        in one_line_error(code, err)  # before: a FileNotFoundError traceback from mkdir


def test_unmigrated_postgres_names_db_upgrade_and_serve_refuses_before_starting(pg_url, tmp_path):
    home = tmp_path / "home"
    code, _, err = run_cli("keys", "list", "--db", pg_url, home=home)
    assert "is not migrated: run `litegate db upgrade`" in one_line_error(code, err)
    served = run_litegate("serve", "--port", str(free_port()), "--db", pg_url, home=home)
    assert "is not migrated: run `litegate db upgrade`" in one_line_error(served.returncode, served.stderr)
    assert served.stdout == ""
    assert run_cli("db", "upgrade", "--db", pg_url, home=home)[0] == 0
    assert run_cli("keys", "list", "--db", pg_url, home=home)[0] == 0


def test_busy_port_is_one_line_before_anything_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # Before: gateway_started was logged, then uvicorn's bind error.
        results = [run_litegate("serve", "--port", str(port), *workers, home=tmp_path / "home")
                   for workers in ((), ("--workers", "2"))]
    for result in results:
        line = one_line_error(result.returncode, result.stderr)
        assert line == (f"error: port {port} on 127.0.0.1 is already in use: stop the other "
                        "process or choose another with --port N (LITEGATE_PORT)")
        assert result.stdout == ""


def test_global_flags_before_or_after_the_command_and_version(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    # Before: "unrecognized arguments: --home" after the sub-command (exit 2).
    assert run_cli("keys", "create", "--name", "after", "--home", str(b), home=a)[0] == 0
    assert "after" in run_cli("keys", "list", "--home", str(b), home=a)[1]
    assert "after" not in run_cli("keys", "list", home=a)[1]
    assert run_cli("routes", "list", "--db", f"sqlite:///{b / 'litegate.db'}", home=a)[0] == 0
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out.startswith("litegate 0.")


def test_out_of_range_devices_are_one_line_at_start_up(tmp_path):
    """``--devices 99999999999999999999`` used to be accepted (any run of digits, even
    ``²``), and a long list had no bound: device ids are now 0-1023, at most 64 of them,
    refused in one line naming the flag before anything starts."""
    from litegate.inference.placement import PlacementError, parse_devices

    assert parse_devices("0,1023") == (0, 1023)
    assert parse_devices(",".join(map(str, range(64))))[-1] == 63
    for bad in ("99999999999999999999", "1024", "²", "0,٣", "-1", ",".join(map(str, range(65)))):
        with pytest.raises(PlacementError):
            parse_devices(bad)
    home = tmp_path / "home"
    for bad, says in (("99999999999999999999", "not a CUDA device id (0-1023"),
                      (",".join(map(str, range(65))), "at most 64 devices")):
        line = one_line_error(*run_cli("serve", "--devices", bad, home=home)[::2])
        assert says in line and line.endswith("(--devices / LITEGATE_DEVICES)"), line
        assert len(line) < 200, line
