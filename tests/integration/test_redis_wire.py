"""litegate's pipelined Redis connection for the per-request scripts (issue #13,
scaling): replies reach their own callers, a real redis-server's errors, NOSCRIPT,
AUTH, SELECT and restarts, and every bound against a server that misbehaves."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import redis as redis_client
from limits import parse

from litegate.policies.limiting import Limiter, _check
from litegate.policies.redis_window import StorageScripts
from litegate.redis_wire import RedisAddress, RedisWire, ReplyError, WireError, parse_redis_url
from tests.helpers.cli import apply_config, chat_config, create_key
from tests.helpers.servers import free_port
from tests.helpers.services import redis_server

ECHO = "return ARGV[1]"
SHAPES = "return {1, 'two', {3, false}, redis.status_reply('OK')}"


def wire_for(url: str, **bounds: float) -> RedisWire:
    address = parse_redis_url(url)
    assert address is not None
    return RedisWire(address, **bounds)  # type: ignore[arg-type]


def local(port: int, **bounds: float) -> RedisWire:
    return RedisWire(RedisAddress("127.0.0.1", port, None, None, None, 0), **bounds)  # type: ignore[arg-type]


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6390/0", RedisAddress("127.0.0.1", 6390, None, None, None, 0)),
    ("async+redis://cache.internal/3", RedisAddress("cache.internal", 6379, None, None, None, 3)),
    ("redis://:s%3Acret@h:1", RedisAddress("h", 1, None, None, "s:cret", 0)),
    ("redis://app:p%40ss@h", RedisAddress("h", 6379, None, "app", "p@ss", 0)),
    ("redis://h?db=5", RedisAddress("h", 6379, None, None, None, 5)),
    ("unix:///run/redis.sock?db=4", RedisAddress(None, 6379, "/run/redis.sock", None, None, 4)),
    ("async+redis+unix:///run/redis.sock", RedisAddress(None, 6379, "/run/redis.sock", None, None, 0)),
])
def test_urls_the_wire_speaks(url: str, expected: RedisAddress) -> None:
    assert parse_redis_url(url) == expected


def test_the_password_stays_out_of_the_address_repr() -> None:
    address = parse_redis_url("redis://app:s3cret@h/1")
    assert address is not None and address.password == "s3cret"
    assert "s3cret" not in repr(address)


@pytest.mark.parametrize("url", [
    "rediss://h:6380/0",  # TLS: redis-py
    "redis+cluster://h:7000", "redis+sentinel://h:26379/mymaster", "valkey://h",
    "redis://h?socket_timeout=1", "redis://h?db=1&db=2", "redis://h/1?db=2",
    "redis://h/x", "redis://h/-1", "redis://h:99999", "redis://h#f", "redis:///0",
    "unix://", "unix://host/run/redis.sock", "http://h",
])
def test_anything_else_stays_on_redis_py(url: str) -> None:
    assert parse_redis_url(url) is None


def test_only_a_plain_redis_py_storage_gets_the_wire() -> None:
    with redis_server() as url:
        assert Limiter(storage="async+" + url, strategy="sliding-window-counter",
                       fail_open=False).scripts.wire is not None  # type: ignore[union-attr]
        from limits.storage import storage_from_string

        with_options = storage_from_string("async+" + url, implementation="redispy",
                                           socket_timeout=3)
        fallback = StorageScripts(with_options)
        assert fallback.wire is None  # options only redis-py knows: its client runs them
        assert asyncio.run(fallback.run(ECHO, [], [5])) == b"5"
    assert Limiter(storage="async+local://", strategy="sliding-window-counter",
                   fail_open=False).scripts is None


async def test_replies_errors_and_noscript_on_a_real_redis() -> None:
    with redis_server() as url:
        wire = wire_for(url)
        plain = redis_client.Redis.from_url(url)
        try:
            assert await wire.eval(SHAPES, [], []) == [1, b"two", [3, None], b"OK"]
            assert await wire.eval(ECHO, [], [b"\x00\r\n"]) == b"\x00\r\n"  # binary-safe
            with pytest.raises(ReplyError, match="ERR"):
                await wire.eval("return redis.call('nope')", [], [])
            assert await wire.eval(ECHO, [], [7]) == b"7"  # the connection is still in step
            calls = _calls(plain, "evalsha")
            assert await wire.eval("return KEYS[1]", ["k"], []) == b"k"
            plain.script_flush()  # Redis forgets every script: NOSCRIPT, then EVAL
            assert await wire.eval("return KEYS[1]", ["k"], []) == b"k"
            assert await wire.eval("return KEYS[1]", ["k"], []) == b"k"
            assert _calls(plain, "evalsha") - calls == 3 and _calls(plain, "eval") >= 2
        finally:
            wire.close()


def _calls(client: redis_client.Redis, command: str) -> int:
    stats = client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_concurrent_callers_share_one_connection_and_get_their_own_replies() -> None:
    with redis_server() as url:
        wire = wire_for(url)
        plain = redis_client.Redis.from_url(url)
        try:
            await wire.eval(ECHO, [], [b"warm"])
            received = plain.info("stats")["total_connections_received"]
            got = await asyncio.gather(*(wire.eval(ECHO, [], [i]) for i in range(2000)))
            assert got == [str(i).encode() for i in range(2000)]
            assert plain.info("stats")["total_connections_received"] == received
        finally:
            wire.close()


async def test_password_and_database_from_the_url() -> None:
    with redis_server("--requirepass", "s3cret") as url:
        base = url.removesuffix("/0").replace("redis://", "redis://:s3cret@")
        wire = wire_for(base + "/3")
        try:
            await wire.eval("return redis.call('set', KEYS[1], ARGV[1])", ["where"], ["db3"])
            assert redis_client.Redis.from_url(base + "/3").get("where") == b"db3"
            assert redis_client.Redis.from_url(base + "/0").get("where") is None
        finally:
            wire.close()
        wrong = wire_for(base.replace("s3cret", "wrong"))
        plain = redis_client.Redis.from_url(base)
        received = plain.info("stats")["total_connections_received"]
        with pytest.raises(WireError, match="cannot use Redis at 127.0.0.1:.*WRONGPASS"):
            await wrong.eval(ECHO, [], [1])
        # Failed just now: the next calls fail at once instead of each dialling again.
        for _ in range(20):
            with pytest.raises(WireError, match="WRONGPASS"):
                await wrong.eval(ECHO, [], [1])
        assert plain.info("stats")["total_connections_received"] == received + 1


async def test_a_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "r.sock"
    with redis_server("--unixsocket", str(sock)):
        wire = wire_for(f"unix://{sock}?db=2")
        try:
            assert await wire.eval(ECHO, [], ["u"]) == b"u"
        finally:
            wire.close()


async def test_a_restarted_redis_is_used_again() -> None:
    port = free_port()
    with redis_server(port=port) as url:
        wire = wire_for(url)
        assert await wire.eval(ECHO, [], [1]) == b"1"
    with pytest.raises(WireError):  # gone: lost, then refused
        await wire.eval(ECHO, [], [2])
    with redis_server(port=port):
        await asyncio.sleep(0.6)  # past the pause after a failed connect
        assert await wire.eval(ECHO, [], [3]) == b"3"  # a new connection, script re-sent
        wire.close()


# --------------------------------------------------------------- a server that misbehaves

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def fake_redis(handler: Handler) -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 running ``handler`` per connection; yields its port and
    whether each connection was closed by the client (b"eof")."""
    events: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
            while await reader.read(65536):
                pass
            events.append(b"eof")
        except ConnectionError:
            events.append(b"eof")
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], events
    finally:
        server.close()


async def _commands(reader: asyncio.StreamReader, count: int) -> list[list[bytes]]:
    out = []
    for _ in range(count):
        n = int((await reader.readline())[1:])
        args = []
        for _ in range(n):
            size = int((await reader.readline())[1:])
            args.append((await reader.readexactly(size + 2))[:-2])
        out.append(args)
    return out


async def test_a_silent_redis_times_out_and_the_connection_is_dropped() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _commands(reader, 2)

    async with fake_redis(silent) as (port, events):
        wire = local(port, timeout_s=0.3)
        started = time.monotonic()
        results = await asyncio.gather(wire.eval(ECHO, [], [1]), wire.eval(ECHO, [], [2]),
                                       return_exceptions=True)
        assert 0.25 < time.monotonic() - started < 3
        assert all(isinstance(r, WireError) and "did not answer within 0.3 s" in str(r)
                   for r in results), results
        await asyncio.sleep(0.05)
        assert events == [b"eof"]  # closed: its late replies can reach nobody


async def test_replies_go_to_their_own_callers_when_one_gives_up() -> None:
    async def in_order(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        commands = await _commands(reader, 3)
        await asyncio.sleep(0.2)
        for args in commands:  # EVALSHA sha 0 value: answer the value
            writer.write(b"$%d\r\n%s\r\n" % (len(args[3]), args[3]))
        await writer.drain()

    async with fake_redis(in_order) as (port, _):
        wire = local(port)
        first = asyncio.ensure_future(wire.eval(ECHO, [], ["a"]))
        middle = asyncio.ensure_future(wire.eval(ECHO, [], ["b"]))
        last = asyncio.ensure_future(wire.eval(ECHO, [], ["c"]))
        await asyncio.sleep(0.05)
        middle.cancel()
        assert (await first, await last) == (b"a", b"c")
        assert middle.cancelled()
        wire.close()


@pytest.mark.parametrize(("reply", "error"), [
    (b"$100000\r\n" + b"x" * 5000, "exceeds 4096 bytes"),  # one reply past the bound
    (b"!weird\r\n", "not a RESP reply"),
    (b":12x\r\n", "bad reply"),
    (b"*1\r\n" * 5000 + b":1\r\n", "bad reply"),  # nested past the interpreter's stack
    (b"+OK\r\n+OK\r\n", "a reply nobody asked for"),
])
async def test_replies_out_of_protocol_fail_the_call_and_drop_the_connection(
        reply: bytes, error: str) -> None:
    async def hostile(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _commands(reader, 1)
        writer.write(reply)
        await writer.drain()

    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    async with fake_redis(hostile) as (port, events):
        wire = local(port, max_reply_bytes=4096)
        if error == "a reply nobody asked for":
            assert await wire.eval(ECHO, [], [1]) == b"OK"
            await asyncio.sleep(0.05)
        else:
            with pytest.raises(WireError, match=error):
                await wire.eval(ECHO, [], [1])
        await asyncio.sleep(0.05)
        assert events == [b"eof"]
        wire.close()
    assert unhandled == []  # handled by the connection, not escaped to the loop


async def test_calls_waiting_on_one_connection_are_bounded() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async with fake_redis(silent) as (port, _):
        wire = local(port, max_pending=3, timeout_s=5)
        waiting = [asyncio.ensure_future(wire.eval(ECHO, [], [i])) for i in range(3)]
        await asyncio.sleep(0.05)
        with pytest.raises(WireError, match="more than 3 Redis calls waiting"):
            await wire.eval(ECHO, [], [4])
        wire.close()
        for call in waiting:
            with pytest.raises(WireError, match="closed"):
                await call


async def test_nothing_listening_fails_fast() -> None:
    wire = local(free_port())
    started = time.monotonic()
    with pytest.raises(WireError, match="cannot use Redis at 127.0.0.1"):
        await wire.eval(ECHO, [], [1])
    assert time.monotonic() - started < 2


# --------------------------------------------------------------- through the gateway

def test_limits_and_usage_count_again_after_redis_restarts(home, tmp_path, fake_upstream,
                                                           make_gateway) -> None:
    """A replica on a Redis that restarts: 503 while it is gone (fail closed), then its
    limits count again on the new one without restarting the gateway."""
    port = free_port()
    apply_config(home, chat_config(fake_upstream.base_url, limits=["1000/minute"]), tmp_path)
    key = create_key(home)

    def post() -> int:
        return httpx.post(server.url + "/v1/chat/completions",
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
                          timeout=10).status_code

    with redis_server(port=port) as url:
        server = make_gateway(redis=url, limit_fail_open=False)
        assert [post() for _ in range(3)] == [200] * 3
    assert post() == 503
    with redis_server(port=port) as url:
        deadline = time.time() + 10
        while post() != 200 and time.time() < deadline:
            time.sleep(0.1)
        assert post() == 200
        counted = redis_client.Redis.from_url(url).keys("LIMITS:*litegate/req/*")
        assert counted, "the new Redis holds the request counters"


def test_a_limiter_check_through_the_wire_matches_limits_own() -> None:
    """The same window arithmetic as before (``test_redis_windows`` compares in detail):
    5/minute lets five through and refuses the sixth, over the wire."""
    with redis_server() as url:
        async def main() -> list[bool]:
            limiter = Limiter(storage="async+" + url, strategy="sliding-window-counter",
                              fail_open=False)
            assert limiter.scripts is not None and limiter.scripts.wire is not None
            check = [_check(parse("5/minute"), "litegate", "req", "w", "*")]
            out = []
            for _ in range(6):
                try:
                    await limiter.hit(check)
                    out.append(True)
                except Exception:
                    out.append(False)
            limiter.close()
            return out

        from tests.helpers.windows import clear_of_minute_edge

        clear_of_minute_edge()
        assert asyncio.run(main()) == [True] * 5 + [False]


# --------------------------------------------------------------- the shared response cache

async def test_the_response_cache_round_trips_large_entries_over_the_wire() -> None:
    from litegate.policies.caching import RedisResponseCache

    with redis_server() as url:
        cache = RedisResponseCache(url, max_bytes=32 << 20)  # entries up to 4 MiB
        assert cache.wire is not None and cache.redis is None
        body = bytes(range(256)) * (3 << 12)  # 3 MiB, every byte value, CRLFs inside
        try:
            assert await cache.store("k", status=200, headers=((b"x-a", b"1"),), body=body,
                                     variant="v", ttl_s=60)
            hit = await cache.lookup("k")
            assert hit is not None and (hit.status, hit.headers, hit.body, hit.variant) == (
                200, ((b"x-a", b"1"),), body, "v")
            assert await cache.lookup("other") is None
            ttl = redis_client.Redis.from_url(url).pttl(RedisResponseCache.PREFIX + "k")
            assert 59_000 < ttl <= 60_000
        finally:
            await cache.close()


async def test_a_silent_redis_is_a_cache_miss_within_its_timeout() -> None:
    from litegate.policies.caching import RedisResponseCache

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async with fake_redis(silent) as (port, _):
        cache = RedisResponseCache(f"redis://127.0.0.1:{port}/0", max_bytes=1 << 20)
        started = time.monotonic()
        assert await cache.lookup("k") is None
        assert not await cache.store("k", status=200, headers=(), body=b"x", variant=None,
                                     ttl_s=1)
        assert time.monotonic() - started < 3  # two 0.5 s deadlines, not a hang
        await cache.close()


def test_a_stalled_redis_is_503_within_the_deadline_then_counts_again(
        home, tmp_path, fake_upstream, make_gateway) -> None:
    """redis-server stopped (SIGSTOP: the connection stays open, nothing answers): a
    fail-closed replica answers 503 once the 5 s deadline passes instead of waiting for
    ever, and counts again as soon as Redis runs."""
    import os
    import signal

    from litegate.redis_wire import TIMEOUT_S

    apply_config(home, chat_config(fake_upstream.base_url, limits=["1000/minute"]), tmp_path)
    key = create_key(home)
    with redis_server() as url:
        server = make_gateway(redis=url, limit_fail_open=False)

        def post() -> httpx.Response:
            return httpx.post(server.url + "/v1/chat/completions",
                              headers={"Authorization": f"Bearer {key}"},
                              json={"model": "chat",
                                    "messages": [{"role": "user", "content": "x"}]},
                              timeout=30)

        assert post().status_code == 200
        pid = int(redis_client.Redis.from_url(url).info("server")["process_id"])
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            stalled = post()
            waited = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        assert stalled.status_code == 503, stalled.text
        assert stalled.json()["error"]["type"] == "service_unavailable"
        assert TIMEOUT_S - 0.5 < waited < TIMEOUT_S + 5
        deadline = time.time() + 10
        while post().status_code != 200 and time.time() < deadline:
            time.sleep(0.1)
        assert post().status_code == 200


async def test_usage_writes_waiting_for_a_silent_redis_are_bounded() -> None:
    """Usage batches are written in the background: while Redis does not answer, at
    most MAX_WRITES wait; the later ones are dropped with a warning, not held."""
    from limits.storage import storage_from_string
    from structlog.testing import capture_logs

    from litegate.policies import spend as spend_module
    from litegate.snapshot import KeySpec

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    key = KeySpec(id=1, name="k", routes=None, is_admin=False, expires_at=None)
    async with fake_redis(silent) as (port, _):
        url = f"redis://127.0.0.1:{port}/0"
        spend = spend_module.Spend(storage_from_string("async+" + url, implementation="redispy"))
        assert spend.scripts is not None and spend.scripts.wire is not None
        steps = spend_module.MAX_WRITES + 50
        with capture_logs() as logs:
            for _ in range(steps):  # one request finishing per loop step
                assert spend.record_nowait(key, "chat", None, 5, 7) == 0
                await asyncio.sleep(0)
            await asyncio.sleep(0.05)
            assert len(spend._writing) == spend_module.MAX_WRITES
        # One warning for the outage, not one per loop step; every loss is counted.
        assert [(e["event"], e["error"]) for e in logs] == [
            ("spend_not_recorded", f"{spend_module.MAX_WRITES} usage writes are already "
             "waiting for Redis")]
        assert spend.lost == 50
        spend.scripts.close()  # the waiting writes fail at once: lost, nothing raised
        await spend.drain()
        assert not spend._writing and spend.lost == steps
