"""``litegate serve`` writes a response head together with its body (one send, one TCP
segment), never out of order, and never holds a stream's head past the loop step."""

from __future__ import annotations

import asyncio

from litegate.connections import CoalescedWrites

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recording:
    """The parts of an asyncio transport uvicorn's cycle uses, recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[bytes, ...]]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", (data,)))

    def writelines(self, parts) -> None:
        self.calls.append(("writelines", tuple(parts)))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", ()))

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def shim() -> tuple[CoalescedWrites, Recording]:
    raw = Recording()
    return CoalescedWrites(raw, asyncio.get_running_loop()), raw


async def test_a_head_and_its_body_in_one_step_are_one_write() -> None:
    writes, raw = shim()
    writes.write(HEAD)
    assert raw.calls == []  # held for the body
    writes.write(b"{}")
    assert raw.calls == [("write", (HEAD + b"{}",))]
    await asyncio.sleep(0)
    assert raw.calls == [("write", (HEAD + b"{}",))]  # the scheduled flush finds nothing


async def test_a_streams_head_goes_at_the_end_of_the_step_and_chunks_at_once() -> None:
    writes, raw = shim()
    writes.write(HEAD)
    await asyncio.sleep(0)  # the first chunk is not ready yet: the head still goes out
    assert raw.calls == [("write", (HEAD,))]
    writes.write(b"data: 1\n\n")
    assert raw.calls[-1] == ("write", (b"data: 1\n\n",))  # not held: no head


async def test_a_large_body_is_not_copied_onto_its_head() -> None:
    writes, raw = shim()
    body = b"x" * (1 << 20)
    writes.write(HEAD)
    writes.write(body)
    assert raw.calls == [("writelines", (HEAD, body))]


async def test_close_writes_what_is_held_first_and_a_closed_transport_gets_nothing() -> None:
    writes, raw = shim()
    writes.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    writes.close()
    assert raw.calls == [("write", (b"HTTP/1.1 408 Request Timeout\r\n\r\n",)), ("close", ())]

    writes, raw = shim()
    writes.write(HEAD)
    raw.closing = True  # the client went away before the end of the step
    await asyncio.sleep(0)
    assert raw.calls == []
    assert writes.is_closing()
    assert writes.get_extra_info("peername") == "info:peername"
