"""Admission: the limits one request must pass before it is served, for every protocol
(the ASGI limits middleware, gRPC) — the key's and the route's request limits, the key's
spend budget, and token quotas already used up."""

from __future__ import annotations

from dataclasses import dataclass

from litegate.policies.limiting import Check, Limiter
from litegate.policies.spend import Spend
from litegate.snapshot import KeySpec, RouteSpec


@dataclass(frozen=True, slots=True)
class Admitted:
    headers: list[tuple[bytes, bytes]]
    """``X-RateLimit-*`` of the tightest request limit."""
    token_checks: list[Check]
    """The token quotas to charge with the request's usage afterwards."""


async def admit(
    limiter: Limiter, spend: Spend | None, version: int, key: KeySpec,
    route_name: str | None, route: RouteSpec | None,
) -> Admitted:
    """Count the request, or raise 429 (rate, budget, token quota) / 503 (fail-closed)."""
    checks = limiter.checks("req", version, key, route_name, route)
    headers = await limiter.hit(checks) if checks else []
    if spend is not None and key.budget is not None:
        await spend.check(key)  # before any upstream call
    token_checks = limiter.checks("tok", version, key, route_name, route)
    if token_checks:
        await limiter.check_tokens(token_checks)
    return Admitted(headers, token_checks)


async def count_refused(limiter: Limiter | None, version: int, key: KeySpec | None) -> None:
    """Count a request whose body is refused (malformed: 400; oversize: 413) before it
    reaches admission against the key's own limits; raise 429 once they are spent. The
    one rule for every place that reads and refuses a body (route resolution, the
    aggregate endpoint), so a key past its limit cannot keep the gateway reading and
    parsing bodies for free."""
    if limiter is None or key is None:
        return
    checks = limiter.checks("req", version, key, None, None)
    if checks:
        await limiter.hit(checks)
