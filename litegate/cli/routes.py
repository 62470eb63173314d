"""``litegate routes list|set|delete`` and ``litegate upstreams list|set|delete``."""

from __future__ import annotations

import argparse

from litegate.cli.common import actor, print_json, print_table, transaction
from litegate.services import routing
from litegate.services.schema import AdaptiveIn, CacheIn, RouteIn, UpstreamIn, VariantIn
from litegate.settings import Settings


def parse_variant(text: str) -> VariantIn:
    """``upstream=mock,model=small,weight=90[,name=a]``."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--variant: expected upstream=U,model=M[,weight=W][,name=N], got {text!r}")
        fields[name.strip()] = value.strip()
    unknown = set(fields) - {"upstream", "model", "weight", "name"}
    if unknown or "upstream" not in fields or "model" not in fields:
        raise ValueError(f"--variant: expected upstream=U,model=M[,weight=W][,name=N], got {text!r}")
    try:
        weight = int(fields.get("weight", "1"))
    except ValueError:
        raise ValueError(f"--variant: weight must be an integer in {text!r}") from None
    return VariantIn(upstream=fields["upstream"], model=fields["model"], weight=weight, name=fields.get("name"))


def parse_adaptive(text: str) -> AdaptiveIn:
    """``metric=errors[,min_share=0.05][,cooldown_s=30][,min_samples=20]``."""
    usage = ("expected metric=errors|latency|feedback[,min_share=F][,cooldown_s=S]"
             f"[,min_samples=N], got {text!r}")
    fields: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(usage)
        fields[name.strip()] = value.strip()
    if set(fields) - {"metric", "min_share", "cooldown_s", "min_samples"} or "metric" not in fields:
        raise argparse.ArgumentTypeError(usage)
    try:
        default = AdaptiveIn()
        return AdaptiveIn(
            metric=fields["metric"],
            min_share=float(fields.get("min_share", default.min_share)),
            cooldown_s=float(fields.get("cooldown_s", default.cooldown_s)),
            min_samples=int(fields.get("min_samples", default.min_samples)),
        )
    except ValueError:
        raise argparse.ArgumentTypeError(usage) from None


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("routes", help="routes (what clients name in 'model')")
    s = p.add_subparsers(dest="routes_command", required=True)
    ls = s.add_parser("list", help="list routes")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    st = s.add_parser("set", help="create or replace a route")
    st.add_argument("name")
    st.add_argument("--variant", action="append", required=True, type=parse_variant,
                    help="upstream=U,model=M[,weight=W][,name=N] (repeatable)")
    st.add_argument("--sticky", default="key", help="key | none | header:<Header-Name>")
    st.add_argument("--cache-ttl", type=float, help="cache successful answers this many seconds")
    st.add_argument("--limit", action="append", default=[], help='per-key limit on this route, e.g. "100/minute"')
    st.add_argument("--token-limit", action="append", default=[])
    st.add_argument("--fallback", help="route to try when this one's upstream fails")
    st.add_argument("--adaptive", type=parse_adaptive,
                    help="shift the shares toward the best variant: metric=errors|latency|"
                         "feedback[,min_share=0.05][,cooldown_s=30][,min_samples=20]")
    st.set_defaults(func=_set)
    d = s.add_parser("delete", help="delete a route")
    d.add_argument("name")
    d.set_defaults(func=_delete)

    up = sub.add_parser("upstreams", help="upstream providers")
    us = up.add_subparsers(dest="upstreams_command", required=True)
    uls = us.add_parser("list")
    uls.add_argument("--json", action="store_true")
    uls.set_defaults(func=_list_upstreams)
    ust = us.add_parser("set", help="create or replace an upstream")
    ust.add_argument("name")
    ust.add_argument("--kind", default="openai", choices=["openai", "v2", "onnx"])
    ust.add_argument("--base-url", default="")
    ust.add_argument("--api-key-env")
    ust.add_argument("--timeout", type=float, default=30.0)
    ust.add_argument("--max-retries", type=int, default=1)
    ust.set_defaults(func=_set_upstream)
    ud = us.add_parser("delete")
    ud.add_argument("name")
    ud.set_defaults(func=_delete_upstream)


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        rows = [
            routing.route_dict(r, await routing.route_quotas(session, r.id))
            for r in await routing.list_routes(session)
        ]
    if args.json:
        print_json(rows)
        return 0
    table = [
        {
            "name": r["name"],
            "variants": " ".join(f"{v['upstream']}/{v['model']}:{v['weight']}" for v in r["variants"]),
            "sticky": r["sticky"],
            "cache_ttl_s": (r.get("cache") or {}).get("ttl_s"),
            "limits": ";".join(r.get("limits", [])),
        }
        for r in rows
    ]
    print_table(table, ["name", "variants", "sticky", "cache_ttl_s", "limits"])
    return 0


async def _set(args: argparse.Namespace, settings: Settings) -> int:
    data = RouteIn(
        name=args.name,
        variants=args.variant,
        sticky=args.sticky,
        cache=CacheIn(ttl_s=args.cache_ttl) if args.cache_ttl else None,
        limits=args.limit,
        token_limits=args.token_limit,
        fallback=args.fallback,
        adaptive=args.adaptive,
    )
    async with transaction(settings) as session:
        await routing.upsert_route(session, data, actor=actor())
    print(f"route {args.name} saved")
    return 0


async def _delete(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        await routing.delete_route(session, args.name, actor=actor())
    print(f"route {args.name} deleted")
    return 0


async def _list_upstreams(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        rows = [routing.upstream_dict(u) for u in await routing.list_upstreams(session)]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["name", "kind", "base_url", "api_key_env", "timeout_s"])
    return 0


async def _set_upstream(args: argparse.Namespace, settings: Settings) -> int:
    data = UpstreamIn(
        name=args.name, kind=args.kind, base_url=args.base_url, api_key_env=args.api_key_env,
        timeout_s=args.timeout, max_retries=args.max_retries,
    )
    async with transaction(settings) as session:
        await routing.upsert_upstream(session, data, actor=actor())
    print(f"upstream {args.name} saved")
    return 0


async def _delete_upstream(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        await routing.delete_upstream(session, args.name, actor=actor())
    print(f"upstream {args.name} deleted")
    return 0
