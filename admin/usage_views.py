"""The Usage page: spend and tokens per key and UTC day, usage per route and variant,
budgets, and the same rows as CSV.

It reads :meth:`litegate.policies.spend.Spend.report`, the query behind ``litegate
usage``, over the serving gateway's counters: with ``--redis`` those every replica adds
to, otherwise this process's own.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from litestar import Response, get
from litestar.exceptions import ValidationException
from markupsafe import Markup

from litegate.policies.spend import (
    NANO,
    BudgetState,
    KeyUsage,
    UsageReport,
    day_date,
    read_report,
)
from litegate.snapshot import build_snapshot

from . import charts
from .auth import context_of
from .pages import SECURITY_HEADERS, AdminRequest, render

PERIODS = ("1d", "7d", "30d", "90d")
DEFAULT_PERIOD = "7d"
CHARTED_KEYS = 12
"""Keys drawn (the costliest first); the table lists them all, the key filter shows any."""


@dataclass(frozen=True, slots=True)
class Query:
    period: str
    key: str
    """A configured key name, or "" for every key."""


async def _report(request: AdminRequest) -> tuple[UsageReport, Query, list[str]]:
    ctx = context_of(request)
    period = str(request.query_params.get("period") or DEFAULT_PERIOD)
    if period not in PERIODS:
        raise ValidationException(f"period must be one of {', '.join(PERIODS)}")
    key = str(request.query_params.get("key") or "")
    async with ctx.sessionmaker() as session:
        snapshot = await build_snapshot(session)
    names = sorted({k.name for k in snapshot.keys.values()})
    if key and key not in names:
        raise ValidationException("key must be the name of an active API key")
    ids = {k.id for k in snapshot.keys.values() if k.name == key} if key else None
    report = await read_report(ctx.gateway.spend, snapshot, days=int(period[:-1]), key_ids=ids)
    return report, Query(period, key), names


def _key_charts(report: UsageReport, k: KeyUsage) -> list[Markup]:
    labels = [day_date(d)[5:] for d in report.days]
    tokens = charts.bar_chart(
        f"{k.key}: tokens per day", labels,
        {"prompt": [d.prompt_tokens for d in k.days],
         "completion": [d.completion_tokens for d in k.days]},
    )
    spend = charts.bar_chart(
        f"{k.key}: spend per day (USD)", labels, {"cost": [d.cost_nano / NANO for d in k.days]},
        fmt=charts.usd,
    )
    return [tokens, spend]


def _budget_row(b: BudgetState) -> dict[str, Any]:
    alert = b.alert_nano
    return {
        "key": b.key, "period": b.period, "max_usd": b.max_nano / NANO,
        "spent_usd": b.spent_nano / NANO, "alert_at": b.alert_at,
        "alert_usd": None if alert is None else alert / NANO,
        "used": b.spent_nano / b.max_nano,
        "state": "exceeded" if b.exceeded else "alert" if b.alert else "ok",
        "meter": charts.meter(b.spent_nano, b.max_nano, mark=alert,
                              label=f"{b.key}: {b.spent_nano / b.max_nano:.0%} of the budget"),
    }


@get("/usage", name="litegate_admin:usage")
async def usage_page(request: AdminRequest) -> Response[str]:
    report, q, names = await _report(request)
    ranked = sorted(report.keys, key=lambda k: (-k.total.cost_nano, -k.total.requests, k.key))
    total = sum((k.total.cost_nano for k in report.keys), 0)
    return render(
        request, "usage.html", title="Usage", active="usage",
        periods=PERIODS, period=q.period, key=q.key, key_names=names,
        first_day=day_date(report.days[0]), last_day=day_date(report.days[-1]),
        shared=bool(context_of(request).settings.redis),
        charts=[c for k in ranked[:CHARTED_KEYS] for c in _key_charts(report, k)],
        more_keys=max(len(ranked) - CHARTED_KEYS, 0),
        keys=[{"key": k.key, **k.total.as_dict()} for k in ranked],
        rows=[r.as_dict() for r in report.rows],
        total_usd=total / NANO,
        budgets=[_budget_row(b) for b in report.budgets],
        csv_query=urlencode({"period": q.period, **({"key": q.key} if q.key else {})}),
    )


@get("/usage.csv", name="litegate_admin:usage_csv")
async def usage_csv(request: AdminRequest) -> Response[str]:
    report, q, _ = await _report(request)
    out = io.StringIO()
    report.write_csv(out)
    return Response(
        out.getvalue(), media_type="text/csv; charset=utf-8",
        headers={**SECURITY_HEADERS,
                 "Content-Disposition": f'attachment; filename="usage-{q.period}.csv"'},
    )


ROUTE_HANDLERS = [usage_page, usage_csv]
