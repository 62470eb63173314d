"""Spend per key: cost from the variant's prices, usage counters, budgets per period.

Everything is an integer counter in the limiter's ``limits`` storage, so it is exact
across replicas when that storage is Redis (one ``INCRBY`` per counter, as for token
quotas) and per process in memory. Money is counted in nano-USD (1e-9 USD): prices are
turned into nano-USD per token when the snapshot is built, so a cost is an exact
integer product.

Counters (every name from configuration, never from client text):

* ``litegate/spend/{key_id}/{period_s}/{window}``: the key's spend in the current fixed
  window of its budget period (windows are aligned to the Unix epoch), expiring with it.
* ``litegate/usage/{day}/{key_id}/{route}/{variant}/{field}``: requests, prompt and
  completion tokens and cost per UTC day, kept ``RETENTION_DAYS``. ``litegate usage``
  reads them back for the keys, routes and variants of the current configuration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass

import structlog
from limits.aio.storage import Storage
from limits.storage import Storage as SyncStorage

from litegate.errors import BudgetExceeded, ServiceUnavailable
from litegate.policies.limit_storage import LocalStorage
from litegate.snapshot import KeySpec, Snapshot, VariantSpec

log = structlog.get_logger("litegate.spend")

DAY = 86_400
RETENTION_DAYS = 400
FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_nano")
NANO = 1_000_000_000


def cost_nano(variant: VariantSpec | None, prompt: int, completion: int) -> int:
    if variant is None:
        return 0
    return prompt * variant.input_nano_per_token + completion * variant.output_nano_per_token


@dataclass(slots=True)
class UsageRow:
    key: str
    route: str
    variant: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nano: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "key": self.key, "route": self.route, "variant": self.variant,
            "requests": self.requests, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": self.cost_nano / NANO,
        }


class Spend:
    """Records usage after a request and refuses a key whose budget is spent."""

    def __init__(self, storage: Storage | SyncStorage, *, fail_open: bool = True) -> None:
        if not isinstance(storage, Storage):
            raise TypeError("spend counters need an async limits storage (async+…://)")
        self.storage = storage
        self.fail_open = fail_open
        # In-process counters never wait: awaiting them one by one skips gather's tasks.
        self.local = isinstance(storage, LocalStorage)
        """Storage down: allow budgeted keys (True) or answer 503 (False), like the limiter."""

    @staticmethod
    def _budget_key(key: KeySpec, now: float) -> str | None:
        b = key.budget
        if b is None:
            return None
        return f"litegate/spend/{key.id}/{b.period_s}/{int(now // b.period_s)}"

    async def spent_nano(self, key: KeySpec, *, now: float | None = None) -> int:
        """The key's spend in the current budget window (0 without a budget)."""
        counter = self._budget_key(key, time.time() if now is None else now)
        return 0 if counter is None else int(await self.storage.get(counter))

    async def check(self, key: KeySpec, *, now: float | None = None) -> None:
        """Raise ``BudgetExceeded`` (429, ``budget_exceeded``) once the budget is spent."""
        b = key.budget
        if b is None:
            return
        now = time.time() if now is None else now
        try:
            spent = await self.spent_nano(key, now=now)
        except Exception as exc:  # the storage's own errors (Redis unreachable, timeouts)
            log.warning("spend_storage_unavailable", error=str(exc), fail_open=self.fail_open)
            if self.fail_open:
                return
            raise ServiceUnavailable("Budget storage unavailable",
                                     headers={"Retry-After": "1"}) from exc
        if spent >= b.max_nano:
            window_end = (int(now // b.period_s) + 1) * b.period_s
            raise BudgetExceeded(
                f"budget of ${b.max_nano / NANO:g} per {b.period} reached for this key "
                f"(spent ${spent / NANO:.6f})",
                headers={"Retry-After": str(max(int(window_end - now), 1))},
            )

    async def record(
        self,
        key: KeySpec,
        route: str,
        variant: VariantSpec | None,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        now: float | None = None,
    ) -> int:
        """Count one request's usage; returns its cost in nano-USD."""
        now = time.time() if now is None else now
        cost = cost_nano(variant, prompt_tokens, completion_tokens)
        day = int(now // DAY)
        base = f"litegate/usage/{day}/{key.id}/{route}/{variant.name if variant else '-'}"
        expiry = RETENTION_DAYS * DAY
        amounts = (1, prompt_tokens, completion_tokens, cost)
        ops: list[Awaitable[object]] = [self.storage.incr(f"{base}/{f}", expiry, n)
               for f, n in zip(FIELDS, amounts, strict=True) if n]
        counter = self._budget_key(key, now)
        if counter is not None and cost:
            ops.append(self._add_spend(key, counter, cost))
        try:
            if self.local:
                for op in ops:
                    await op
            else:
                await asyncio.gather(*ops)
        except Exception as exc:  # usage accounting never fails the response
            log.warning("spend_not_recorded", error=str(exc), key_id=key.id, route=route,
                        cost_nano=cost)
        return cost

    async def _add_spend(self, key: KeySpec, counter: str, cost: int) -> None:
        b = key.budget
        assert b is not None
        total = int(await self.storage.incr(counter, b.period_s, cost))
        if b.alert_at is not None:
            threshold = int(b.max_nano * b.alert_at)
            # Exactly one request (on any replica) moves the shared counter across it.
            if total - cost < threshold <= total:
                log.warning("budget_alert", key=key.name, key_id=key.id, period=b.period,
                            spent_usd=total / NANO, budget_usd=b.max_nano / NANO,
                            alert_at=b.alert_at)

    async def usage(
        self, snapshot: Snapshot, *, since_s: int, now: float | None = None
    ) -> list[UsageRow]:
        """Usage per key name, route and variant over the last ``since_s`` seconds (whole
        UTC days), for the keys and routes of ``snapshot``; rows without traffic omitted."""
        now = time.time() if now is None else now
        last = int(now // DAY)
        days = range(last - max(since_s // DAY, 1) + 1, last + 1)
        keys = sorted(snapshot.keys.values(), key=lambda k: (k.name, k.id))
        rows: list[UsageRow] = []
        for k in keys:
            for route in sorted(snapshot.routes.values(), key=lambda r: r.name):
                if not k.allows(route.name):
                    continue
                for v in route.variants:
                    row = UsageRow(k.name, route.name, v.name)
                    names = [f"litegate/usage/{d}/{k.id}/{route.name}/{v.name}/{f}"
                             for d in days for f in FIELDS]
                    values = await asyncio.gather(*(self.storage.get(n) for n in names))
                    for i, value in enumerate(values):
                        field = FIELDS[i % len(FIELDS)]
                        setattr(row, field, getattr(row, field) + int(value))
                    if row.requests:
                        rows.append(row)
        return rows
