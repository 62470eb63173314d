"""OpenTelemetry tracing (issue 11, item 3) through the real server: the SDK's in-memory
exporter behind ``LITEGATE_TRACING=global``, a real OTLP/HTTP export for ``otlp``, and a
proxy-only gateway with tracing off that never imports opentelemetry."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from litegate.middleware.tracing import http_route
from tests.helpers.cli import apply_config, chat_config, create_key
from tests.helpers.servers import run_fake_upstream, serve_aiohttp
from tests.helpers.windows import clear_of_minute_edge

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SECRET_TEXT = "the-client-prompt-must-not-reach-a-span"
_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    """The process's global provider (set once: OpenTelemetry allows one) exporting to
    memory; ``LITEGATE_TRACING=global`` gateways use it."""
    provider = trace.get_tracer_provider()
    if not getattr(provider, "_litegate_test", False):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        provider._litegate_test = True  # type: ignore[attr-defined]
        trace.set_tracer_provider(provider)
        assert trace.get_tracer_provider() is provider, "another global provider was set first"
    _EXPORTER.clear()
    return _EXPORTER


def _wait_for_server_spans(exporter: InMemorySpanExporter, n: int) -> list[ReadableSpan]:
    # The server span ends just after the response's last byte: wait for it briefly.
    deadline = time.monotonic() + 5
    while True:
        done = exporter.get_finished_spans()
        if sum(s.kind == SpanKind.SERVER for s in done) >= n or time.monotonic() > deadline:
            return list(done)
        time.sleep(0.01)


def _children(all_spans: list[ReadableSpan], parent: ReadableSpan) -> dict[str, ReadableSpan]:
    return {s.name: s for s in all_spans
            if s.parent is not None and s.parent.span_id == parent.context.span_id}


def _chat(server, key: str | None, *, traceparent: str | None = None, **headers: str) -> httpx.Response:
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if traceparent is not None:
        headers["traceparent"] = traceparent
    return httpx.post(server.url + "/v1/chat/completions", headers=headers, timeout=10,
                      json={"model": "chat", "messages": [{"role": "user", "content": SECRET_TEXT}]})


def test_request_span_has_policy_children_and_joins_the_callers_trace(
        home, fake_upstream, make_gateway, spans):
    apply_config(home, chat_config(fake_upstream.base_url, cache={"ttl_s": 60}))
    key = create_key(home)
    server = make_gateway(tracing="global")

    r = _chat(server, key, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    assert r.status_code == 200, r.text
    done = _wait_for_server_spans(spans, 1)
    (root,) = [s for s in done if s.kind == SpanKind.SERVER]
    # The caller's trace continues: same trace id, the caller's span is the parent.
    assert format(root.context.trace_id, "032x") == CLIENT_TRACE
    assert root.parent is not None and format(root.parent.span_id, "016x") == CLIENT_SPAN
    assert root.name == "POST /v1/chat/completions"
    attrs = dict(root.attributes or {})
    assert attrs["http.response.status_code"] == 200
    assert attrs["litegate.route"] == "chat" and attrs["litegate.variant"] == "small-model"
    assert attrs["litegate.upstream"] == "mock" and attrs["litegate.cache"] == "MISS"
    assert isinstance(attrs["litegate.key_id"], int)
    children = _children(done, root)
    assert set(children) == {"auth", "limits", "cache", "upstream"}
    assert all(c.context.trace_id == root.context.trace_id for c in children.values())
    assert children["auth"].attributes["litegate.key_id"] == attrs["litegate.key_id"]
    assert children["cache"].attributes["litegate.cache"] == "MISS"
    upstream = children["upstream"]
    assert upstream.kind == SpanKind.CLIENT
    assert upstream.attributes["http.response.status_code"] == 200
    # A policy's span is its decision only; the upstream call comes after it has ended.
    assert children["auth"].end_time <= children["limits"].start_time
    assert children["cache"].end_time <= upstream.start_time
    # The upstream got the same trace, parented on the gateway's upstream span.
    seen = {k.lower(): v for k, v in fake_upstream.headers_seen[-1].items()}
    version, trace_id, parent_id, flags = seen["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01")
    assert parent_id == format(upstream.context.span_id, "016x")
    # Configured names and facts only: never the key, never the client's text.
    for s in done:
        text = repr(dict(s.attributes or {})) + s.name
        assert key not in text and SECRET_TEXT not in text

    # The same request again is a cache hit: no upstream span, the cache span says HIT.
    spans.clear()
    r = _chat(server, key)
    assert r.headers["x-cache"] == "HIT"
    done = _wait_for_server_spans(spans, 1)
    (root,) = [s for s in done if s.kind == SpanKind.SERVER]
    assert root.parent is None  # no traceparent: a new trace starts here
    children = _children(done, root)
    assert set(children) == {"auth", "limits", "cache"}
    assert children["cache"].attributes["litegate.cache"] == "HIT"


def test_refusals_end_in_the_refusing_policys_span(home, fake_upstream, make_gateway, spans):
    apply_config(home, chat_config(fake_upstream.base_url, limits=["1/minute"]))
    key = create_key(home)
    server = make_gateway(tracing="global")

    assert _chat(server, None).status_code == 401
    clear_of_minute_edge()  # exact counts: not across a window boundary
    assert _chat(server, key).status_code == 200
    assert _chat(server, key).status_code == 429
    done = _wait_for_server_spans(spans, 3)
    roots = sorted((s for s in done if s.kind == SpanKind.SERVER), key=lambda s: s.start_time)
    statuses = [r.attributes["http.response.status_code"] for r in roots]
    assert statuses == [401, 200, 429]
    unauthorized, ok, limited = (_children(done, r) for r in roots)
    assert set(unauthorized) == {"auth"}
    assert unauthorized["auth"].status.status_code == StatusCode.ERROR
    assert unauthorized["auth"].attributes["error.type"] == "Unauthorized"
    assert set(ok) == {"auth", "limits", "cache", "upstream"}
    assert set(limited) == {"auth", "limits"}
    assert limited["limits"].status.status_code == StatusCode.ERROR
    assert limited["limits"].attributes["error.type"] == "RateLimited"
    assert roots[2].status.status_code == StatusCode.UNSET  # a 429 is not a server error


def test_a_stream_is_one_upstream_span_to_its_end_and_a_broken_one_an_error(
        home, make_gateway, spans):
    with run_fake_upstream(chunk_delay_s=0.05, chunks=4) as fake:
        cfg = chat_config(fake.base_url)
        cfg["routes"].append({"name": "dying", "variants": [
            {"upstream": "mock", "model": "die-model", "weight": 100}]})
        apply_config(home, cfg)
        key = create_key(home)
        server = make_gateway(tracing="global")
        headers = {"Authorization": f"Bearer {key}"}
        for model in ("chat", "dying"):
            with httpx.stream("POST", server.url + "/v1/chat/completions", headers=headers,
                              timeout=10, json={"model": model, "messages": [], "stream": True}) as r:
                assert r.status_code == 200
                r.read()
        done = _wait_for_server_spans(spans, 2)
    whole, broken = sorted((s for s in done if s.kind == SpanKind.SERVER), key=lambda s: s.start_time)
    upstream = _children(done, whole)["upstream"]
    assert (upstream.end_time - upstream.start_time) / 1e9 >= 0.15  # 4 chunks, 50 ms apart
    assert upstream.status.status_code == StatusCode.UNSET
    assert whole.attributes["litegate.tokens"] > 0  # counted for streams too
    for span in (broken, _children(done, broken)["upstream"]):
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes["error.type"] == "stream_interrupted"


def test_a_caller_that_does_not_sample_gets_no_spans_and_upstreams_hear_it(
        home, fake_upstream, make_gateway, spans):
    apply_config(home, chat_config(fake_upstream.base_url))
    key = create_key(home)
    server = make_gateway(tracing="global")  # the SDK's default sampler: parent-based
    assert _chat(server, key, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00").status_code == 200
    time.sleep(0.2)
    assert spans.get_finished_spans() == ()
    seen = {k.lower(): v for k, v in fake_upstream.headers_seen[-1].items()}
    version, trace_id, parent_id, flags = seen["traceparent"].split("-")
    assert (trace_id, flags) == (CLIENT_TRACE, "00") and parent_id != CLIENT_SPAN


def test_aggregate_branches_are_children_of_the_aggregate_span(
        home, fake_upstream, make_gateway, spans):
    apply_config(home, {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": fake_upstream.base_url}],
        "routes": [{"name": "a", "variants": [{"upstream": "mock", "model": "model-a"}]},
                   {"name": "b", "variants": [{"upstream": "mock", "model": "model-b"}]}],
    })
    key = create_key(home)
    server = make_gateway(tracing="global")
    r = httpx.post(server.url + "/v1/aggregate", timeout=10,
                   headers={"Authorization": f"Bearer {key}",
                            "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"},
                   json={"routes": ["a", "b"], "request": {"messages": []}})
    assert r.status_code == 200 and {x["status"] for x in r.json()["results"]} == {200}
    done = _wait_for_server_spans(spans, 1)
    (root,) = [s for s in done if s.kind == SpanKind.SERVER]
    assert root.name == "POST /v1/aggregate"
    assert set(_children(done, root)) == {"auth", "limits", "cache", "aggregate"}
    aggregate = _children(done, root)["aggregate"]
    branches = [s for s in done if s.parent is not None
                and s.parent.span_id == aggregate.context.span_id]
    assert sorted(s.name for s in branches) == ["cache", "cache", "limits", "limits",
                                                "upstream", "upstream"]
    upstreams = {s.attributes["litegate.route"]: s for s in branches if s.name == "upstream"}
    assert set(upstreams) == {"a", "b"}
    # Each branch's upstream call carries its own span as the parent, in the caller's trace.
    parents = {}
    for seen in fake_upstream.headers_seen[-2:]:
        tp = {k.lower(): v for k, v in seen.items()}["traceparent"].split("-")
        assert tp[1] == CLIENT_TRACE
        parents[tp[2]] = seen
    assert set(parents) == {format(s.context.span_id, "016x") for s in upstreams.values()}


def test_mounted_under_the_hosts_own_instrumentation_the_gateway_span_is_its_child(
        home, fake_upstream, spans):
    from opentelemetry import propagate
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from litegate import LitegateMiddleware
    from litegate.db import migrate
    from litegate.settings import Settings
    from tests.helpers.servers import ThreadServer

    settings = Settings.load(home=home, reload_interval_s=0.1, tracing="global")
    migrate.upgrade(settings.db_url)
    apply_config(home, chat_config(fake_upstream.base_url))
    key = create_key(home)

    async def hello(request):
        return PlainTextResponse("hello")

    inner = LitegateMiddleware(Starlette(routes=[Route("/hello", hello)]), settings=settings)
    host_tracer = trace.get_tracer("host-app")

    async def instrumented(scope, receive, send):  # what a host's OTel ASGI middleware does
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        carrier = {k.decode(): v.decode() for k, v in scope["headers"]}
        with host_tracer.start_as_current_span("host", context=propagate.extract(carrier),
                                               kind=SpanKind.SERVER):
            await inner(scope, receive, send)

    with ThreadServer(instrumented) as server:
        r = _chat(server, key, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
        assert r.status_code == 200, r.text
        assert httpx.get(server.url + "/hello", headers={"X-API-Key": key}).text == "hello"
        deadline = time.monotonic() + 5
        while sum(s.name == "host" for s in spans.get_finished_spans()) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    done = list(spans.get_finished_spans())
    hosts = sorted((s for s in done if s.name == "host"), key=lambda s: s.start_time)
    assert format(hosts[0].parent.span_id, "016x") == CLIENT_SPAN
    (chat,) = _children(done, hosts[0]).values()
    assert chat.name == "POST /v1/chat/completions" and chat.kind == SpanKind.INTERNAL
    assert set(_children(done, chat)) == {"auth", "limits", "cache", "upstream"}
    (host_route,) = _children(done, hosts[1]).values()
    assert host_route.name == "GET" and "http.route" not in host_route.attributes
    assert set(_children(done, host_route)) == {"auth", "limits", "cache", "handler"}


def test_otlp_mode_exports_to_the_collector_named_by_otel_variables(
        home, fake_upstream, make_gateway, monkeypatch):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list[ExportTraceServiceRequest] = []
    auth_seen: list[str | None] = []

    async def collect(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        auth_seen.append(request.headers.get("x-collector-token"))
        return web.Response(body=b"", content_type="application/x-protobuf")

    collector = web.Application()
    collector.router.add_post("/v1/traces", collect)
    with serve_aiohttp(collector) as port:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-token=t0k")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
        apply_config(home, chat_config(fake_upstream.base_url))
        key = create_key(home)
        server = make_gateway(tracing="otlp")
        assert _chat(server, key, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01").status_code == 200
        deadline = time.monotonic() + 8
        names: set[str] = set()
        while time.monotonic() < deadline and "POST /v1/chat/completions" not in names:
            time.sleep(0.05)
            names = {span.name for m in list(received) for rs in m.resource_spans
                     for ss in rs.scope_spans for span in ss.spans}
        server.config.app.gateway.tracing.shutdown()  # its own provider: stop the export thread
    assert {"POST /v1/chat/completions", "auth", "limits", "cache", "upstream"} <= names
    assert auth_seen[0] == "t0k"
    resource = {a.key: a.value.string_value for a in received[0].resource_spans[0].resource.attributes}
    assert resource["service.name"] == "litegate"
    trace_ids = {span.trace_id.hex() for m in received for rs in m.resource_spans
                 for ss in rs.scope_spans for span in ss.spans}
    assert trace_ids == {CLIENT_TRACE}


def test_span_names_are_templates_never_client_text():
    assert http_route("/v1/chat/completions") == "/v1/chat/completions"
    assert http_route("/v1/models/anything-a-client-types") == "/v1/models/{model}"
    assert http_route("/v2/models/m/versions/3/infer") == "/v2/models/{model}/versions/{version}/infer"
    assert http_route("/v2/models/m/ready") == "/v2/models/{model}/ready"
    assert http_route("/v2/models/m/../../repository") is None
    assert http_route("/secret-probe/" + SECRET_TEXT) is None


def test_tracing_without_the_extra_is_one_line_naming_the_fix(home):
    from tests.helpers.cli import clean_env

    home.mkdir(parents=True)
    code = ("import sys; sys.modules['opentelemetry'] = None  # as if the extra were absent\n"
            "from litegate.cli import main\nsys.exit(main(['serve', '--port', '0']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=home, env=clean_env(LITEGATE_HOME=str(home), LITEGATE_TRACING="otlp"))
    assert out.returncode == 3, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: LITEGATE_TRACING=otlp needs OpenTelemetry")
    assert line.endswith("pip install 'litegate[otel]'")


def test_tracing_modes(monkeypatch):
    from litegate.policies.tracing import start_tracing

    with pytest.raises(ValueError, match="unknown tracing mode 'jaeger'"):
        start_tracing("jaeger")
    assert start_tracing("off") is None
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")  # the standard switch wins
    assert start_tracing("otlp") is None
