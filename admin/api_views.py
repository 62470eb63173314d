"""The admin API's endpoints (see :mod:`.api` for authentication, errors and bounds).

Each write is one transaction through :mod:`litegate.services` — the same functions the
console and the CLI call — so the rules, the audit entry and the config-version bump
are theirs. Routes, upstreams and models carry ``row_version``: GET returns it (also as
``ETag``); a write that sends it back (``If-Match`` header or ``row_version`` field) is
refused with 409 when someone else changed the row in between.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Response, Router, delete, get, patch, post, put, route
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, FromQuery, QueryParameter
from sqlalchemy import select

from litegate.db.models import AuditEntry, Quota, as_utc
from litegate.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from litegate.services import audit as audit_service
from litegate.services import keys as key_service
from litegate.services import quotas as quota_service
from litegate.services import routing
from litegate.services.api_inputs import (
    KeyCreate,
    KeyUpdate,
    ModelActivate,
    ModelRollback,
    QuotaCreate,
)
from litegate.services.models import ModelService, model_dict, version_dict
from litegate.services.schema import RouteIn, UpstreamIn

from .api import (
    EXCEPTION_HANDLERS,
    MAX_JSON_BYTES,
    ApiContextMiddleware,
    ApiRequest,
    actor,
    convert,
    etag,
    expected_version,
    json_body,
    ok,
    reading,
    token_guard,
    transaction,
)
from .auth import context_of, ids_guard
from .config import AdminContext
from .models_views import MAX_UPLOAD_BYTES

MAX_PAGE = 500
METHODS: tuple[HttpMethod, ...] = (
    HttpMethod.GET, HttpMethod.HEAD, HttpMethod.POST, HttpMethod.PUT, HttpMethod.PATCH,
    HttpMethod.DELETE, HttpMethod.TRACE,
)
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="rows per page")]
Offset = Annotated[int, QueryParameter(ge=0, le=10**9, description="rows to skip")]


# -- upstreams ------------------------------------------------------------------------


def _upstream(u: Any) -> dict[str, Any]:
    return {"id": u.id, **routing.upstream_dict(u), "row_version": u.row_version}


def _upstream_in(data: dict[str, Any], name: str | None = None) -> UpstreamIn:
    data.pop("id", None)
    if name is not None:
        data["name"] = name
    return convert(data, UpstreamIn)


@get("/upstreams")
async def list_upstreams(request: ApiRequest) -> Response[Any]:
    async with reading(request) as session:
        return ok([_upstream(u) for u in await routing.list_upstreams(session)])


@get("/upstreams/{name:str}")
async def get_upstream(request: ApiRequest, name: FromPath[str]) -> Response[Any]:
    async with reading(request) as session:
        u = await routing.get_upstream(session, name)
        return ok(_upstream(u), headers=etag(u.row_version))


@post("/upstreams")
async def create_upstream(request: ApiRequest) -> Response[Any]:
    data = _upstream_in(await json_body(request))
    async with transaction(request) as session:
        u = await routing.create_upstream(session, data, actor=actor(request))
        out = _upstream(u)
    return ok(out, 201, etag(out["row_version"]))


@put("/upstreams/{name:str}")
async def update_upstream(request: ApiRequest, name: FromPath[str]) -> Response[Any]:
    body = await json_body(request)
    version = expected_version(request, body)
    data = _upstream_in(body, name)
    async with transaction(request) as session:
        await routing.get_upstream(session, name)  # 404: PUT changes, POST creates
        u = await routing.upsert_upstream(session, data, actor=actor(request),
                                          expected_version=version)
        out = _upstream(u)
    return ok(out, headers=etag(out["row_version"]))


@delete("/upstreams/{name:str}", status_code=204)
async def delete_upstream(request: ApiRequest, name: FromPath[str]) -> None:
    version = expected_version(request)
    async with transaction(request) as session:
        await routing.delete_upstream(session, name, actor=actor(request),
                                      expected_version=version)


# -- routes ---------------------------------------------------------------------------


async def _route(session: Any, r: Any) -> dict[str, Any]:
    quotas = await routing.route_quotas(session, r.id)
    return {"id": r.id, **routing.route_dict(r, quotas), "row_version": r.row_version}


def _route_in(data: dict[str, Any], name: str | None = None) -> RouteIn:
    data.pop("id", None)
    if name is not None:
        data["name"] = name
    return convert(data, RouteIn)


@get("/routes")
async def list_routes(request: ApiRequest) -> Response[Any]:
    async with reading(request) as session:
        return ok([await _route(session, r) for r in await routing.list_routes(session)])


@get("/routes/{name:str}")
async def get_route(request: ApiRequest, name: FromPath[str]) -> Response[Any]:
    async with reading(request) as session:
        r = await routing.get_route(session, name)
        return ok(await _route(session, r), headers=etag(r.row_version))


@post("/routes")
async def create_route(request: ApiRequest) -> Response[Any]:
    data = _route_in(await json_body(request))
    async with transaction(request) as session:
        r = await routing.create_route(session, data, actor=actor(request))
        out = await _route(session, r)
    return ok(out, 201, etag(out["row_version"]))


@put("/routes/{name:str}")
async def update_route(request: ApiRequest, name: FromPath[str]) -> Response[Any]:
    body = await json_body(request)
    version = expected_version(request, body)
    data = _route_in(body, name)
    async with transaction(request) as session:
        await routing.get_route(session, name)
        r = await routing.upsert_route(session, data, actor=actor(request),
                                       expected_version=version)
        out = await _route(session, r)
    return ok(out, headers=etag(out["row_version"]))


@delete("/routes/{name:str}", status_code=204)
async def delete_route(request: ApiRequest, name: FromPath[str]) -> None:
    version = expected_version(request)
    async with transaction(request) as session:
        await routing.delete_route(session, name, actor=actor(request),
                                   expected_version=version)


# -- keys -----------------------------------------------------------------------------


def _keep(value: Any) -> Any:
    return key_service.KEEP if value is msgspec.UNSET else value


async def _key(session: Any, k: Any) -> dict[str, Any]:
    limits = await key_service.own_limits(session, k.id)
    return key_service.key_dict(k) | {"limits": limits["requests"],
                                      "token_limits": limits["tokens"]}


@get("/keys")
async def list_keys(
    request: ApiRequest, q: FromQuery[str] = "", status: FromQuery[str] = "all",
    limit: Limit = 100, offset: Offset = 0,
) -> Response[Any]:
    async with reading(request) as session:
        keys, total = await key_service.search_keys(
            session, query=q[:200], status=status, offset=offset, limit=limit)
        return ok({"keys": [await _key(session, k) for k in keys], "total": total})


@get("/keys/{key_id:int}")
async def get_key(request: ApiRequest, key_id: FromPath[int]) -> Response[Any]:
    async with reading(request) as session:
        return ok(await _key(session, await key_service.get_key(session, key_id)))


@post("/keys")
async def create_key(request: ApiRequest) -> Response[Any]:
    data = convert(await json_body(request), KeyCreate)
    async with transaction(request) as session:
        key, secret = await key_service.create_key(
            session, actor=actor(request), **msgspec.structs.asdict(data))
        out = await _key(session, key)
    return ok(out | {"secret": secret}, 201)


@patch("/keys/{key_id:int}")
async def update_key(request: ApiRequest, key_id: FromPath[int]) -> Response[Any]:
    data = convert(await json_body(request), KeyUpdate)
    async with transaction(request) as session:
        key = await key_service.update_key(
            session, key_id, actor=actor(request), routes=_keep(data.routes),
            limits=_keep(data.limits), token_limits=_keep(data.token_limits),
            expires_at=_keep(data.expires_at), budget=_keep(data.budget),
        )
        return ok(await _key(session, key))


@post("/keys/{key_id:int}/revoke", status_code=200)
async def revoke_key(request: ApiRequest, key_id: FromPath[int]) -> Response[Any]:
    async with transaction(request) as session:
        return ok(await _key(session, await key_service.revoke_key(
            session, key_id, actor=actor(request))))


# -- quotas ---------------------------------------------------------------------------


@get("/quotas")
async def list_quotas(request: ApiRequest, limit: Limit = MAX_PAGE,
                      offset: Offset = 0) -> Response[Any]:
    async with reading(request) as session:
        rows = await session.scalars(select(Quota).order_by(Quota.id).offset(offset).limit(limit))
        return ok([quota_service.quota_dict(q) for q in rows])


@post("/quotas")
async def create_quota(request: ApiRequest) -> Response[Any]:
    data = convert(await json_body(request), QuotaCreate)
    async with transaction(request) as session:
        q = await quota_service.add_quota(session, actor=actor(request),
                                          **msgspec.structs.asdict(data))
        return ok(quota_service.quota_dict(q), 201)


@delete("/quotas/{quota_id:int}", status_code=204)
async def delete_quota(request: ApiRequest, quota_id: FromPath[int]) -> None:
    async with transaction(request) as session:
        await quota_service.delete_quota(session, quota_id, actor=actor(request))


# -- models ---------------------------------------------------------------------------


def _service(request: ApiRequest, session: Any) -> ModelService:
    settings = context_of(request).settings
    return ModelService(session, settings.models_dir, settings)


def _model(m: Any) -> dict[str, Any]:
    return {"id": m.id, **model_dict(m), "row_version": m.row_version}


@get("/models")
async def list_models(request: ApiRequest) -> Response[Any]:
    async with reading(request) as session:
        return ok([_model(m) for m in await _service(request, session).list()])


@get("/models/{name:str}")
async def get_model(request: ApiRequest, name: FromPath[str]) -> Response[Any]:
    async with reading(request) as session:
        m = await _service(request, session).get(name)
        return ok(_model(m), headers=etag(m.row_version))


async def _receive_file(request: ApiRequest, target: Path) -> int:
    """Stream the body to ``target`` (never whole in memory); bounded by the handler's
    ``request_max_body_size`` (413)."""
    size = 0
    out = await asyncio.to_thread(open, target, "wb")
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                raise PayloadTooLarge(f"model files are limited to {MAX_UPLOAD_BYTES} bytes")
            if chunk:
                await asyncio.to_thread(out.write, chunk)
    finally:
        await asyncio.to_thread(out.close)
    return size


@post("/models/{name:str}/versions", request_max_body_size=MAX_UPLOAD_BYTES)
async def upload_model(
    request: ApiRequest, name: FromPath[str], version: FromQuery[str | None] = None,
    activate: FromQuery[bool] = False,
) -> Response[Any]:
    """The request body is the ``.onnx`` file itself (``application/octet-stream``);
    validated like ``litegate models add`` before anything is stored."""
    settings = context_of(request).settings
    uploads = settings.home / "uploads"
    try:
        uploads.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="api-upload-", dir=uploads))
    except OSError as exc:
        raise _disk_fault(uploads, exc) from exc
    try:
        path = workdir / "model.onnx"
        try:
            size = await _receive_file(request, path)
        except OSError as exc:
            raise _disk_fault(uploads, exc) from exc
        if size == 0:
            raise BadRequest("the request body must be the .onnx file (it is empty)")
        async with transaction(request) as session:
            service = _service(request, session)
            try:
                mv = await service.add(name, path, actor=actor(request),
                                       version=version or None, activate=activate)
            except OSError as exc:
                raise _disk_fault(settings.models_dir, exc) from exc
            out = version_dict(mv) | {"model": _model(await service.get(name))}
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    return ok(out, 201)


def _disk_fault(where: Path, exc: OSError) -> ServiceUnavailable:
    """An upload the file system refused: one line naming the directory and the fix."""
    return ServiceUnavailable(f"cannot store the model under {where}: "
                              f"{exc.strerror or exc}; free space or fix that directory")


@post("/models/{name:str}/activate", status_code=200)
async def activate_model(request: ApiRequest, name: FromPath[str]) -> Response[Any]:
    body = await json_body(request)
    expected = expected_version(request, body)
    data = convert(body, ModelActivate)
    async with transaction(request) as session:
        m = await _service(request, session).activate(
            name, data.version, actor=actor(request), expected_version=expected)
        return ok(_model(m))


@post("/models/{name:str}/rollback", status_code=200)
async def rollback_model(request: ApiRequest, name: FromPath[str]) -> Response[Any]:
    body = await json_body(request) if await request.body() else {}
    expected = expected_version(request, body)
    convert(body, ModelRollback)
    async with transaction(request) as session:
        m = await _service(request, session).rollback(name, actor=actor(request),
                                                      expected_version=expected)
        return ok(_model(m))


@delete("/models/{name:str}/versions/{version:str}", status_code=204)
async def remove_model_version(
    request: ApiRequest, name: FromPath[str], version: FromPath[str]
) -> None:
    async with transaction(request) as session:
        await _service(request, session).remove(name, version, actor=actor(request))


# -- audit and usage ------------------------------------------------------------------


def _entry(e: AuditEntry) -> dict[str, Any]:
    at = as_utc(e.at)
    return {"id": e.id, "at": at.isoformat() if at else None, "actor": e.actor,
            "action": e.action, "entity_type": e.entity_type, "entity_name": e.entity_name,
            "before": e.before, "after": e.after}


@get("/audit")
async def audit_log(
    request: ApiRequest, actor: FromQuery[str] = "", entity_type: FromQuery[str] = "",
    action: FromQuery[str] = "", q: FromQuery[str] = "", limit: Limit = 50, offset: Offset = 0,
) -> Response[Any]:
    """Newest first; ``actor``, ``entity_type`` and ``action`` match exactly, ``q`` is a
    substring of the entity name or the actor."""
    filters = {"actor": actor[:200], "entity_type": entity_type[:50], "action": action[:50]}
    async with reading(request) as session:
        entries, total = await audit_service.search_audit(
            session, filters=filters, text=q[:200], offset=offset, limit=limit)
        return ok({"entries": [_entry(e) for e in entries], "total": total})


@get("/usage")
async def usage(request: ApiRequest, since: FromQuery[str] = "30d") -> Response[Any]:
    """What ``litegate usage --json`` prints, from this gateway's counters (shared by
    every replica when the gateway uses Redis; this process's own otherwise)."""
    from litegate.policies.spend import read_report, since_days
    from litegate.snapshot import build_snapshot

    try:
        days = since_days(since)
    except ValueError as exc:
        raise BadRequest(f"since: {exc}") from None
    async with reading(request) as session:
        snapshot = await build_snapshot(session)
    report = await read_report(context_of(request).gateway.spend, snapshot, days=days)
    return ok({"since": since, **report.as_dict()})


@route("/{path:path}", http_method=list(METHODS), status_code=404)
async def unknown(path: FromPath[str]) -> None:
    raise NotFound(f"no admin API endpoint {path!r}")


def _refuse_other_methods(handlers: list[HTTPRouteHandler]) -> list[HTTPRouteHandler]:
    """For each endpoint path, a handler of the methods it lacks: a 405 in the API's JSON
    error shape (Litestar's router would answer its own ``{"status_code", "detail"}``
    shape from outside this router's exception handlers)."""
    methods: dict[str, set[str]] = {}
    for handler in handlers:
        for path in handler.paths:
            methods.setdefault(path, set()).update(handler.http_methods)
    refusals = []
    for path, taken in methods.items():
        allowed = ", ".join(sorted(taken - {"HEAD"}))
        missing = [m for m in METHODS if m not in taken]
        if missing:
            refusals.append(route(path, http_method=missing, include_in_schema=False,
                                  opt={"refuses_methods": True},
                                  signature_namespace={"ApiRequest": ApiRequest})(
                                      _refusal(allowed)))
    return refusals


def _refusal(allowed: str) -> Any:
    async def refuse(request: ApiRequest) -> None:
        raise MethodNotAllowed(f"{request.method} is not allowed here; use {allowed}",
                               headers={"Allow": allowed})

    return refuse


def create_api_router(context: AdminContext) -> Router:
    """The API's router, mounted at ``/api`` under the console's path."""
    return Router(
        path="/api",
        route_handlers=[*ROUTE_HANDLERS, *_refuse_other_methods(ROUTE_HANDLERS[:-1])],
        middleware=[ApiContextMiddleware(context)],
        guards=[token_guard, ids_guard],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=MAX_JSON_BYTES,
        include_in_schema=False,
    )


ROUTE_HANDLERS = [
    list_upstreams, get_upstream, create_upstream, update_upstream, delete_upstream,
    list_routes, get_route, create_route, update_route, delete_route,
    list_keys, get_key, create_key, update_key, revoke_key,
    list_quotas, create_quota, delete_quota,
    list_models, get_model, upload_model, activate_model, rollback_model, remove_model_version,
    audit_log, usage, unknown,
]
