"""The one helper that sends a complete (non-streamed) ASGI response."""

from __future__ import annotations

from collections.abc import Iterable

from litegate.asgi_types import Send


async def send_response(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """``http.response.start`` with ``headers`` plus a Content-Length, then the body."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
