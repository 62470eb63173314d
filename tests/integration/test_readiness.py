"""What /readyz and the start-up log say about half-configured deployments (issue 8
item 9): an upstream whose api_key_env is unset, and a Redis that is down at start."""

from __future__ import annotations

import httpx
from structlog.testing import capture_logs

from tests.helpers.cli import apply_config, chat_config
from tests.helpers.servers import free_port
from tests.helpers.services import redis_server

UNSET = "TEST_UPSTREAM_KEY_NEVER_SET"


def test_unset_api_key_env_is_warned_at_apply_and_start_and_shown_in_readyz(home, make_gateway, monkeypatch):
    monkeypatch.delenv(UNSET, raising=False)
    doc = chat_config("http://127.0.0.1:9/v1")
    doc["upstreams"][0]["api_key_env"] = UNSET
    code, _, err = apply_config(home, doc)
    assert code == 0
    assert f"warning: upstream 'mock': {UNSET} is not set here" in err
    with capture_logs() as logs:
        server = make_gateway()
    assert {"event": "upstream_api_key_unset", "upstream": "mock", "env": UNSET} in [
        {k: e.get(k) for k in ("event", "upstream", "env")} for e in logs]
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200  # a missing key is the upstream's problem, not readiness
    assert ready.json()["missing_api_key_env"] == {"mock": UNSET}


def test_redis_down_at_start_is_warned_and_readyz_reports_degraded(home, make_gateway):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with capture_logs() as logs:
        open_server = make_gateway(redis=dead)
    assert any(e["event"] == "redis_unreachable" and e["log_level"] == "warning" for e in logs)
    ready = httpx.get(open_server.url + "/readyz")
    # Fail-open (default): still serving, without shared limits -> 200, degraded.
    assert ready.status_code == 200
    assert ready.json()["redis"] is False
    assert ready.json()["degraded"] == "redis unreachable: limits are not enforced"
    closed = httpx.get(make_gateway(redis=dead, limit_fail_open=False).url + "/readyz")
    # Fail-closed refuses every request: this replica should leave the load balancer.
    assert closed.status_code == 503
    assert closed.json()["degraded"] == "redis unreachable: requests are refused (fail-closed)"


def test_reachable_redis_is_reported_ready(home, make_gateway):
    with redis_server() as url:
        ready = httpx.get(make_gateway(redis=url).url + "/readyz")
        assert ready.status_code == 200 and ready.json()["redis"] is True
        assert "degraded" not in ready.json()
