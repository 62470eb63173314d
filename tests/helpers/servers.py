"""Real servers on 127.0.0.1 for tests: uvicorn in a thread, a fake upstream LLM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from aiohttp import web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThreadServer:
    """uvicorn serving ``app`` in a background thread (its own event loop)."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
            loop="asyncio", http="h11" if False else "httptools", access_log=False,
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@dataclass
class FakeUpstream:
    """OpenAI-compatible fake. Behaviour is chosen by the ``model`` the gateway sends:

    * ``slow-*``: sleeps ``slow_s`` before answering
    * ``error-NNN``: answers status NNN with an OpenAI error body
    * anything else: a normal completion; with ``stream: true`` SSE chunks
      ``chunk_delay_s`` apart; ``die-*`` streams break the connection after 2 chunks.
    """

    slow_s: float = 2.0
    chunk_delay_s: float = 0.05
    chunks: int = 5
    calls: list[dict[str, Any]] = field(default_factory=list)
    headers_seen: list[dict[str, str]] = field(default_factory=list)
    stream_finished: list[float] = field(default_factory=list)
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        return app

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, float(i)]}
                         for i in range(len(inputs))],
                "model": body["model"],
                "usage": {"prompt_tokens": 3, "total_tokens": 3},
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.calls.append(body)
        self.headers_seen.append(dict(request.headers))
        model: str = body["model"]
        if model.startswith("slow"):
            await asyncio.sleep(self.slow_s)
        if model.startswith("error-"):
            status = int(model.split("-")[1])
            return web.json_response(
                {"error": {"message": f"upstream says {status}", "type": "upstream", "code": None}},
                status=status,
            )
        text = f"hello from {model}"
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(self.chunks):
                chunk = {
                    "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
                }
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
                if model.startswith("die") and i == 1:
                    request.transport.close()  # type: ignore[union-attr]
                    return resp
                await asyncio.sleep(self.chunk_delay_s)
            await resp.write(b"data: [DONE]\n\n")
            self.stream_finished.append(time.perf_counter())
            return resp
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
            }
        )


@contextlib.contextmanager
def serve_aiohttp(app: web.Application) -> Iterator[int]:
    """Serve an aiohttp app on 127.0.0.1 in a thread; yields its port."""
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", port)
        loop.run_until_complete(site.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextlib.contextmanager
def run_fake_upstream(**options: Any) -> Iterator[FakeUpstream]:
    fake = FakeUpstream(**options)
    with serve_aiohttp(fake.app()) as port:
        fake.port = port
        yield fake


@contextlib.contextmanager
def remote_litegate(root: Path, *, offset: float = 3.0) -> Iterator[tuple[str, str]]:
    """Another litegate, on its own home under ``root``, serving model ``add`` (y = x @ W
    + ``offset``): what a remote v2 upstream looks like. Yields its URL and a key."""
    from litegate.app import create_app
    from litegate.db import migrate
    from litegate.settings import Settings
    from tests.fixtures.onnx_models import matmul_add_model
    from tests.helpers.cli import create_key, run_cli

    home = root / "remote"
    src = matmul_add_model(root / "remote-add.onnx", offset=offset)
    assert run_cli("models", "add", "add", str(src), home=home)[0] == 0
    key = create_key(home, "edge")
    settings = Settings.load(home=home)
    migrate.upgrade(settings.db_url)
    with ThreadServer(create_app(settings)) as remote:
        yield remote.url, key


def wait_http(url: str, proc: subprocess.Popen[Any] | None = None, timeout: float = 60) -> None:
    """Poll ``url`` until it answers 200, failing as soon as the server process ``proc``
    (when the server is one) exits (with what it printed) or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited ({proc.returncode}): {out!s:.2000} {err!s:.2000}")
        assert time.monotonic() < deadline, f"{url} never answered 200"
        time.sleep(0.1)


def wait_ready(base_url: str, proc: subprocess.Popen[Any] | None = None,
               timeout: float = 60) -> None:
    """:func:`wait_http` on the gateway's ``/readyz``: its models are loaded and its
    database answers."""
    wait_http(base_url + "/readyz", proc, timeout)
