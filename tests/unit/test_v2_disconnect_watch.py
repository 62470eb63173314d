"""The v2 app notices a client that left only for inferences that wait: a fast one never
reads ``receive`` (no watcher task), a slow one is cancelled once its client is gone."""

from __future__ import annotations

import asyncio

from litegate.inference.v2_server import _unless_disconnected


class Client:
    """An ASGI ``receive`` after the body: blocks until the client leaves."""

    def __init__(self) -> None:
        self.calls = 0
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, str]:
        self.calls += 1
        await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_an_inference_that_ends_before_the_watch_never_reads_receive() -> None:
    client = Client()
    tasks_before = len(asyncio.all_tasks())

    async def fast() -> str:
        await asyncio.sleep(0.01)
        return "answer"

    assert await _unless_disconnected(client.receive, fast(), watch_after_s=0.5) == "answer"
    assert client.calls == 0  # before: a watcher task called receive for every request
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_waiting_inference_is_cancelled_once_its_client_leaves() -> None:
    client = Client()
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "answer"

    loop = asyncio.get_running_loop()
    loop.call_later(0.05, client.gone.set)  # leaves before the watch starts
    started = loop.time()
    assert await _unless_disconnected(client.receive, slow(), watch_after_s=0.2) is None
    assert cancelled.is_set()
    assert client.calls == 1
    assert 0.15 < loop.time() - started < 5  # noticed when the watch began, not at 30 s


async def test_a_client_that_stays_gets_its_answer_after_the_watch_began() -> None:
    client = Client()

    async def slowish() -> str:
        await asyncio.sleep(0.3)
        return "answer"

    assert await _unless_disconnected(client.receive, slowish(), watch_after_s=0.05) == "answer"
    assert client.calls == 1
    await asyncio.sleep(0)  # the watcher is cancelled with the request, never left behind
    assert not [t for t in asyncio.all_tasks() if "disconnected" in repr(t.get_coro())]
