"""Upstreams and routes (with their variants and route-level quotas)."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import Model, Quota, Route, RouteVariant, Upstream, utcnow
from litegate.errors import BadRequest, Conflict, NotFound
from litegate.services.audit import record_audit
from litegate.services.schema import (
    AdaptiveIn,
    CacheIn,
    PriceIn,
    RouteIn,
    SemanticCacheIn,
    UpstreamIn,
    ValidationFailed,
    VariantIn,
    check_route,
    check_upstream,
    variant_name,
)


def upstream_dict(u: Upstream) -> dict[str, Any]:
    return {
        "name": u.name,
        "kind": u.kind,
        "base_url": u.base_url,
        "api_key_env": u.api_key_env,
        "timeout_s": u.timeout_s,
        "connect_timeout_s": u.connect_timeout_s,
        "max_retries": u.max_retries,
    }


async def route_quotas(session: AsyncSession, route_id: int) -> list[Quota]:
    rows = await session.scalars(
        select(Quota).where(Quota.route_id == route_id, Quota.key_id.is_(None)).order_by(Quota.id)
    )
    return list(rows)


def route_dict(r: Route, quotas: list[Quota]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": r.name,
        "variants": [
            {"upstream": v.upstream.name, "model": v.model, "weight": v.weight}
            | ({"name": v.name} if v.name != v.model else {})
            | (
                {"price": {"input_per_1m": v.price_input_per_1m or 0.0,
                           "output_per_1m": v.price_output_per_1m or 0.0}}
                if v.price_input_per_1m is not None or v.price_output_per_1m is not None
                else {}
            )
            for v in r.variants
        ],
        "sticky": r.sticky,
    }
    if r.cache_ttl_s:
        out["cache"] = {"ttl_s": r.cache_ttl_s}
    limits = [q.rate for q in quotas if q.kind == "requests"]
    tokens = [q.rate for q in quotas if q.kind == "tokens"]
    if limits:
        out["limits"] = limits
    if tokens:
        out["token_limits"] = tokens
    if r.fallback:
        out["fallback"] = r.fallback
    if r.shadow:
        out["shadow"] = r.shadow
    if r.description:
        out["description"] = r.description
    if r.adaptive:
        out["adaptive"] = dict(r.adaptive)
    if r.semantic_cache:
        out["semantic_cache"] = dict(r.semantic_cache)
    return out


def _variant_in(v: dict[str, Any]) -> VariantIn:
    price = v.get("price")
    return VariantIn(**{k: x for k, x in v.items() if k != "price"},
                     price=PriceIn(**price) if price else None)


def route_in_from_dict(data: dict[str, Any]) -> RouteIn:
    return RouteIn(
        name=data["name"],
        variants=[_variant_in(v) for v in data["variants"]],
        sticky=data.get("sticky", "key"),
        cache=CacheIn(**data["cache"]) if data.get("cache") else None,
        limits=list(data.get("limits", [])),
        token_limits=list(data.get("token_limits", [])),
        fallback=data.get("fallback"),
        shadow=data.get("shadow"),
        description=data.get("description", ""),
        adaptive=AdaptiveIn(**data["adaptive"]) if data.get("adaptive") else None,
        semantic_cache=(SemanticCacheIn(**data["semantic_cache"])
                        if data.get("semantic_cache") else None),
    )


async def list_upstreams(session: AsyncSession) -> list[Upstream]:
    return list(await session.scalars(select(Upstream).order_by(Upstream.name)))


async def get_upstream(session: AsyncSession, name: str) -> Upstream:
    u = await session.scalar(select(Upstream).where(Upstream.name == name))
    if u is None:
        raise NotFound(f"upstream {name!r} not found")
    return u


async def upsert_upstream(
    session: AsyncSession,
    data: UpstreamIn,
    *,
    actor: str,
    expected_version: int | None = None,
    bump: bool = True,
) -> Upstream:
    errors = check_upstream(data, "upstream")
    if errors:
        raise ValidationFailed(errors)
    u = await session.scalar(select(Upstream).where(Upstream.name == data.name))
    before = upstream_dict(u) if u else None
    if u is None:
        u = Upstream(name=data.name)
        session.add(u)
    elif expected_version is not None and u.row_version != expected_version:
        raise Conflict(f"upstream {data.name!r} was changed by someone else; reload and retry")
    u.kind = data.kind
    u.base_url = data.base_url.rstrip("/")
    u.api_key_env = data.api_key_env
    u.timeout_s = data.timeout_s
    u.connect_timeout_s = data.connect_timeout_s
    u.max_retries = data.max_retries
    after = upstream_dict(u)
    if before != after:
        await session.flush()
        await record_audit(
            session,
            actor=actor,
            action="create" if before is None else "update",
            entity_type="upstream",
            entity_name=data.name,
            before=before,
            after=after,
            bump=bump,
        )
    return u


async def create_upstream(session: AsyncSession, data: UpstreamIn, *, actor: str) -> Upstream:
    """A new upstream; a name already in use is refused (``upsert_upstream`` would update)."""
    if await session.scalar(select(Upstream.id).where(Upstream.name == data.name)) is not None:
        raise ValidationFailed([f"upstream.name: an upstream named {data.name!r} already exists"])
    return await upsert_upstream(session, data, actor=actor)


async def delete_upstream(
    session: AsyncSession, name: str, *, actor: str, expected_version: int | None = None
) -> None:
    """Delete an unused upstream; ``expected_version``: 409 if the row changed since."""
    u = await get_upstream(session, name)
    if expected_version is not None and u.row_version != expected_version:
        raise Conflict(f"upstream {name!r} was changed by someone else; reload and retry")
    used = await session.scalar(
        select(Route.name).join(RouteVariant).where(RouteVariant.upstream_id == u.id).limit(1)
    )
    if used:
        raise Conflict(f"upstream {name!r} is used by route {used!r}; change that route first")
    before = upstream_dict(u)
    await session.delete(u)
    await record_audit(
        session, actor=actor, action="delete", entity_type="upstream",
        entity_name=name, before=before, bump=True,
    )


async def list_routes(session: AsyncSession) -> list[Route]:
    return list(await session.scalars(select(Route).order_by(Route.name)))


async def get_route(session: AsyncSession, name: str) -> Route:
    r = await session.scalar(select(Route).where(Route.name == name))
    if r is None:
        raise NotFound(f"route {name!r} not found")
    return r


async def upsert_route(
    session: AsyncSession,
    data: RouteIn,
    *,
    actor: str,
    expected_version: int | None = None,
    bump: bool = True,
) -> Route:
    upstreams = {u.name: u for u in await list_upstreams(session)}
    errors = check_route(data, "route", set(upstreams))
    if data.fallback:
        exists = await session.scalar(select(Route.id).where(Route.name == data.fallback))
        if exists is None:
            errors.append(f"route.fallback: unknown route {data.fallback!r}")
    if data.semantic_cache is not None:
        errors += await _check_semantic_cache(session, data, upstreams)
    if errors:
        raise ValidationFailed(errors)
    r = await session.scalar(select(Route).where(Route.name == data.name))
    before = route_dict(r, await route_quotas(session, r.id)) if r else None
    if r is None:
        r = Route(name=data.name)
        session.add(r)
    elif expected_version is not None and r.row_version != expected_version:
        raise Conflict(f"route {data.name!r} was changed by someone else; reload and retry")
    r.sticky = data.sticky
    r.cache_ttl_s = data.cache.ttl_s if data.cache else None
    r.fallback = data.fallback
    r.shadow = data.shadow
    r.description = data.description
    r.adaptive = msgspec.to_builtins(data.adaptive) if data.adaptive else None
    r.semantic_cache = msgspec.to_builtins(data.semantic_cache) if data.semantic_cache else None
    existing = {v.name: v for v in r.variants}
    new_variants = []
    for pos, vin in enumerate(data.variants):
        name = variant_name(vin)
        v = existing.get(name) or RouteVariant(name=name)
        v.upstream = upstreams[vin.upstream]
        v.upstream_id = upstreams[vin.upstream].id
        v.model = vin.model
        v.weight = vin.weight
        v.position = pos
        v.price_input_per_1m = vin.price.input_per_1m if vin.price else None
        v.price_output_per_1m = vin.price.output_per_1m if vin.price else None
        new_variants.append(v)
    r.variants = new_variants
    await session.flush()
    current = await route_quotas(session, r.id)
    wanted = [("requests", rate) for rate in data.limits] + [
        ("tokens", rate) for rate in data.token_limits
    ]
    if [(q.kind, q.rate) for q in current] != wanted:
        for q in current:
            await session.delete(q)
        for kind, rate in wanted:
            session.add(Quota(route_id=r.id, kind=kind, rate=rate))
        await session.flush()
    after = route_dict(r, await route_quotas(session, r.id))
    if before != after:
        if before is not None:
            # Variant/quota-only edits must still bump the route's row_version, so a
            # concurrent editor holding the old version is refused instead of overwriting.
            r.updated_at = utcnow()
            await session.flush()
        await record_audit(
            session,
            actor=actor,
            action="create" if before is None else "update",
            entity_type="route",
            entity_name=data.name,
            before=before,
            after=after,
            bump=bump,
        )
    return r


ROUTE_FIELDS = frozenset(RouteIn.__struct_fields__) - {"name"}


async def stored_route_in(session: AsyncSession, name: str) -> RouteIn:
    """The stored route as ``config apply`` would take it (every setting it has)."""
    r = await get_route(session, name)
    return route_in_from_dict(route_dict(r, await route_quotas(session, r.id)))


def keep_prices(variants: list[VariantIn], stored: RouteIn, given: list[bool]) -> list[VariantIn]:
    """``variants`` where each one whose price was not given (``given[i]`` false) takes the
    price of the stored variant of the same name (none for a new variant)."""
    prices = {variant_name(v): v.price for v in stored.variants}
    return [v if was_given else msgspec.structs.replace(v, price=prices.get(variant_name(v)))
            for v, was_given in zip(variants, given, strict=True)]


def merge_route(stored: RouteIn, changes: dict[str, Any]) -> RouteIn:
    """``stored`` with only the settings in ``changes`` (``RouteIn`` field names) replaced."""
    unknown = set(changes) - ROUTE_FIELDS
    if unknown:
        raise BadRequest(f"unknown route setting(s) {sorted(unknown)}")
    return msgspec.structs.replace(stored, **changes)


async def update_route(
    session: AsyncSession,
    name: str,
    changes: dict[str, Any],
    *,
    actor: str,
    expected_version: int | None = None,
) -> Route:
    """Change only the settings in ``changes`` of the stored route ``name``; every other
    setting (variant prices, shadow, semantic cache, ...) is kept as stored."""
    data = merge_route(await stored_route_in(session, name), changes)
    return await upsert_route(session, data, actor=actor, expected_version=expected_version)


async def update_upstream(
    session: AsyncSession,
    name: str,
    changes: dict[str, Any],
    *,
    actor: str,
    expected_version: int | None = None,
) -> Upstream:
    """Change only the settings in ``changes`` (``UpstreamIn`` field names) of the stored
    upstream ``name``; the others are kept."""
    unknown = set(changes) - (set(UpstreamIn.__struct_fields__) - {"name"})
    if unknown:
        raise BadRequest(f"unknown upstream setting(s) {sorted(unknown)}")
    stored = msgspec.convert(upstream_dict(await get_upstream(session, name)), UpstreamIn)
    data = msgspec.structs.replace(stored, **changes)
    return await upsert_upstream(session, data, actor=actor, expected_version=expected_version)


async def _check_semantic_cache(
    session: AsyncSession, data: RouteIn, upstreams: dict[str, Upstream]
) -> list[str]:
    """The embedding model must be a registered model with a tokenizer, or a route whose
    ``onnx`` variant serves one; the route itself must reach a chat (``openai``) upstream."""
    assert data.semantic_cache is not None
    path = "route.semantic_cache"
    errors = []
    if not any(v.upstream in upstreams and upstreams[v.upstream].kind == "openai"
               for v in data.variants):
        errors.append(f"{path}: applies to chat routes; route {data.name!r} has no variant on "
                      "an 'openai' upstream")
    name = data.semantic_cache.embedding_model
    model = name
    route = await session.scalar(select(Route).where(Route.name == name))
    if route is not None:
        local = [v.model for v in route.variants if v.upstream.kind == "onnx"]
        if not local:
            return [*errors, f"{path}.embedding_model: route {name!r} serves no local model "
                             "(it has no variant on an 'onnx' upstream)"]
        model = local[0]
    options = await session.scalar(select(Model.options).where(Model.name == model))
    if options is None:
        known = sorted(await session.scalars(select(Model.name)))
        errors.append(f"{path}.embedding_model: no local model or route named {name!r} "
                      f"(models: {', '.join(known) or 'none registered'})")
    elif not options.get("tokenizer"):
        errors.append(f"{path}.embedding_model: model {model!r} has no tokenizer configured, "
                      "so it cannot embed text (register it with options.tokenizer)")
    return errors


async def create_route(session: AsyncSession, data: RouteIn, *, actor: str) -> Route:
    """A new route; a name already in use is refused (``upsert_route`` would update)."""
    if await session.scalar(select(Route.id).where(Route.name == data.name)) is not None:
        raise ValidationFailed([f"route.name: a route named {data.name!r} already exists"])
    return await upsert_route(session, data, actor=actor)


async def route_names(session: AsyncSession) -> list[str]:
    return list(await session.scalars(select(Route.name).order_by(Route.name)))


async def delete_route(
    session: AsyncSession, name: str, *, actor: str, expected_version: int | None = None
) -> None:
    """Delete a route no other route falls back to; ``expected_version``: 409 if the row
    changed since."""
    r = await get_route(session, name)
    if expected_version is not None and r.row_version != expected_version:
        raise Conflict(f"route {name!r} was changed by someone else; reload and retry")
    referrer = await session.scalar(select(Route.name).where(Route.fallback == name).limit(1))
    if referrer:
        raise Conflict(f"route {name!r} is the fallback of route {referrer!r}")
    before = route_dict(r, await route_quotas(session, r.id))
    await session.execute(delete(Quota).where(Quota.route_id == r.id))
    await session.delete(r)
    await record_audit(
        session, actor=actor, action="delete", entity_type="route",
        entity_name=name, before=before, bump=True,
    )


async def set_weights(
    session: AsyncSession,
    route: str,
    weights: dict[str, int],
    *,
    actor: str,
    expected_version: int | None = None,
) -> Route:
    """Change only the A/B weights of a route's variants (by variant name)."""
    r = await get_route(session, route)
    data = route_in_from_dict(route_dict(r, await route_quotas(session, r.id)))
    unknown = set(weights) - {variant_name(v) for v in data.variants}
    if unknown:
        raise BadRequest(f"unknown variant(s) {sorted(unknown)} on route {route!r}")
    for v in data.variants:
        if variant_name(v) in weights:
            v.weight = int(weights[variant_name(v)])
    return await upsert_route(session, data, actor=actor, expected_version=expected_version)
