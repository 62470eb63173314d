"""``litegate keys create|list|update|revoke``."""

from __future__ import annotations

import argparse
from datetime import datetime

from litegate.cli.common import actor, print_json, print_table, transaction
from litegate.services import keys as key_service
from litegate.services.schema import BudgetIn, ValidationFailed, escape_control, parse_expiry
from litegate.settings import Settings


def expires_arg(value: str) -> datetime:
    """``--expires``: :func:`~litegate.services.schema.parse_expiry`, its error named
    after the option."""
    try:
        return parse_expiry(value)
    except ValueError as exc:
        raise ValueError(f"--expires: {exc}") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="API keys")
    s = p.add_subparsers(dest="keys_command", required=True)
    c = s.add_parser("create", help="create a key; the secret is shown only now")
    c.add_argument("--name", required=True)
    c.add_argument("--routes", help="comma-separated routes the key may use (default: all)")
    c.add_argument("--limit", action="append", default=[], help='request limit, e.g. "10/minute" (repeatable)')
    c.add_argument("--token-limit", action="append", default=[], help='token quota, e.g. "100000/day"')
    c.add_argument("--expires", help="30d, 12h or an ISO timestamp")
    c.add_argument("--admin", action="store_true", help="may call model-control endpoints")
    _budget_args(c)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_create)
    ls = s.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    u = s.add_parser("update", help="change a key's scopes, own limits or expiry")
    u.add_argument("id", type=int)
    u.add_argument("--routes", help='comma-separated routes the key may use; "*" for all')
    u.add_argument("--limit", action="append", help='request limit (repeatable; replaces the '
                   'key\'s request limits; "none" removes them)')
    u.add_argument(
        "--token-limit", action="append", help='token quota (repeatable; replaces; "none")'
    )
    u.add_argument("--expires", help='30d, 12h, an ISO timestamp, or "never"')
    _budget_args(u, update=True)
    u.set_defaults(func=_update)
    r = s.add_parser("revoke", help="revoke a key by id")
    r.add_argument("id", type=int)
    r.set_defaults(func=_revoke)


def _budget_args(p: argparse.ArgumentParser, *, update: bool = False) -> None:
    p.add_argument("--budget", help="spend budget in USD per period, e.g. 10"
                   + ('; "none" removes it' if update else ""))
    p.add_argument("--budget-period", help="budget period: 30d (default), 7d, 12h, 90m")
    p.add_argument("--budget-alert", type=float,
                   help="log a warning once per period at this fraction, e.g. 0.8")


def _budget(args: argparse.Namespace) -> BudgetIn | None | key_service.Keep:
    if args.budget is None:
        if args.budget_period is not None or args.budget_alert is not None:
            raise ValidationFailed(["--budget-period/--budget-alert: also give --budget"])
        return key_service.KEEP
    if args.budget.strip().lower() == "none":
        return None
    try:
        max_usd = float(args.budget)
    except ValueError:
        raise ValidationFailed([f"--budget: expected USD, e.g. 10, got {args.budget!r}"]) from None
    return BudgetIn(max_usd=max_usd, period=args.budget_period or "30d",
                    alert_at=args.budget_alert)


async def _create(args: argparse.Namespace, settings: Settings) -> int:
    routes = [r.strip() for r in args.routes.split(",") if r.strip()] if args.routes else []
    expires = expires_arg(args.expires) if args.expires else None
    budget = _budget(args)
    async with transaction(settings) as session:
        key, secret = await key_service.create_key(
            session,
            name=args.name,
            actor=actor(),
            routes=routes,
            limits=args.limit,
            token_limits=args.token_limit,
            expires_at=expires,
            is_admin=args.admin,
            budget=None if budget is key_service.KEEP else budget,
        )
    if args.json:
        print_json({"id": key.id, "name": key.name, "key": secret})
    else:
        print(f"Created key {key.id} ({key.name}). Secret (shown only now):\n\n    {secret}\n")
    return 0


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        rows = [key_service.key_dict(k) for k in await key_service.list_keys(session)]
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            r["routes"] = ",".join(r["routes"]) or "*"
            r["state"] = "revoked" if r["revoked_at"] else "active"
            r["budget"] = _budget_text(r["budget"])
        print_table(rows, ["id", "name", "prefix", "routes", "state", "budget", "expires_at",
                           "last_used_at"])
    return 0


async def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        key = await key_service.revoke_key(session, args.id, actor=actor())
    print(f"revoked key {key.id} ({escape_control(key.name)})")
    return 0


def _rates(values: list[str] | None) -> list[str] | key_service.Keep:
    if values is None:
        return key_service.KEEP
    return [] if [v.strip().lower() for v in values] == ["none"] else values


async def _update(args: argparse.Namespace, settings: Settings) -> int:
    routes: list[str] | key_service.Keep = key_service.KEEP
    if args.routes is not None:
        names = [r.strip() for r in args.routes.split(",") if r.strip()]
        routes = [] if names == ["*"] else names
    expires: datetime | None | key_service.Keep = key_service.KEEP
    if args.expires is not None:
        expires = None if args.expires == "never" else expires_arg(args.expires)
    async with transaction(settings) as session:
        key = await key_service.update_key(
            session, args.id, actor=actor(), routes=routes, limits=_rates(args.limit),
            token_limits=_rates(args.token_limit), expires_at=expires, budget=_budget(args),
        )
        limits = await key_service.own_limits(session, key.id)
        row = key_service.key_dict(key)
    print(
        f"updated key {row['id']} ({escape_control(row['name'])}): routes {','.join(row['routes']) or '*'}; "
        f"limits {', '.join(limits['requests']) or 'none'}; "
        f"token limits {', '.join(limits['tokens']) or 'none'}; "
        f"expires {row['expires_at'] or 'never'}; budget {_budget_text(row['budget'])}"
    )
    return 0


def _budget_text(b: dict[str, object] | None) -> str:
    if b is None:
        return "none"
    alert = f", alert at {b['alert_at']:g}" if isinstance(b["alert_at"], float) else ""
    return f"${b['max_usd']:g} per {b['period']}{alert}"
