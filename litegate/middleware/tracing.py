"""OpenTelemetry spans around the policy stack; only imported when tracing is on.

``Gateway.build_stack`` adds these layers only when ``Settings.tracing`` is not ``off``:
an untraced gateway's stack is the same objects as before tracing existed, so it pays
nothing per request, and this module (and opentelemetry) is never imported.

* ``ServerSpanMiddleware`` (outermost): the request's ``SERVER`` span, a child of the
  client's W3C ``traceparent`` when it sends one (mounted inside an application whose own
  OpenTelemetry middleware already opened a span: an ``INTERNAL`` child of that span); it
  is the current span for everything inside.
* ``PolicySpanMiddleware`` around a policy (``auth``, ``limits``, ``cache``) and
  ``PolicySpanEnd`` as that policy's next app: the span covers the policy's own decision,
  up to the moment it hands on (or answers, or refuses), not the rest of the request.
* ``HandlerSpanMiddleware`` around the handler: ``upstream`` (a ``CLIENT`` span: the
  upstream client injects its context as the upstream's ``traceparent``), ``inference``
  (local ONNX), ``aggregate`` (each branch's ``limits``, ``cache`` and ``upstream`` spans
  are its children) or ``handler``.

Attributes are configured names and facts only (route, variant, upstream, cache result,
key id, status, tokens), never client text: no path of a client's choosing (``http.route``
is a template), no model name the configuration does not know, no exception message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from litegate.asgi_types import ASGIApp, Message, Receive, Scope, Send
from litegate.policies.tracing import Tracing
from litegate.request import OPENAI_BODY_PATHS, RequestInfo, configured_name, get_info

_OPEN = "litegate.policy_span"
"""Scope key of the policy span that is open: (name, span)."""
_RECORDING = "litegate.span_recording"
"""Scope key: whether the request's server span records (is sampled). When it does not,
the inner layers pass straight through: a sampled-out request costs one span, not five."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_FIXED_ROUTES = OPENAI_BODY_PATHS | {
    "/v1/models", "/v1/aggregate", "/v2", "/v2/health/live", "/v2/health/ready",
}
_V2_ACTIONS = frozenset({"ready", "infer", "stats", "config"})
_REMOTE = frozenset({"openai", "v2"})
Headers = Sequence[tuple[bytes, bytes]]


class _HeaderGetter(Getter[Headers]):
    """Reads ``traceparent`` (and whatever the configured propagators want) from ASGI headers."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k == name]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


_GETTER = _HeaderGetter()


def http_route(path: str) -> str | None:
    """The path as a template (``/v2/models/{model}/infer``), or None for a path the
    gateway does not serve: the client's own text never becomes a span name."""
    if path in _FIXED_ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{model}"
    if not path.startswith("/v2/models/"):
        return None
    tail = path[len("/v2/models/"):].split("/")[1:]
    route = "/v2/models/{model}"
    if len(tail) >= 2 and tail[0] == "versions":
        route += "/versions/{version}"
        tail = tail[2:]
    if not tail:
        return route
    return route + "/" + tail[0] if len(tail) == 1 and tail[0] in _V2_ACTIONS else None


def _fail(span: trace.Span, exc: BaseException) -> None:
    # The type only: a message may quote the client (e.g. an unknown model's name).
    span.set_attribute("error.type", type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def _interrupted(span: trace.Span) -> None:
    span.set_attribute("error.type", "stream_interrupted")
    span.set_status(Status(StatusCode.ERROR, "stream_interrupted"))


def _request_facts(span: trace.Span, info: RequestInfo) -> None:
    name = configured_name(info)
    if name is not None:
        span.set_attribute("litegate.route", name)
    if info.variant is not None:
        span.set_attribute("litegate.variant", info.variant.name)
        span.set_attribute("litegate.upstream", info.variant.upstream.name)


class ServerSpanMiddleware:
    def __init__(self, app: ASGIApp, *, tracing: Tracing) -> None:
        self.app = app
        self.tracer = tracing.tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        route = http_route(scope["path"])
        attributes: dict[str, Any] = {"http.request.method": method}
        if route is not None:
            attributes["http.route"] = route
        kind = SpanKind.SERVER
        if trace.get_current_span().get_span_context().is_valid:
            # Mounted in an app whose own instrumentation already opened the server span
            # (and read the traceparent): the gateway's span is a child of that one.
            parent, kind = context.get_current(), SpanKind.INTERNAL
        else:
            parent = propagate.extract(scope["headers"], getter=_GETTER)
        span = self.tracer.start_span(
            f"{method} {route}" if route else method, context=parent, kind=kind,
            attributes=attributes,
        )
        token = context.attach(trace.set_span_in_context(span, parent))
        scope[_RECORDING] = span.is_recording()
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:  # cancelled: the client went away
            _fail(span, exc)
            raise
        finally:
            info = get_info(scope)
            if info is not None:
                _request_facts(span, info)
                if info.key is not None:
                    span.set_attribute("litegate.key_id", info.key.id)
                if info.cache is not None:
                    span.set_attribute("litegate.cache", info.cache)
                if info.tokens:
                    span.set_attribute("litegate.tokens", info.tokens)
                if info.status:
                    span.set_attribute("http.response.status_code", info.status)
                    if info.status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                if info.stream_error:
                    _interrupted(span)
            span.end()
            context.detach(token)


def _close_policy(name: str, span: trace.Span, scope: Scope) -> None:
    info = get_info(scope)
    if info is not None:
        if name == "auth" and info.key is not None:
            span.set_attribute("litegate.key_id", info.key.id)
        elif name == "cache" and info.cache is not None:
            span.set_attribute("litegate.cache", info.cache)
    span.end()


class PolicySpanMiddleware:
    """Opens the span ``name`` around one policy; its ``PolicySpanEnd`` ends it."""

    def __init__(self, app: ASGIApp, *, tracing: Tracing, name: str) -> None:
        self.app = app
        self.tracer = tracing.tracer
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get(_RECORDING):
            await self.app(scope, receive, send)
            return
        span = self.tracer.start_span(self.name)  # a child of the current (server) span
        opened = (self.name, span)
        scope[_OPEN] = opened
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            if scope.get(_OPEN) is opened:  # refused by this policy (401, 403, 429...)
                _fail(span, exc)
            raise
        finally:
            if scope.get(_OPEN) is opened:  # it answered itself (a cache hit) or refused
                del scope[_OPEN]
                _close_policy(self.name, span, scope)


class PolicySpanEnd:
    """The next app of a traced policy: the policy has decided, its span ends here."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        opened = scope.pop(_OPEN, None)
        if opened is not None:
            _close_policy(opened[0], opened[1], scope)
        await self.app(scope, receive, send)


class HandlerSpanMiddleware:
    """``upstream`` / ``inference`` / ``handler``: the current span while the handler runs,
    so the upstream client propagates it (``litegate.policies.tracing.inject``)."""

    def __init__(self, app: ASGIApp, *, tracing: Tracing) -> None:
        self.app = app
        self.tracer = tracing.tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get(_RECORDING):
            # Sampled out: the server span stays current, so upstreams still get the
            # trace id (with the "not sampled" flag) and decide alike.
            await self.app(scope, receive, send)
            return
        info = get_info(scope)
        kind = info.variant.upstream.kind if info is not None and info.variant else None
        if kind in _REMOTE:
            name, span_kind = "upstream", SpanKind.CLIENT
        elif kind == "onnx" or (kind is None and scope["path"].startswith("/v2/models/")):
            name, span_kind = "inference", SpanKind.INTERNAL
        elif scope["path"] == "/v1/aggregate":  # its branches' spans are children of this one
            name, span_kind = "aggregate", SpanKind.INTERNAL
        else:
            name, span_kind = "handler", SpanKind.INTERNAL
        span = self.tracer.start_span(name, kind=span_kind)
        token = context.attach(trace.set_span_in_context(span))
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            _fail(span, exc)
            raise
        finally:
            if info is not None:
                _request_facts(span, info)  # after a fallback: the variant that answered
                if info.stream_error:
                    _interrupted(span)
            if status:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
            context.detach(token)


class TraceLayers:
    """What ``Gateway.build_stack`` asks for, one call per layer it wraps."""

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    def server(self, app: ASGIApp) -> ASGIApp:
        return ServerSpanMiddleware(app, tracing=self.tracing)

    def policy(self, name: str, policy: ASGIApp) -> ASGIApp:
        return PolicySpanMiddleware(policy, tracing=self.tracing, name=name)

    def end(self, app: ASGIApp) -> ASGIApp:
        return PolicySpanEnd(app)

    def handler(self, app: ASGIApp) -> ASGIApp:
        return HandlerSpanMiddleware(app, tracing=self.tracing)


__all__ = [
    "HandlerSpanMiddleware", "PolicySpanEnd", "PolicySpanMiddleware", "ServerSpanMiddleware",
    "TraceLayers", "http_route",
]
