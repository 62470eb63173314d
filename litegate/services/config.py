"""Declarative configuration: ``litegate config apply FILE`` / ``config export``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.services.audit import bump_config_version
from litegate.services.routing import (
    delete_route,
    delete_upstream,
    list_routes,
    list_upstreams,
    route_dict,
    route_quotas,
    upsert_route,
    upsert_upstream,
    upstream_dict,
)
from litegate.services.schema import ConfigDocument, ValidationFailed, parse_document


def load_file(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValidationFailed([f"{path}: cannot read ({exc.strerror})"]) from exc
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as exc:
        raise ValidationFailed([f"{path}: not valid YAML/TOML: {exc}"]) from exc


async def apply_document(
    session: AsyncSession, doc: ConfigDocument, *, actor: str, prune: bool = False
) -> dict[str, int]:
    """Upsert every upstream and route in ``doc`` inside the caller's transaction.

    With ``prune``, routes and upstreams absent from the file are deleted. The caller's
    transaction makes the whole apply atomic: a failure changes nothing.
    """
    for u in doc.upstreams:
        await upsert_upstream(session, u, actor=actor, bump=False)
    # Routes may name each other as fallbacks: create missing ones first, then fill in.
    existing = {route.name for route in await list_routes(session)}
    for r in doc.routes:
        if r.fallback and r.name not in existing:
            await upsert_route(session, _without_fallback(r), actor=actor, bump=False)
    # Last: routes whose semantic cache names another route (an embedding route).
    for r in sorted(doc.routes, key=lambda r: (r.fallback is not None,
                                                r.semantic_cache is not None)):
        await upsert_route(session, r, actor=actor, bump=False)
    deleted = 0
    if prune:
        wanted_routes = {r.name for r in doc.routes}
        for route in await list_routes(session):
            if route.name not in wanted_routes:
                await delete_route(session, route.name, actor=actor)
                deleted += 1
        wanted_ups = {u.name for u in doc.upstreams}
        for up in await list_upstreams(session):
            if up.name not in wanted_ups:
                await delete_upstream(session, up.name, actor=actor)
                deleted += 1
    version = await bump_config_version(session)
    return {
        "upstreams": len(doc.upstreams),
        "routes": len(doc.routes),
        "deleted": deleted,
        "config_version": version,
    }


def _without_fallback(r: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(r, fallback=None, semantic_cache=None)


async def export_document(session: AsyncSession) -> dict[str, Any]:
    ups = []
    for u in await list_upstreams(session):
        d = upstream_dict(u)
        ups.append({k: v for k, v in d.items() if v is not None})
    routes = []
    for r in await list_routes(session):
        routes.append(route_dict(r, await route_quotas(session, r.id)))
    return {"upstreams": ups, "routes": routes}


async def known_names(session: AsyncSession) -> tuple[set[str], set[str]]:
    """(upstream names, route names) in the database: what a ``--merge`` patch may use."""
    return ({u.name for u in await list_upstreams(session)},
            {r.name for r in await list_routes(session)})


def validate(
    raw: Any, *, known_upstreams: set[str] | None = None, known_routes: set[str] | None = None
) -> ConfigDocument:
    return parse_document(raw, known_upstreams=known_upstreams, known_routes=known_routes)


def unset_key_variables(doc: ConfigDocument) -> dict[str, str]:
    """Upstream name -> its ``api_key_env`` variable that is not set in this process."""
    return {u.name: u.api_key_env for u in doc.upstreams
            if u.api_key_env and u.api_key_env not in os.environ}
