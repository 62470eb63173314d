"""Token quotas count streamed and cancelled requests too; logs and metrics."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import openai
from structlog.testing import capture_logs

from tests.helpers.cli import apply_config, chat_config, clean_env, create_key
from tests.helpers.servers import run_fake_upstream


def test_streamed_requests_count_against_token_quota(home, fake_upstream, make_gateway):
    apply_config(home, chat_config(fake_upstream.base_url, token_limits=["60/hour"]))
    key = create_key(home)
    server = make_gateway()
    c = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    statuses = []
    for _ in range(10):
        try:
            for _chunk in c.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "hello " * 20}], stream=True
            ):
                pass
            statuses.append(200)
        except openai.RateLimitError as exc:
            statuses.append(429)
            assert exc.body["code"] == "token_quota_exceeded"
    # Each stream counts ~5 events + ~60 prompt bytes / 4: the quota runs out after a few.
    assert 200 in statuses and statuses[-1] == 429
    assert statuses.index(429) <= 4


def test_cancelled_stream_still_records_usage(home, make_gateway):
    with run_fake_upstream(chunk_delay_s=0.2, chunks=20) as fake:
        apply_config(home, chat_config(fake.base_url, token_limits=["5/hour"]))
        key = create_key(home)
        server = make_gateway()
        with httpx.stream(
            "POST", server.url + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        ) as r:
            for i, _ in enumerate(r.iter_bytes()):
                if i == 3:
                    break  # client hangs up mid-stream
        time.sleep(0.5)
        r = httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 429


def test_access_log_has_context_and_never_the_key(home, fake_upstream):
    import asyncio

    from litegate.app import create_app
    from litegate.db import migrate
    from litegate.settings import Settings

    apply_config(home, chat_config(fake_upstream.base_url))
    key = create_key(home)
    settings = Settings.load(home=home)
    migrate.upgrade(settings.db_url)
    app = create_app(settings)
    from litegate.log_config import configure_logging

    configure_logging("json", "info")  # the in-process CLI above set warning level

    async def go():
        transport = httpx.ASGITransport(app=app)
        await app.gateway.start()
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                with capture_logs() as logs:
                    r = await c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}",
                                                                     "X-Request-ID": "req-123"},
                                     json={"model": "chat", "messages": [{"role": "user", "content": "x"}]})
                    await c.post("/v1/chat/completions", json={"model": "chat"})
        finally:
            await app.gateway.stop()
        return r, logs

    r, logs = asyncio.run(go())
    assert r.headers["x-request-id"] == "req-123"
    access = [e for e in logs if e["event"] == "request"]
    assert len(access) == 2
    ok, denied = access
    assert ok["status"] == 200 and ok["route"] == "chat" and ok["variant"] == "small-model"
    assert ok["key_id"] == 1 and ok["latency_ms"] >= ok["upstream_ms"]
    assert denied["status"] == 401
    assert key not in repr(logs)


def test_metrics_exposed(home, fake_upstream, make_gateway):
    apply_config(home, chat_config(fake_upstream.base_url))
    key = create_key(home)
    server = make_gateway()
    httpx.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
               json={"model": "chat", "messages": []})
    httpx.post(server.url + "/v1/chat/completions", json={"model": "chat", "messages": []})
    text = httpx.get(server.url + "/metrics").text
    assert 'litegate_requests_total{route="chat",status="200",variant="small-model"} 1.0' in text
    assert 'status="401"' in text
    assert "litegate_request_duration_seconds_bucket" in text
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_proxy_only_gateway_never_imports_what_it_does_not_use(home, fake_upstream):
    """onnxruntime, onnx and tokenizers load with the first model; opentelemetry and the
    tracing layers only with LITEGATE_TRACING on."""
    apply_config(home, chat_config(fake_upstream.base_url))
    key = create_key(home)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    code = f"""
import sys, asyncio, httpx
from litegate.app import create_app
from litegate.settings import Settings
app = create_app(Settings.load(home={str(home)!r}))
async def go():
    await app.gateway.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/chat/completions", headers={{"Authorization": "Bearer {key}",
                         "traceparent": "{traceparent}"}},
                         json={{"model": "chat", "messages": []}})
        assert r.status_code == 200, r.text
    await app.gateway.stop()
asyncio.run(go())
leaked = sorted(m for m in sys.modules if m in ("onnxruntime", "onnx", "tokenizers",
                "litegate.middleware.tracing") or m.startswith("opentelemetry"))
assert not leaked, leaked
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
    # Untraced, the gateway is transparent: the caller's traceparent reaches the upstream as is.
    seen = {k.lower(): v for k, v in fake_upstream.headers_seen[-1].items()}
    assert seen["traceparent"] == traceparent


def test_log_lines_inside_a_request_carry_its_context():
    import asyncio

    import structlog
    from structlog.testing import capture_logs

    from litegate.log_config import add_request_context
    from litegate.request import RequestInfo, current_request
    from litegate.snapshot import KeySpec, Snapshot

    async def handler(n: int) -> None:
        info = RequestInfo(f"req-{n}", 0.0, Snapshot())
        info.key = KeySpec(id=n, name="k", routes=None, is_admin=False, expires_at=None)
        info.route_name = f"route-{n}"
        current_request.set(info)
        await asyncio.sleep(0.01)
        structlog.get_logger().warning("inside")

    async def main() -> None:
        await asyncio.gather(*(handler(n) for n in range(3)))

    with capture_logs(processors=[add_request_context]) as logs:
        asyncio.run(main())
    by_id = {e["request_id"]: e for e in logs}
    assert set(by_id) == {"req-0", "req-1", "req-2"}
    for n in range(3):
        assert by_id[f"req-{n}"]["key_id"] == n and by_id[f"req-{n}"]["route"] == f"route-{n}"
