"""``litegate usage [--json] [--csv FILE] [--since 30d]``: usage and cost per key name,
route and variant, and each budget's spend in its current period.

Read straight from the gateways' shared counters in Redis (``LITEGATE_REDIS``), the same
counters every replica adds to; without Redis the counters live inside each gateway
process and there is nothing shared to read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from litegate.cli.common import print_json, print_table, transaction
from litegate.faults import OperationalFault
from litegate.policies.limiting import storage_uri
from litegate.policies.spend import CSV_COLUMNS, Spend, since_days
from litegate.services.schema import ValidationFailed
from litegate.settings import Settings
from litegate.snapshot import build_snapshot


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("usage", help="usage and cost per key, route and variant; budgets")
    p.add_argument("--since", default="30d", help="whole UTC days back: 30d (default), 7d, 1d")
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the rows as CSV")
    p.set_defaults(func=_usage)


async def _usage(args: argparse.Namespace, settings: Settings) -> int:
    try:
        days = since_days(args.since)
    except ValueError as exc:
        raise ValidationFailed([f"--since: {exc}"]) from None
    if not settings.redis:
        raise OperationalFault(
            "usage is counted in Redis shared by the gateways: set LITEGATE_REDIS (or "
            "--redis) to the gateways' Redis; without it each process keeps its own counters"
        )
    async with transaction(settings) as session:
        snapshot = await build_snapshot(session)
    from limits.storage import storage_from_string

    spend = Spend(storage_from_string(storage_uri(settings.redis)))
    try:
        report = await spend.report(snapshot, days=days)
    except Exception as exc:  # the storage's own errors (connection refused, timeouts)
        raise OperationalFault(f"cannot read usage from Redis at {settings.redis}: {exc}") from exc
    rows = [r.as_dict() for r in report.rows]
    if args.csv:
        with args.csv.open("w", newline="") as f:
            report.write_csv(f)
    if args.json:
        print_json({"since": args.since, **report.as_dict()})
        return 0
    print_table([r | {"cost_usd": f"{r['cost_usd']:.6f}"} for r in rows], CSV_COLUMNS)
    if report.budgets:
        print()
        print_table([b.as_dict() | {"state": "exceeded" if b.exceeded else
                                    "alert" if b.alert else "ok"} for b in report.budgets],
                    ["key", "max_usd", "period", "spent_usd", "state"])
    return 0
