"""The pooled HTTP client to remote upstreams (aiohttp: keep-alive, no per-request setup).

Failures are wrapped at this boundary: unreachable → 502, timeout → 504, open
circuit → 503. Connection failures (the request never reached the upstream) and
502/503 answers are retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
import structlog

from litegate.errors import UpstreamError, UpstreamTimeout
from litegate.policies import tracing
from litegate.policies.breaker import OPEN, CircuitBreaker
from litegate.policies.metrics import Metrics
from litegate.snapshot import UpstreamSpec

log = structlog.get_logger("litegate.upstream")

HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "trailers", "transfer-encoding", "upgrade", "content-length",
        "content-encoding", "host", "authorization", "x-api-key", "cookie",
    }
)
RETRY_STATUSES = frozenset({502, 503})


class UpstreamClient:
    def __init__(
        self, *, metrics: Metrics, breaker_failures: int, breaker_reset_s: float,
        max_body_bytes: int,
    ) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.breakers: dict[str, CircuitBreaker] = {}
        self._breaker_failures = breaker_failures
        self._breaker_reset_s = breaker_reset_s
        self._timeouts: dict[tuple[float, float, bool], aiohttp.ClientTimeout] = {}

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        return self._session

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

    async def open(
        self,
        upstream: UpstreamSpec,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        stream: bool,
    ) -> aiohttp.ClientResponse:
        """Send a request and return the response with its headers read (body not yet).

        The caller must release the response. 5xx answers other than retried ones are
        returned as they are (passed through to the client).
        """
        breaker = self.breaker(upstream.name)
        url = upstream.base_url + path
        timeout = self._timeout(upstream, stream)
        attempt = 0
        while True:
            breaker.before_call()
            try:
                resp = await self.session.request(
                    method, url, data=body, headers=headers, timeout=timeout,
                    allow_redirects=False,
                )
            except asyncio.CancelledError:
                breaker.abandon()  # e.g. an aggregate branch timed out: no outcome to record
                raise
            except asyncio.TimeoutError as exc:
                self._record(upstream, breaker, False, "timeout")
                raise UpstreamTimeout(
                    f"upstream {upstream.name!r} did not answer within {upstream.timeout_s:g}s"
                ) from exc
            except (aiohttp.ClientConnectionError, OSError) as exc:
                self._record(upstream, breaker, False, "connect")
                if attempt < upstream.max_retries and isinstance(
                    exc, aiohttp.ClientConnectorError
                ):
                    attempt += 1
                    await asyncio.sleep(0.05 * 2 ** (attempt - 1))
                    continue
                # The address and the OS error go to the log, never to the client.
                log.warning("upstream_unreachable", upstream=upstream.name, error=str(exc))
                raise UpstreamError(f"upstream {upstream.name!r} is unreachable") from exc
            except aiohttp.ClientError as exc:
                self._record(upstream, breaker, False, "protocol")
                log.warning("upstream_protocol_error", upstream=upstream.name, error=str(exc))
                raise UpstreamError(f"upstream {upstream.name!r} failed") from exc
            if resp.status in RETRY_STATUSES and attempt < upstream.max_retries:
                self._record(upstream, breaker, False, f"http_{resp.status}")
                resp.release()
                attempt += 1
                await asyncio.sleep(0.05 * 2 ** (attempt - 1))
                continue
            self._record(upstream, breaker, resp.status < 500, f"http_{resp.status}")
            return resp

    def _timeout(self, upstream: UpstreamSpec, stream: bool) -> aiohttp.ClientTimeout:
        """Streams bound the wait between chunks, other requests the whole exchange."""
        key = (upstream.timeout_s, upstream.connect_timeout_s, stream)
        timeout = self._timeouts.get(key)
        if timeout is None:
            if stream:
                timeout = aiohttp.ClientTimeout(
                    total=None, sock_connect=upstream.connect_timeout_s, sock_read=upstream.timeout_s
                )
            else:
                timeout = aiohttp.ClientTimeout(
                    total=upstream.timeout_s, sock_connect=upstream.connect_timeout_s
                )
            self._timeouts[key] = timeout
        return timeout

    async def read(self, upstream: UpstreamSpec, resp: aiohttp.ClientResponse) -> bytes:
        """The whole answer, refused (502) past ``max_body_bytes`` before it is held."""
        limit = self.max_body_bytes
        try:
            if resp.content_length is not None and resp.content_length > limit:
                raise _too_large(upstream, limit)
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise _too_large(upstream, limit)
                chunks.append(chunk)
            return b"".join(chunks)
        except asyncio.TimeoutError as exc:
            self._record(upstream, self.breaker(upstream.name), False, "timeout")
            raise UpstreamTimeout(
                f"upstream {upstream.name!r} did not answer within {upstream.timeout_s:g}s"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
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


def response_headers(resp: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
    return [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in resp.headers.items()
        if k.lower() not in HOP_BY_HOP and k.lower() not in ("date", "server", "set-cookie")
    ]
