"""The pooled HTTP client to remote upstreams (``http1.Pool``: keep-alive, no
per-request setup).

Failures are wrapped at this boundary: unreachable → 502, timeout → 504, open
circuit → 503. Connection failures (the request never reached the upstream) and
502/503 answers are retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog

from litegate.errors import UpstreamError, UpstreamTimeout
from litegate.origins import Origin, parse_base_url
from litegate.policies import tracing
from litegate.policies.breaker import OPEN, CircuitBreaker
from litegate.policies.metrics import Metrics
from litegate.snapshot import UpstreamSpec
from litegate.upstreams.http1 import ConnectError, Pool, ProtocolError, Response

log = structlog.get_logger("litegate.upstream")

HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "trailers", "transfer-encoding", "upgrade", "content-length",
        "content-encoding", "host", "authorization", "x-api-key", "cookie",
    }
)
_DROPPED_ANSWER_HEADERS = frozenset(
    h.encode() for h in (*HOP_BY_HOP, "date", "server", "set-cookie"))
RETRY_STATUSES = frozenset({502, 503})
MAX_ORIGINS = 1024
"""Parsed base URLs kept: one per configured upstream, bounded for a configuration whose
URLs keep changing."""

UpstreamReadError = (ProtocolError, TimeoutError, OSError)
"""What reading an answer's body can raise: the relays catch these."""


class UpstreamClient:
    def __init__(
        self, *, metrics: Metrics, breaker_failures: int, breaker_reset_s: float,
        max_body_bytes: int,
    ) -> None:
        self._pool: Pool | None = None
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.breakers: dict[str, CircuitBreaker] = {}
        self._breaker_failures = breaker_failures
        self._breaker_reset_s = breaker_reset_s
        self._origins: dict[str, Origin] = {}

    async def start(self) -> None:
        if self._pool is None:
            self._pool = Pool(keepalive_s=30.0)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @property
    def pool(self) -> Pool:
        if self._pool is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        return self._pool

    def breaker(self, name: str) -> CircuitBreaker:
        b = self.breakers.get(name)
        if b is None:
            b = self.breakers[name] = CircuitBreaker(
                name, threshold=self._breaker_failures, reset_s=self._breaker_reset_s
            )
        return b

    def _record(self, upstream: UpstreamSpec, breaker: CircuitBreaker, ok: bool, kind: str) -> None:
        if ok:
            if breaker.state != "closed":
                self.metrics.breaker_state.labels(upstream.name).set(0)
            breaker.success()
            return
        self.metrics.upstream_errors.labels(upstream.name, kind).inc()
        breaker.failure()
        if breaker.state == OPEN:
            self.metrics.breaker_state.labels(upstream.name).set(1)

    def _origin(self, upstream: UpstreamSpec) -> Origin:
        origin = self._origins.get(upstream.base_url)
        if origin is None:
            try:
                origin = parse_base_url(upstream.base_url)
            except ValueError as exc:
                raise UpstreamError(f"upstream {upstream.name!r}: base_url {exc}") from None
            if len(self._origins) >= MAX_ORIGINS:
                self._origins.clear()
            self._origins[upstream.base_url] = origin
        return origin

    async def open(
        self,
        upstream: UpstreamSpec,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        stream: bool,
    ) -> Response:
        """Send a request and return the response with its headers read (body not yet).

        The caller must release the response. 5xx answers other than retried ones are
        returned as they are (passed through to the client). ``stream`` bounds each wait
        for the upstream's bytes by ``timeout_s`` instead of the whole exchange.
        """
        breaker = self.breaker(upstream.name)
        origin = self._origin(upstream)
        attempt = 0
        while True:
            breaker.before_call()
            try:
                resp = await self.pool.request(
                    origin, method, path, headers, body,
                    connect_timeout=upstream.connect_timeout_s, timeout=upstream.timeout_s,
                    per_read=stream,
                )
            except asyncio.CancelledError:
                breaker.abandon()  # e.g. an aggregate branch timed out: no outcome to record
                raise
            except TimeoutError as exc:
                self._record(upstream, breaker, False, "timeout")
                raise UpstreamTimeout(
                    f"upstream {upstream.name!r} did not answer within {upstream.timeout_s:g}s"
                ) from exc
            except ConnectError as exc:
                self._record(upstream, breaker, False, "connect")
                if attempt < upstream.max_retries:
                    attempt += 1
                    await asyncio.sleep(0.05 * 2 ** (attempt - 1))
                    continue
                # The address and the OS error go to the log, never to the client.
                log.warning("upstream_unreachable", upstream=upstream.name, error=str(exc))
                raise UpstreamError(f"upstream {upstream.name!r} is unreachable") from exc
            except (ProtocolError, OSError) as exc:
                self._record(upstream, breaker, False, "protocol")
                log.warning("upstream_protocol_error", upstream=upstream.name, error=str(exc))
                raise UpstreamError(f"upstream {upstream.name!r} failed") from exc
            except ValueError as exc:  # a header or path that cannot be written safely
                breaker.abandon()
                log.warning("upstream_request_refused", upstream=upstream.name, error=str(exc))
                raise UpstreamError(f"upstream {upstream.name!r}: {exc}") from None
            if resp.status in RETRY_STATUSES and attempt < upstream.max_retries:
                self._record(upstream, breaker, False, f"http_{resp.status}")
                resp.release()
                attempt += 1
                await asyncio.sleep(0.05 * 2 ** (attempt - 1))
                continue
            self._record(upstream, breaker, resp.status < 500, f"http_{resp.status}")
            return resp

    async def read(self, upstream: UpstreamSpec, resp: Response) -> bytes:
        """The whole answer, refused (502) past ``max_body_bytes`` before it is held."""
        limit = self.max_body_bytes
        try:
            if resp.content_length is not None and resp.content_length > limit:
                resp.close()
                raise _too_large(upstream, limit)
            body = await resp.read(limit)
            if body is None:
                raise _too_large(upstream, limit)
            return body
        except TimeoutError as exc:
            self._record(upstream, self.breaker(upstream.name), False, "timeout")
            raise UpstreamTimeout(
                f"upstream {upstream.name!r} did not answer within {upstream.timeout_s:g}s"
            ) from exc
        except (ProtocolError, OSError) as exc:
            self._record(upstream, self.breaker(upstream.name), False, "read")
            log.warning("upstream_read_error", upstream=upstream.name, error=str(exc))
            raise UpstreamError(f"upstream {upstream.name!r} failed mid-response") from exc
        finally:
            resp.release()


def _too_large(upstream: UpstreamSpec, limit: int) -> UpstreamError:
    return UpstreamError(
        f"upstream {upstream.name!r} answered more than {limit} bytes "
        "(LITEGATE_MAX_UPSTREAM_BODY_BYTES); ask for less or use stream: true",
        code="upstream_body_too_large",
    )


def forward_headers(scope_headers: Any, upstream: UpstreamSpec, request_id: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for k, v in scope_headers:
        name = k.decode("latin-1")
        if name in HOP_BY_HOP or name.startswith(("x-litegate", "proxy-")):
            continue
        headers[name] = v.decode("latin-1")
    headers["accept-encoding"] = "identity"
    headers["x-request-id"] = request_id
    if upstream.api_key:
        headers["authorization"] = f"Bearer {upstream.api_key}"
    inject = tracing.inject  # None unless tracing is on: then the current span's traceparent
    if inject is not None:
        inject(headers)
    return headers


def response_headers(resp: Response) -> list[tuple[bytes, bytes]]:
    """The answer's headers a client may see (no hop-by-hop, cookies or server identity)."""
    out = []
    for k, v in resp.raw_headers:
        name = k.lower()
        if name not in _DROPPED_ANSWER_HEADERS:
            out.append((name, v))
    return out
