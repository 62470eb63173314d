"""``litegate routes list|set|delete`` and ``litegate upstreams list|set|delete``.

``set`` creates the entry, or changes only the settings given on the command line and
keeps every other one as stored (``routing.update_route`` / ``update_upstream``); ``none``
(``''`` for a description) clears a setting. It prints what changed."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from litegate.cli.common import actor, print_json, print_table, transaction
from litegate.errors import NotFound
from litegate.services import routing
from litegate.services.schema import (
    AdaptiveIn,
    CacheIn,
    PriceIn,
    RouteIn,
    SemanticCacheIn,
    UpstreamIn,
    ValidationFailed,
    VariantIn,
)
from litegate.settings import Settings

VARIANT_USAGE = ("expected upstream=U,model=M[,weight=W][,name=N]"
                 "[,input_per_1m=P][,output_per_1m=P | ,price=none]")


@dataclass(frozen=True)
class VariantArg:
    """One ``--variant``: the variant, and whether it gave a price (or ``price=none``); a
    variant without one keeps the price of the stored variant of the same name."""

    variant: VariantIn
    price_given: bool


def _fields(text: str, usage: str, *, known: set[str], required: set[str]) -> dict[str, str]:
    """``name=value,name=value`` as a dict; ``usage`` is the error for anything else, an
    unknown name or a missing required one."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(usage)
        fields[name.strip()] = value.strip()
    if set(fields) - known or required - set(fields):
        raise argparse.ArgumentTypeError(usage)
    return fields


def parse_variant(text: str) -> VariantArg:
    """``upstream=mock,model=small,weight=90[,name=a][,input_per_1m=0.15,output_per_1m=0.6]``;
    ``price=none`` removes the variant's price."""
    usage = f"{VARIANT_USAGE}, got {text!r}"
    fields = _fields(text, usage, known={"upstream", "model", "weight", "name", "input_per_1m",
                                         "output_per_1m", "price"},
                     required={"upstream", "model"})
    if "price" in fields and (fields["price"].lower() != "none"
                              or {"input_per_1m", "output_per_1m"} & set(fields)):
        raise argparse.ArgumentTypeError(
            f"price=none removes the price; give it alone, got {text!r}")
    try:
        weight = int(fields.get("weight", "1"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"weight must be an integer in {text!r}") from None
    price = None
    if {"input_per_1m", "output_per_1m"} & set(fields):
        try:
            price = PriceIn(input_per_1m=float(fields.get("input_per_1m", "0")),
                            output_per_1m=float(fields.get("output_per_1m", "0")))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"prices are USD per 1M tokens, e.g. 0.15, in {text!r}") from None
    variant = VariantIn(upstream=fields["upstream"], model=fields["model"], weight=weight,
                        name=fields.get("name"), price=price)
    return VariantArg(variant, price_given=price is not None or "price" in fields)


def _none(text: str) -> bool:
    return text.strip().lower() == "none"


def parse_cache_ttl(text: str) -> CacheIn | None:
    """Seconds, or ``none`` (no cache)."""
    if _none(text):
        return None
    try:
        return CacheIn(ttl_s=float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or none, got {text!r}") from None


def parse_semantic_cache(text: str) -> SemanticCacheIn | None:
    """``embedding_model=M[,threshold=0.9][,max_entries=N][,ttl_s=S][,shared_across_keys=true]``
    or ``none``."""
    if _none(text):
        return None
    usage = ("expected embedding_model=M[,threshold=F][,max_entries=N][,ttl_s=S]"
             f"[,shared_across_keys=true|false] or none, got {text!r}")
    fields = _fields(text, usage, known={"embedding_model", "threshold", "max_entries", "ttl_s",
                                         "shared_across_keys"},
                     required={"embedding_model"})
    shared = fields.get("shared_across_keys", "false").lower()
    if shared not in ("true", "false"):
        raise argparse.ArgumentTypeError(usage)
    default = SemanticCacheIn(embedding_model="")
    try:
        return SemanticCacheIn(
            embedding_model=fields["embedding_model"],
            threshold=float(fields.get("threshold", default.threshold)),
            max_entries=int(fields.get("max_entries", default.max_entries)),
            ttl_s=float(fields.get("ttl_s", default.ttl_s)),
            shared_across_keys=shared == "true",
        )
    except ValueError:
        raise argparse.ArgumentTypeError(usage) from None


def parse_adaptive(text: str) -> AdaptiveIn | None:
    """``metric=errors[,min_share=0.05][,cooldown_s=30][,min_samples=20]``, or ``none``
    (fixed weights)."""
    if _none(text):
        return None
    usage = ("expected metric=errors|latency|feedback[,min_share=F][,cooldown_s=S]"
             f"[,min_samples=N], got {text!r}")
    fields = _fields(text, usage, known={"metric", "min_share", "cooldown_s", "min_samples"},
                     required={"metric"})
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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("routes", help="routes (what clients name in 'model')")
    s = p.add_subparsers(dest="routes_command", required=True)
    ls = s.add_parser("list", help="list routes")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    st = s.add_parser(
        "set", help="create a route, or change the given settings of an existing one "
        "(every setting not given is kept)")
    st.add_argument("name")
    keep = argparse.SUPPRESS  # not given: the stored setting is kept (a new route: the default)
    st.add_argument("--variant", action="append", default=keep, type=parse_variant,
                    help="upstream=U,model=M[,weight=W][,name=N][,input_per_1m=P]"
                         "[,output_per_1m=P|,price=none] (repeatable; replaces the variant "
                         "list; a variant given without a price keeps its stored one)")
    st.add_argument("--sticky", default=keep, help="key | none | header:<Header-Name>")
    st.add_argument("--cache-ttl", type=parse_cache_ttl, default=keep,
                    help='cache successful answers this many seconds; "none" turns it off')
    st.add_argument("--limit", action="append", default=keep,
                    help='per-key limit on this route, e.g. "100/minute" (repeatable; replaces '
                         'the route\'s request limits; "none" removes them)')
    st.add_argument("--token-limit", action="append", default=keep,
                    help='per-key token limit (repeatable; replaces; "none")')
    st.add_argument("--fallback", default=keep,
                    help='route to try when this one\'s upstream fails; "none"')
    st.add_argument("--shadow", default=keep,
                    help='variant that gets a mirrored copy of each request; "none"')
    st.add_argument("--description", default=keep, help="free text; '' clears it")
    st.add_argument("--adaptive", type=parse_adaptive, default=keep,
                    help="shift the shares toward the best variant: metric=errors|latency|"
                         'feedback[,min_share=0.05][,cooldown_s=30][,min_samples=20]; "none"')
    st.add_argument("--semantic-cache", type=parse_semantic_cache, default=keep,
                    help="embedding_model=M[,threshold=0.9][,max_entries=10000][,ttl_s=3600]"
                         '[,shared_across_keys=true]; "none"')
    st.set_defaults(func=_set)
    d = s.add_parser("delete", help="delete a route")
    d.add_argument("name")
    d.set_defaults(func=_delete)

    up = sub.add_parser("upstreams", help="upstream providers")
    us = up.add_subparsers(dest="upstreams_command", required=True)
    uls = us.add_parser("list")
    uls.add_argument("--json", action="store_true")
    uls.set_defaults(func=_list_upstreams)
    ust = us.add_parser(
        "set", help="create an upstream, or change the given settings of an existing one "
        "(every setting not given is kept)")
    ust.add_argument("name")
    ust.add_argument("--kind", choices=["openai", "v2", "onnx"], default=keep)
    ust.add_argument("--base-url", default=keep)
    ust.add_argument("--api-key-env", default=keep,
                     help='environment variable holding the API key; "none" for no key')
    ust.add_argument("--timeout", type=float, default=keep, help="total timeout (s)")
    ust.add_argument("--connect-timeout", type=float, default=keep, help="connect timeout (s)")
    ust.add_argument("--max-retries", type=int, default=keep)
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


def _route_changes(args: argparse.Namespace, stored: RouteIn) -> dict[str, Any]:
    """The settings given on the command line, as ``routing.update_route`` takes them."""
    given = vars(args)
    changes: dict[str, Any] = {}
    if "variant" in given:
        variants: list[VariantArg] = given["variant"]
        changes["variants"] = routing.keep_prices(
            [v.variant for v in variants], stored, [v.price_given for v in variants])
    for option, field in (("sticky", "sticky"), ("cache_ttl", "cache"),
                          ("description", "description"), ("adaptive", "adaptive"),
                          ("semantic_cache", "semantic_cache")):
        if option in given:
            changes[field] = given[option]
    for option, field in (("fallback", "fallback"), ("shadow", "shadow")):
        if option in given:
            changes[field] = None if _none(given[option]) else given[option]
    for option, field in (("limit", "limits"), ("token_limit", "token_limits")):
        if option in given:
            rates: list[str] = given[option]
            changes[field] = [] if [_none(r) for r in rates] == [True] else rates
    return changes


async def _set(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        try:
            stored_route = await routing.get_route(session, args.name)
        except NotFound:
            before = None
        else:
            before = routing.route_dict(
                stored_route, await routing.route_quotas(session, stored_route.id))
        if before is None:
            if "variant" not in vars(args):
                message = f"route {args.name!r} does not exist: give at least one --variant"
                raise ValidationFailed([f"{message} to create it"])
            new = RouteIn(name=args.name, variants=[])
            saved = await routing.create_route(
                session, routing.merge_route(new, _route_changes(args, new)), actor=actor())
        else:
            changes = _route_changes(args, routing.route_in_from_dict(before))
            saved = await routing.update_route(session, args.name, changes, actor=actor())
        after = routing.route_dict(saved, await routing.route_quotas(session, saved.id))
    _print_changes("route", args.name, before, after)
    return 0


def _print_changes(
    kind: str, name: str, before: dict[str, Any] | None, after: dict[str, Any]
) -> None:
    """``route chat created``, ``... unchanged``, or ``... updated:`` with one line per
    changed setting (``old -> new`` as JSON)."""
    if before is None:
        print(f"{kind} {name} created")
        return
    changed = [k for k in [*before, *(k for k in after if k not in before)]
               if before.get(k) != after.get(k)]
    if not changed:
        print(f"{kind} {name} unchanged")
        return
    print(f"{kind} {name} updated:")
    for k in changed:
        old = json.dumps(before[k]) if k in before else "(not set)"
        new = json.dumps(after[k]) if k in after else "(not set)"
        print(f"  {k}: {old} -> {new}")


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
    given = vars(args)
    changes: dict[str, Any] = {}
    for option, field in (("kind", "kind"), ("base_url", "base_url"), ("timeout", "timeout_s"),
                          ("connect_timeout", "connect_timeout_s"),
                          ("max_retries", "max_retries")):
        if option in given:
            changes[field] = given[option]
    if "api_key_env" in given:
        changes["api_key_env"] = None if _none(args.api_key_env) else args.api_key_env or None
    async with transaction(settings) as session:
        try:
            before: dict[str, Any] | None = routing.upstream_dict(
                await routing.get_upstream(session, args.name))
        except NotFound:
            before = None
            saved = await routing.create_upstream(
                session, UpstreamIn(name=args.name, **changes), actor=actor())
        else:
            saved = await routing.update_upstream(session, args.name, changes, actor=actor())
        after = routing.upstream_dict(saved)
    _print_changes("upstream", args.name, before, after)
    return 0


async def _delete_upstream(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        await routing.delete_upstream(session, args.name, actor=actor())
    print(f"upstream {args.name} deleted")
    return 0
