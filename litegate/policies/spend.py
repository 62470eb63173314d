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
  completion tokens and cost per UTC day, kept ``RETENTION_DAYS``. ``Spend.report``
  reads them back for the keys, routes and variants of the current configuration: the
  one query behind ``litegate usage`` and the console's Usage page.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, TextIO

import structlog
from limits.aio.storage import RedisClusterStorage, RedisStorage, Storage
from limits.storage import Storage as SyncStorage

from litegate.errors import BudgetExceeded, ServiceUnavailable
from litegate.policies.limit_storage import LocalStorage
from litegate.policies.redis_window import INCR_MANY, StorageScripts
from litegate.services.schema import parse_period
from litegate.snapshot import KeySpec, Snapshot, VariantSpec

log = structlog.get_logger("litegate.spend")

DAY = 86_400
RETENTION_DAYS = 400
FIELDS = ("requests", "prompt_tokens", "completion_tokens", "cost_nano")
NANO = 1_000_000_000
MAX_COUNTER_NAMES = 10_000
"""Usage counter names kept ready-made (one entry per day, key, route and variant in use)."""
READ_BATCH = 64
"""Counters read concurrently by a report from a storage that cannot pipeline."""
MGET_BATCH = 2_000
"""Counters read by one Redis MGET in a report."""


def since_days(value: str) -> int:
    """A report's ``since`` (``30d``, ``12h``...) as whole UTC days (today included;
    ``12h`` is today), at most the counters' retention."""
    days = max(parse_period(value) // DAY, 1)
    if days > RETENTION_DAYS:
        raise ValueError(f"usage is kept {RETENTION_DAYS} days; ask for {RETENTION_DAYS}d or less")
    return days


def cost_nano(variant: VariantSpec | None, prompt: int, completion: int) -> int:
    if variant is None:
        return 0
    return prompt * variant.input_nano_per_token + completion * variant.output_nano_per_token


@dataclass(slots=True)
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nano: int = 0

    def add(self, other: Totals) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_nano += other.cost_nano

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": self.cost_nano / NANO,
        }


@dataclass(slots=True)
class UsageRow:
    """One key's usage of one route variant over the report's days."""

    key: str
    route: str
    variant: str
    totals: Totals = field(default_factory=Totals)

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "route": self.route, "variant": self.variant,
                **self.totals.as_dict()}


@dataclass(slots=True)
class KeyUsage:
    """One key's usage per UTC day (all its routes and variants), oldest day first."""

    key_id: int
    key: str
    days: list[Totals]
    total: Totals = field(default_factory=Totals)


@dataclass(slots=True)
class BudgetState:
    key_id: int
    key: str
    max_nano: int
    period: str
    spent_nano: int
    alert_at: float | None

    @property
    def alert_nano(self) -> int | None:
        return None if self.alert_at is None else int(self.max_nano * self.alert_at)

    @property
    def alert(self) -> bool:
        return self.alert_nano is not None and self.spent_nano >= self.alert_nano

    @property
    def exceeded(self) -> bool:
        return self.spent_nano >= self.max_nano

    def as_dict(self) -> dict[str, object]:
        return {
            "key": self.key, "max_usd": self.max_nano / NANO, "period": self.period,
            "spent_usd": self.spent_nano / NANO, "alert_at": self.alert_at,
            "alert": self.alert, "exceeded": self.exceeded,
        }


@dataclass(slots=True)
class UsageReport:
    """What ``litegate usage``, the console's Usage page and its API show."""

    days: list[int]
    """UTC day numbers (days since the epoch), oldest first."""
    rows: list[UsageRow]
    """Per key, route and variant; rows without traffic omitted."""
    keys: list[KeyUsage]
    """Per key and day; keys without traffic omitted."""
    budgets: list[BudgetState]

    def as_dict(self) -> dict[str, object]:
        dates = [day_date(d) for d in self.days]
        return {
            "days": dates,
            "usage": [r.as_dict() for r in self.rows],
            "daily": [{"key": k.key, "days": [{"date": d, **t.as_dict()}
                                              for d, t in zip(dates, k.days, strict=True)]}
                      for k in self.keys],
            "budgets": [b.as_dict() for b in self.budgets],
        }

    def write_csv(self, f: TextIO) -> None:
        """The rows as CSV, ``CSV_COLUMNS``. A text cell a spreadsheet would read as a
        formula (a key name is free text) is quoted with a leading ``'``."""
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows({k: _csv_cell(v) for k, v in r.as_dict().items()} for r in self.rows)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


CSV_COLUMNS = ["key", "route", "variant", "requests", "prompt_tokens", "completion_tokens",
               "total_tokens", "cost_usd"]


def day_date(day: int) -> str:
    """A UTC day number as ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY))


MAX_BATCH = 256
"""The most requests whose usage one script call writes (a busier loop step makes more
calls)."""
MAX_WRITES = 1024
"""Usage writes waiting for Redis at once; past it a batch is dropped, with a warning
(a stalled Redis must not hold the usage of every request that finishes meanwhile)."""


@dataclass(frozen=True, slots=True)
class _Usage:
    """One finished request's counters, waiting in a batch."""

    key: KeySpec
    route: str
    incrs: list[tuple[str, int, int]]
    cost: int
    budgeted: bool


class Spend:
    """Records usage after a request and refuses a key whose budget is spent."""

    def __init__(self, storage: Storage | SyncStorage, *, fail_open: bool = True,
                 scripts: StorageScripts | None = None) -> None:
        """``scripts``: the limiter's, to share its Redis connection."""
        if not isinstance(storage, Storage):
            raise TypeError("spend counters need an async limits storage (async+…://)")
        self.storage = storage
        self.fail_open = fail_open
        # In-process counters never wait: awaiting them one by one skips gather's tasks.
        self.local = isinstance(storage, LocalStorage)
        """Storage down: allow budgeted keys (True) or answer 503 (False), like the limiter."""
        self.scripts = scripts or StorageScripts.for_storage(storage)
        self._batch: list[_Usage] = []
        """Redis: the usage of the requests that finished in this loop step, written in
        one script call at its end (``_flush``)."""
        self._batch_written: asyncio.Future[None] | None = None
        self._writing: set[asyncio.Task[None]] = set()
        self.lost = 0
        """Requests whose usage could not be written since the last write that could (a
        warning when the first is lost, the count when writing works again)."""
        self._counter_names: dict[tuple[int, int, str, str], tuple[str, ...]] = {}
        """(day, key id, route, variant) -> its four usage counters' names, built once a day."""

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

    def _usage_incrs(
        self, key: KeySpec, route: str, variant: VariantSpec | None, prompt_tokens: int,
        completion_tokens: int, now: float,
    ) -> tuple[list[tuple[str, int, int]], int, bool]:
        """The counters one request's usage adds to, its cost, and whether it is budgeted."""
        cost = cost_nano(variant, prompt_tokens, completion_tokens)
        ident = (int(now // DAY), key.id, route, variant.name if variant else "-")
        names = self._counter_names.get(ident)
        if names is None:
            if len(self._counter_names) >= MAX_COUNTER_NAMES:
                self._counter_names.clear()
            base = "litegate/usage/{}/{}/{}/{}".format(*ident)
            names = self._counter_names[ident] = tuple(f"{base}/{f}" for f in FIELDS)
        expiry = RETENTION_DAYS * DAY
        amounts = (1, prompt_tokens, completion_tokens, cost)
        incrs = [(name, expiry, n) for name, n in zip(names, amounts, strict=True) if n]
        counter = self._budget_key(key, now)  # None without a budget
        budgeted = counter is not None and key.budget is not None and cost > 0
        if budgeted and counter is not None and key.budget is not None:
            incrs.append((counter, key.budget.period_s, cost))
        return incrs, cost, budgeted

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
        """Count one request's usage; returns its cost in nano-USD once it is written."""
        now = time.time() if now is None else now
        if self.scripts is not None:
            incrs, cost, budgeted = self._usage_incrs(key, route, variant, prompt_tokens,
                                                      completion_tokens, now)
            await asyncio.shield(self._enqueue(_Usage(key, route, incrs, cost, budgeted)))
            return cost
        counted = self.record_nowait(key, route, variant, prompt_tokens, completion_tokens,
                                     now=now)
        if counted is not None:
            return counted
        incrs, cost, budgeted = self._usage_incrs(key, route, variant, prompt_tokens,
                                                  completion_tokens, now)
        try:
            totals = await self._incr_many(incrs)
            if budgeted:
                self._alert(key, totals[-1], cost)
        except Exception as exc:  # usage accounting never fails the response
            log.warning("spend_not_recorded", error=str(exc), key_id=key.id, route=route,
                        cost_nano=cost)
        return cost

    def record_nowait(
        self, key: KeySpec, route: str, variant: VariantSpec | None, prompt_tokens: int,
        completion_tokens: int, *, now: float | None = None,
    ) -> int | None:
        """``record`` with no coroutine and no task to await (the caller's
        ``asyncio.shield`` cost ~8 µs a request): in-process counters are counted at
        once, Redis ones go into this loop step's batch. None when the storage needs an
        await (a Redis cluster): then call ``record``."""
        storage = self.storage
        if self.scripts is None and not isinstance(storage, LocalStorage):
            return None
        incrs, cost, budgeted = self._usage_incrs(
            key, route, variant, prompt_tokens, completion_tokens,
            time.time() if now is None else now)
        if not isinstance(storage, LocalStorage):
            self._enqueue(_Usage(key, route, incrs, cost, budgeted))
            return cost
        try:
            totals = [storage.incr_now(k, e, n) for k, e, n in incrs]
            if budgeted:
                self._alert(key, totals[-1], cost)
        except Exception as exc:  # usage accounting never fails the response
            log.warning("spend_not_recorded", error=str(exc), key_id=key.id, route=route,
                        cost_nano=cost)
        return cost

    def _enqueue(self, usage: _Usage) -> asyncio.Future[None]:
        """Add ``usage`` to this loop step's batch; the future is done once it is written
        (or failed: that is logged, never raised)."""
        written = self._batch_written
        if written is None:
            loop = asyncio.get_running_loop()
            written = self._batch_written = loop.create_future()
            loop.call_soon(self._flush, written)
        self._batch.append(usage)
        if len(self._batch) >= MAX_BATCH:
            self._flush(written)
        return written

    def _flush(self, written: asyncio.Future[None]) -> None:
        if written is not self._batch_written:
            return  # flushed early (full)
        batch, self._batch, self._batch_written = self._batch, [], None
        if len(self._writing) >= MAX_WRITES:
            self._lose(batch, f"{MAX_WRITES} usage writes are already waiting for Redis")
            written.set_result(None)
            return
        task = written.get_loop().create_task(self._write(batch, written))
        self._writing.add(task)  # a reference until it ends
        task.add_done_callback(self._writing.discard)

    async def _write(self, batch: list[_Usage], written: asyncio.Future[None]) -> None:
        try:
            totals = await self._incr_many([i for u in batch for i in u.incrs])
        except Exception as exc:  # usage accounting never fails a response
            self._lose(batch, str(exc))
        else:
            if self.lost:  # a warning: it says how much usage the outage lost
                log.warning("spend_recorded_again", lost_requests=self.lost)
                self.lost = 0
            end = 0
            for usage in batch:
                end += len(usage.incrs)
                if usage.budgeted:  # its budget counter is its last
                    self._alert(usage.key, totals[end - 1], usage.cost)
        finally:
            if not written.done():
                written.set_result(None)

    def _lose(self, batch: list[_Usage], error: str) -> None:
        if not self.lost:  # one line per outage, not one per loop step
            log.warning("spend_not_recorded", error=error, requests=len(batch),
                        cost_nano=sum(u.cost for u in batch))
        self.lost += len(batch)

    async def drain(self) -> None:
        """Wait until every usage recorded so far is written (at shutdown)."""
        if self._batch_written is not None:
            self._flush(self._batch_written)
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    async def _incr_many(self, incrs: list[tuple[str, int, int]]) -> list[int]:
        """Add each ``(counter, expiry s, amount)``; the new totals. On Redis one script
        call (limits' ``incr`` is a round trip per counter, ~100 µs of CPU each); a
        cluster cannot run one script across slots and keeps one call per counter. (The
        in-process storage never gets here: ``record_nowait`` counts it.)"""
        scripts = self.scripts
        if scripts is not None:
            keys = [scripts.key(k) for k, _, _ in incrs]
            args = [v for _, e, n in incrs for v in (e, n)]
            return [int(v) for v in await scripts.run(INCR_MANY, keys, args)]
        storage = self.storage
        return [int(v) for v in await asyncio.gather(*(storage.incr(k, e, n) for k, e, n in incrs))]

    def _alert(self, key: KeySpec, total: int, cost: int) -> None:
        b = key.budget
        assert b is not None
        if b.alert_at is not None:
            threshold = int(b.max_nano * b.alert_at)
            # Exactly one request (on any replica) moves the shared counter across it.
            if total - cost < threshold <= total:
                log.warning("budget_alert", key=key.name, key_id=key.id, period=b.period,
                            spent_usd=total / NANO, budget_usd=b.max_nano / NANO,
                            alert_at=b.alert_at)

    async def report(
        self,
        snapshot: Snapshot,
        *,
        days: int,
        key_ids: Collection[int] | None = None,
        now: float | None = None,
    ) -> UsageReport:
        """Usage over the last ``days`` UTC days (today included) and each budget's spend
        in its current period, for the keys (all, or ``key_ids``) and routes of
        ``snapshot``. ``days`` is 1 to ``RETENTION_DAYS`` (ValueError otherwise)."""
        if not 1 <= days <= RETENTION_DAYS:
            raise ValueError(f"days must be from 1 to {RETENTION_DAYS}")
        now = time.time() if now is None else now
        last = int(now // DAY)
        day_numbers = list(range(last - days + 1, last + 1))
        keys = sorted((k for k in snapshot.keys.values() if key_ids is None or k.id in key_ids),
                      key=lambda k: (k.name, k.id))
        routes = sorted(snapshot.routes.values(), key=lambda r: r.name)
        report = UsageReport(day_numbers, [], [], [])
        for k in keys:
            per_day = KeyUsage(k.id, k.name, [Totals() for _ in day_numbers])
            for route in routes:
                if not k.allows(route.name):
                    continue
                for v in route.variants:
                    names = [f"litegate/usage/{d}/{k.id}/{route.name}/{v.name}/{f}"
                             for d in day_numbers for f in FIELDS]
                    values = await self._get_many(names)
                    row = UsageRow(k.name, route.name, v.name)
                    for i, day in enumerate(per_day.days):
                        t = Totals(*values[i * len(FIELDS):(i + 1) * len(FIELDS)])
                        day.add(t)
                        row.totals.add(t)
                    if row.totals.requests:
                        report.rows.append(row)
                        per_day.total.add(row.totals)
            if per_day.total.requests:
                report.keys.append(per_day)
            if k.budget is not None:
                report.budgets.append(BudgetState(
                    k.id, k.name, k.budget.max_nano, k.budget.period,
                    await self.spent_nano(k, now=now), k.budget.alert_at))
        return report

    async def _get_many(self, names: list[str]) -> list[int]:
        values: list[int] = []
        storage = self.storage
        if isinstance(storage, RedisStorage) and not isinstance(storage, RedisClusterStorage):
            # One MGET per slice instead of one round trip per counter (a 30-day report of
            # 100 keys took 8 s counter by counter; bench/RESULTS.md). A cluster cannot
            # MGET across slots: it reads counter by counter below.
            bridge: Any = storage.bridge  # redis-py, coredis or valkey: each has these two
            conn = bridge.get_connection(readonly=True)
            for i in range(0, len(names), MGET_BATCH):
                keys = [bridge.prefixed_key(n) for n in names[i:i + MGET_BATCH]]
                values.extend(int(v or 0) for v in await conn.mget(keys))
            return values
        for i in range(0, len(names), READ_BATCH):
            batch = names[i:i + READ_BATCH]
            if self.local:
                values.extend([int(await storage.get(n)) for n in batch])
            else:
                # In slices, so a long report never opens hundreds of connections at once.
                values.extend(int(v) for v in
                              await asyncio.gather(*(storage.get(n) for n in batch)))
        return values


async def read_report(spend: Spend | None, snapshot: Snapshot, *, days: int,
                      key_ids: Collection[int] | None = None) -> UsageReport:
    """:meth:`Spend.report` for the console and its API: a 503 (:class:`ServiceUnavailable`)
    when there are no counters here or they cannot be read (Redis unreachable, timeouts),
    saying what to fix."""
    if spend is None:
        raise ServiceUnavailable("usage is counted by the gateway; this console has none")
    try:
        return await spend.report(snapshot, days=days, key_ids=key_ids)
    except Exception as exc:  # the storage's own errors (connection refused, timeouts)
        where = "" if spend.local else (
            "; check that the gateway's Redis (LITEGATE_REDIS) is reachable")
        raise ServiceUnavailable(f"usage counters unavailable: {exc}{where}") from exc
