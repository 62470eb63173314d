"""``/healthz``, ``/readyz`` and ``/metrics``, answered the same way in every shape:
standalone, Litestar plug-in, ASGI middleware and WSGI bridge."""

from __future__ import annotations

import msgspec

from litegate.asgi_types import Send
from litegate.gateway import Gateway
from litegate.responses import send_response

HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_JSON = [(b"content-type", b"application/json")]


async def send_health(gateway: Gateway, path: str, send: Send, *, fault: str | None = None) -> None:
    """Answer one of ``HEALTH_PATHS``; ``fault`` is why a mounted gateway did not start."""
    if path == "/healthz":
        await send_response(send, 200, b'{"status":"ok"}', _JSON)
    elif path == "/readyz":
        ok, detail = gateway.ready()
        if fault is not None:
            ok, detail = False, {**detail, "error": fault}
        await send_response(send, 200 if ok else 503, msgspec.json.encode({"ready": ok, **detail}), _JSON)
    else:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(gateway.metrics.registry)
        await send_response(send, 200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())])
