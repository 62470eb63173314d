"""A fast mock OpenAI-compatible upstream for the proxy benchmark.

It is a raw asyncio protocol on uvloop with the httptools parser (the same parser
uvicorn uses), so one process answers tens of thousands of requests per second
and stays far from being the bottleneck of any target in ``bench/proxy.py``.

Endpoints (any prefix before them is accepted, e.g. ``/v1``):

- ``POST /v1/chat/completions`` -> a fixed small completion with ``usage``;
  with ``"stream": true`` in the body, a short SSE stream ending in ``[DONE]``.
- ``POST /v1/completions``      -> a fixed text completion with ``usage``.
- ``POST /v1/embeddings``       -> a fixed 8-dim embedding with ``usage``.
- ``GET  /v1/models``           -> one model, ``small-model``.
- ``GET  /healthz``             -> ``ok``.

Run: ``python bench/mock_upstream.py --port 9000 [--host 127.0.0.1] [--delay-ms 0]``.
It prints ``READY <port>`` on stdout once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

import httptools

try:  # uvloop is part of uvicorn[standard]; fall back to asyncio if absent.
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


def _response(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"content-type: " + content_type + b"\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"\r\n" + body
    )


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


CHAT_BODY = _json(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "small-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
    }
)
COMPLETION_BODY = _json(
    {
        "id": "cmpl-mock",
        "object": "text_completion",
        "created": 1700000000,
        "model": "small-model",
        "choices": [{"index": 0, "text": " world", "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
)
EMBEDDINGS_BODY = _json(
    {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.125] * 8}],
        "model": "small-model",
        "usage": {"prompt_tokens": 2, "total_tokens": 2},
    }
)
MODELS_BODY = _json(
    {
        "object": "list",
        "data": [{"id": "small-model", "object": "model", "created": 1700000000, "owned_by": "mock"}],
    }
)


def _sse_stream() -> bytes:
    events = []
    for i, piece in enumerate(["Hello", "!", " How can I help?"]):
        chunk = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "small-model",
            "choices": [
                {
                    "index": 0,
                    "delta": ({"role": "assistant", "content": piece} if i == 0 else {"content": piece}),
                    "finish_reason": None,
                }
            ],
        }
        events.append(b"data: " + _json(chunk) + b"\n\n")
    final = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "small-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    events.append(b"data: " + _json(final) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    out = [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"]
    for ev in events:
        out.append(format(len(ev), "x").encode() + b"\r\n" + ev + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


RESP_CHAT = _response(b"200 OK", CHAT_BODY)
RESP_CHAT_STREAM = _sse_stream()
RESP_COMPLETION = _response(b"200 OK", COMPLETION_BODY)
RESP_EMBEDDINGS = _response(b"200 OK", EMBEDDINGS_BODY)
RESP_MODELS = _response(b"200 OK", MODELS_BODY)
RESP_HEALTH = _response(b"200 OK", b"ok", b"text/plain")
RESP_404 = _response(
    b"404 Not Found",
    _json({"error": {"message": "not found", "type": "invalid_request_error", "code": "not_found"}}),
)
RESP_400 = _response(
    b"400 Bad Request",
    _json({"error": {"message": "bad request", "type": "invalid_request_error", "code": None}}),
)


class MockProtocol(asyncio.Protocol):
    __slots__ = ("transport", "parser", "url", "body", "delay")

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(RESP_400)
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0].rstrip(b"/")
        if method == b"POST":
            if path.endswith(b"/chat/completions"):
                body = b"".join(self.body)
                if b'"stream":true' in body.replace(b" ", b""):
                    resp = RESP_CHAT_STREAM
                else:
                    resp = RESP_CHAT
            elif path.endswith(b"/completions"):
                resp = RESP_COMPLETION
            elif path.endswith(b"/embeddings"):
                resp = RESP_EMBEDDINGS
            else:
                resp = RESP_404
        elif method == b"GET":
            if path.endswith(b"/models"):
                resp = RESP_MODELS
            elif path.endswith(b"/healthz") or path in (b"", b"/health"):
                resp = RESP_HEALTH
            else:
                resp = RESP_404
        else:
            resp = RESP_404
        keep_alive = self.parser.should_keep_alive()
        if self.delay > 0:
            asyncio.get_running_loop().call_later(self.delay, self._send, resp, keep_alive)
        else:
            self._send(resp, keep_alive)

    def _send(self, resp: bytes, keep_alive: bool) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        t.write(resp)
        if not keep_alive:
            t.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, delay_ms: float) -> None:
    loop = asyncio.get_running_loop()
    delay = delay_ms / 1000.0
    server = await loop.create_server(lambda: MockProtocol(delay), host, port, backlog=2048, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000, help="0 picks a free port (printed on READY)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="simulated upstream latency")
    a = p.parse_args(argv)
    if uvloop is not None:
        uvloop.run(serve(a.host, a.port, a.delay_ms))
    else:  # pragma: no cover
        asyncio.run(serve(a.host, a.port, a.delay_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
