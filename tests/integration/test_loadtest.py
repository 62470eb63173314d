"""``litegate loadtest`` against a live gateway and the fake upstream, small numbers."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import time

import pytest

from tests.helpers.cli import (
    LITEGATE_BIN,
    apply_config,
    chat_config,
    clean_env,
    create_key,
    one_line_error,
    run_cli,
)
from tests.helpers.servers import free_port
from tests.helpers.windows import clear_of_minute_edge


@pytest.fixture
def gateway(home, make_gateway, fake_upstream):
    doc = chat_config(fake_upstream.base_url)
    doc["routes"].append({"name": "limited", "limits": ["5/minute"],
                          "variants": [{"upstream": "mock", "model": "m"}]})
    doc["routes"].append({"name": "slow", "variants": [{"upstream": "mock", "model": "slow"}]})
    code, _, err = apply_config(home, doc)
    assert code == 0, err
    key = create_key(home)
    return make_gateway(), key


def _loadtest(home, server, key, *args: str) -> tuple[int, str, str]:
    return run_cli("loadtest", "--url", server.url, "--key", key, *args, home=home)


def test_loops_report_every_request_with_the_gateway_overhead(gateway, home, fake_upstream) -> None:
    server, key = gateway
    code, out, err = _loadtest(home, server, key, "--route", "chat", "--connections", "4",
                               "--loops", "5", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["requests"], report["ok"], report["errors"]) == (20, 20, {})
    assert len(fake_upstream.calls) == 21  # the pre-flight request, then 4 x 5
    lat, over = report["latency_ms"], report["overhead_ms"]
    assert lat["count"] == 20 and 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert over["count"] == 20 and over["p99"] <= lat["max"]
    assert report["rps"] > 0 and report["first_byte_ms"] is None


def test_errors_are_counted_by_status(gateway, home) -> None:
    server, key = gateway
    clear_of_minute_edge()  # exact counts: not across a window boundary
    code, out, err = _loadtest(home, server, key, "--route", "limited", "--connections", "2",
                               "--loops", "4", "--json")
    report = json.loads(out)
    # 5/minute: the pre-flight takes one, so 4 of the 8 pass and 4 get 429.
    assert code == 0, err
    assert (report["ok"], report["errors"]) == (4, {"429": 4})


def test_streams_with_ramp_up_and_duration_print_plain_progress(gateway, home, fake_upstream) -> None:
    server, key = gateway
    code, out, err = _loadtest(home, server, key, "--route", "chat", "--connections", "3",
                               "--ramp-up", "0.5", "--duration", "1.5", "--stream")
    assert code == 0, err
    progress, report = out.split("route chat: ")
    assert progress.count(" rps ") >= 1 and "active" in progress  # a plain line a second
    assert "(stream)" in report.splitlines()[0]
    assert "first byte   p50" in out and "gateway adds p50" in out and "errors       none" in out
    assert all(call["stream"] is True for call in fake_upstream.calls)
    # Each stream takes about 0.25 s (5 chunks 50 ms apart): some finished, none cut off.
    assert len(fake_upstream.stream_finished) == len(fake_upstream.calls) >= 4


def test_timeouts_are_counted_and_no_success_exits_1(gateway, home) -> None:
    server, key = gateway
    code, out, err = _loadtest(home, server, key, "--route", "slow", "--connections", "2",
                               "--loops", "1", "--timeout", "0.3", "--json")
    report = json.loads(out)
    assert code == 1, err
    assert (report["ok"], report["errors"], report["latency_ms"]) == (0, {"timeout": 2}, None)


def test_a_wrong_url_key_or_route_is_one_line(gateway, home) -> None:
    server, key = gateway
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = run_cli("loadtest", "--url", dead, "--key", key, "--route", "chat",
                           "--loops", "1", home=home)
    assert one_line_error(code, err) == (
        f"error: cannot connect to {dead}: start the gateway or correct --url")
    code, _, err = _loadtest(home, server, "lg-wrong", "--route", "chat", "--loops", "1")
    assert "refused --key (401)" in one_line_error(code, err)
    code, _, err = _loadtest(home, server, key, "--route", "nope", "--loops", "1")
    assert "route 'nope' not found (404)" in one_line_error(code, err)
    code, _, err = _loadtest(home, server, key, "--route", "chat", "--loops", "0")
    assert (code, err.strip()) == (2, "error: --loops: must be >= 1")


def test_a_terminal_gets_a_progress_bar(gateway, home) -> None:
    server, key = gateway
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(
        [LITEGATE_BIN, "loadtest", "--url", server.url, "--key", key, "--route", "chat",
         "--connections", "2", "--duration", "1.2"],
        stdin=child_fd, stdout=child_fd, stderr=child_fd, env=clean_env(COLUMNS="160"),
    )
    os.close(child_fd)
    chunks = []
    while True:
        try:
            data = os.read(main_fd, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(30) == 0
    os.close(main_fd)
    screen = b"".join(chunks).decode(errors="replace")
    assert "loadtest" in screen and "━" in screen and "rps" in screen  # rich's live bar
    assert "route chat: " in screen and "errors       none" in screen


def test_ctrl_c_stops_the_run_and_still_reports(gateway, fake_upstream) -> None:
    server, key = gateway
    proc = subprocess.Popen(
        [LITEGATE_BIN, "loadtest", "--url", server.url, "--key", key, "--route", "chat",
         "--connections", "2", "--duration", "60", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )
    deadline = time.monotonic() + 30
    while len(fake_upstream.calls) < 3:  # past the pre-flight: the run is under way
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    report = json.loads(out)
    assert report["interrupted"] is True and report["ok"] > 0 and report["errors"] == {}
    assert report["duration_s"] < 30
