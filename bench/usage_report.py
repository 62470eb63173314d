"""How long ``Spend.report`` (``litegate usage``, the console's Usage page) takes to read
the usage counters: over Redis (MGET in slices) against the same counters read one GET
at a time (the first implementation), and over the in-process storage.

    .venv/bin/python bench/usage_report.py --keys 100 --variants 2 --days 7,30,90

Starts a throwaway ``redis-server`` (tests/helpers/services.py). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from limits.storage import storage_from_string  # noqa: E402

from litegate.policies.limit_storage import LocalStorage  # noqa: E402,F401  (async+local)
from litegate.policies.spend import DAY, FIELDS, READ_BATCH, Spend  # noqa: E402
from litegate.snapshot import (  # noqa: E402
    KeySpec,
    RouteSpec,
    Snapshot,
    UpstreamSpec,
    VariantSpec,
    nano_per_token,
)
from tests.helpers.services import redis_server  # noqa: E402


def snapshot(keys: int, variants: int) -> Snapshot:
    up = UpstreamSpec("u", "openai", "http://x", None, 1.0, 1.0, 0)
    vs = tuple(VariantSpec(f"v{i}", up, "m", 1, nano_per_token(1), nano_per_token(2))
               for i in range(variants))
    route = RouteSpec("chat", vs, tuple(range(1, variants + 1)), variants, "none", None, None,
                      (), (), None)
    return Snapshot(routes={"chat": route}, keys={
        f"h{i}": KeySpec(id=i, name=f"k{i}", routes=None, is_admin=False, expires_at=None)
        for i in range(keys)})


async def one_by_one(spend: Spend, snap: Snapshot, days: int, now: float) -> None:
    """The first implementation's reads: a GET per counter, 64 in flight."""
    last = int(now // DAY)
    route = snap.routes["chat"]
    for k in snap.keys.values():
        for v in route.variants:
            names = [f"litegate/usage/{d}/{k.id}/chat/{v.name}/{f}"
                     for d in range(last - days + 1, last + 1) for f in FIELDS]
            for i in range(0, len(names), READ_BATCH):
                await asyncio.gather(*(spend.storage.get(n) for n in names[i:i + READ_BATCH]))


async def measure(uri: str, snap: Snapshot, days_list: list[int], rounds: int) -> list[str]:
    spend = Spend(storage_from_string(uri))
    now = time.time()
    route = snap.routes["chat"]
    for i, k in enumerate(snap.keys.values()):  # a quarter of the keys have traffic
        if i % 4 == 0:
            for back in range(0, 90, 3):
                await spend.record(k, "chat", route.variants[0], 50, 20, now=now - back * DAY)
    lines = []
    counters = len(snap.keys) * len(route.variants) * len(FIELDS)
    for days in days_list:
        modes = [("report", lambda d=days: spend.report(snap, days=d, now=now))]
        if not uri.startswith("async+local"):
            modes.append(("GET per counter", lambda d=days: one_by_one(spend, snap, d, now)))
        for name, run in modes:
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                await run()
                times.append(time.perf_counter() - t)
            best = min(times)
            lines.append(f"| {uri.split(':')[0]} | {name} | {days} | {counters * days:,} | "
                         f"{best * 1000:.0f} | {best / (counters * days) * 1e6:.1f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=100)
    ap.add_argument("--variants", type=int, default=2)
    ap.add_argument("--days", default="7,30,90")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    snap = snapshot(args.keys, args.variants)
    days = [int(d) for d in args.days.split(",")]
    print("| storage | read | days | counters | best ms | µs/counter |")
    print("|---|---|---|---|---|---|")
    for line in asyncio.run(measure("async+local://", snap, days, args.rounds)):
        print(line)
    with redis_server() as url:
        for line in asyncio.run(measure("async+" + url, snap, days, args.rounds)):
            print(line)


if __name__ == "__main__":
    main()
