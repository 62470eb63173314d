"""The load engine behind ``litegate loadtest``: N keep-alive connections in one asyncio
process (aiohttp), started linearly over a ramp-up, each sending chat completions to
one route for a number of loops or until a deadline. Latencies go to fixed-size
histograms, so memory stays flat however long the run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from litegate.ops.histogram import LatencyHistogram

OVERHEAD_HEADER = "X-Litegate-Overhead-Ms"


@dataclass(frozen=True, slots=True)
class Plan:
    url: str
    key: str
    route: str
    connections: int = 100
    ramp_up_s: float = 0.0
    duration_s: float | None = None
    """Total run time, ramp-up included; or ``loops`` per connection."""
    loops: int | None = None
    stream: bool = False
    prompt: str = "ping"
    timeout_s: float = 60.0

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + "/v1/chat/completions"

    def body(self) -> bytes:
        return json.dumps({"model": self.route, "stream": self.stream,
                           "messages": [{"role": "user", "content": self.prompt}]}).encode()


@dataclass(slots=True)
class Results:
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    overhead: LatencyHistogram = field(default_factory=LatencyHistogram)
    first_byte: LatencyHistogram = field(default_factory=LatencyHistogram)
    outcomes: Counter[str] = field(default_factory=Counter)
    """HTTP status or transport failure -> count: a bounded set of keys."""
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    active: int = 0

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    @property
    def ok(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k.startswith("2"))

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    def to_dict(self, plan: Plan) -> dict[str, Any]:
        def ms(h: LatencyHistogram) -> dict[str, float] | None:
            if not h.count:
                return None
            return {"count": h.count, **{f"p{q}": round(h.percentile(q) * 1000, 3)
                                         for q in (50, 95, 99)},
                    "mean": round(h.mean * 1000, 3), "max": round(h.max * 1000, 3)}

        elapsed = self.elapsed_s
        return {
            "route": plan.route, "connections": plan.connections, "stream": plan.stream,
            "requests": self.done, "ok": self.ok, "duration_s": round(elapsed, 3),
            "rps": round(self.done / elapsed, 1) if elapsed > 0 else 0.0,
            "latency_ms": ms(self.latency),
            "first_byte_ms": ms(self.first_byte) if plan.stream else None,
            "overhead_ms": ms(self.overhead),
            "errors": {k: n for k, n in sorted(self.outcomes.items()) if not k.startswith("2")},
        }


async def send_one(session: aiohttp.ClientSession, plan: Plan, body: bytes,
                   headers: dict[str, str], results: Results) -> str:
    """One request, read to the end; records it and returns its outcome."""
    t0 = time.perf_counter()
    first: float | None = None
    try:
        async with session.post(plan.endpoint, data=body, headers=headers) as resp:
            if plan.stream:
                async for _ in resp.content.iter_any():
                    if first is None:
                        first = time.perf_counter() - t0
            else:
                await resp.read()
            outcome = str(resp.status)
            overhead = resp.headers.get(OVERHEAD_HEADER)
    except aiohttp.ClientConnectorError:
        outcome, overhead = "connect_error", None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        outcome, overhead = "timeout", None
    except aiohttp.ClientError:
        outcome, overhead = "connection_lost", None
    results.outcomes[outcome] += 1
    if outcome.startswith("2"):
        results.latency.record(time.perf_counter() - t0)
        if first is not None:
            results.first_byte.record(first)
    if overhead:
        try:
            results.overhead.record(float(overhead) / 1000.0)
        except ValueError:
            pass  # not a number: a proxy in between rewrote it; nothing to record
    return outcome


def session_for(plan: Plan) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=plan.connections, limit_per_host=plan.connections,
                                     ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=plan.timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout)


def headers_for(plan: Plan) -> dict[str, str]:
    return {"Authorization": f"Bearer {plan.key}", "Content-Type": "application/json"}


async def run(plan: Plan, *, on_tick: Callable[[Results], None] | None = None,
              tick_s: float = 1.0, stop: asyncio.Event | None = None) -> Results:
    """``stop`` set (Ctrl+C): no new requests; those in flight finish and are counted."""
    body, headers = plan.body(), headers_for(plan)
    results = Results()
    deadline = results.started + plan.duration_s if plan.duration_s is not None else None

    async def connection(i: int, session: aiohttp.ClientSession) -> None:
        if plan.ramp_up_s > 0:  # linear ramp: connection i starts at i/N of the ramp-up
            delay = plan.ramp_up_s * i / plan.connections
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        results.active += 1
        try:
            sent = 0
            while (plan.loops is None or sent < plan.loops) and (
                    deadline is None or time.perf_counter() < deadline) and not (
                    stop is not None and stop.is_set()):
                await send_one(session, plan, body, headers, results)
                sent += 1
        finally:
            results.active -= 1

    async def ticker() -> None:
        while True:
            await asyncio.sleep(tick_s)
            if on_tick is not None:
                on_tick(results)

    async with session_for(plan) as session:
        tick = asyncio.create_task(ticker())
        try:
            await asyncio.gather(*(connection(i, session) for i in range(plan.connections)))
        finally:
            tick.cancel()
            results.finished = time.perf_counter()
    return results
