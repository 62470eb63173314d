"""Model pages: versions, upload (validated exactly like ``litegate models add``),
activate, roll back, remove non-active versions — all through ``ModelService``."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import NotFoundException
from litestar.response import Redirect
from sqlalchemy import select

from litegate.db.models import Model, ModelVersion
from litegate.errors import Conflict, LitegateError
from litegate.services.models import ModelService

from . import forms
from .auth import context_of, session_of
from .dashboard import manager_status

MAX_UPLOAD_BYTES = 4 * 1024**3
_FILENAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def _service(request: Request[Any, Any, Any], session: Any) -> ModelService:
    settings = context_of(request).settings
    return ModelService(session, settings.models_dir, settings)


async def _models_page(
    request: Request[Any, Any, Any],
    result: forms.FormResult | None = None,
    *,
    status_code: int = 200,
) -> Response[Any]:
    from .views import render

    ctx = context_of(request)
    async with ctx.sessionmaker() as session:
        models = list(await session.scalars(select(Model).order_by(Model.name)))
    result = result or forms.FormResult({"name": "", "version": "", "activate": True})
    return render(
        request, "models.html", title="Models", active="models", models=models,
        status=manager_status(ctx.models), values=result.values, errors=result.errors,
        status_code=status_code,
    )


@get("/models")
async def models_page(request: Request[Any, Any, Any]) -> Response[Any]:
    return await _models_page(request)


def _save_upload(upload: UploadFile, directory: Path) -> Path:
    name = _FILENAME_RE.sub("_", Path(upload.filename or "model.onnx").name).strip("._")
    target = directory / (name or "model.onnx")
    with open(target, "wb") as out:
        upload.file.seek(0)
        shutil.copyfileobj(upload.file, out, 1 << 20)
    return target


def _upload_error_field(detail: str) -> str:
    if detail.startswith("model name") or detail.startswith("model ") and "not found" in detail:
        return "name"
    if detail.startswith("version") or "already has version" in detail:
        return "version"
    if "max_batch" in detail or "max_queue" in detail:
        return forms.GENERAL
    return "file"


@post("/models", status_code=200, request_max_body_size=MAX_UPLOAD_BYTES)
async def model_upload(request: Request[Any, Any, Any]) -> Response[Any]:
    ctx = context_of(request)
    form = await request.form()
    values = {
        "name": str(form.get("name") or "").strip(),
        "version": str(form.get("version") or "").strip(),
        "activate": bool(form.get("activate")),
    }
    result = forms.FormResult(values)
    upload = form.get("file")
    if not values["name"]:
        result.add("name", "required")
    if not isinstance(upload, UploadFile) or not upload.filename:
        result.add("file", "choose an .onnx file")
    if not result.ok:
        return await _models_page(request, result, status_code=400)
    uploads = ctx.settings.home / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="upload-", dir=uploads))
    try:
        path = await asyncio.to_thread(_save_upload, upload, workdir)  # type: ignore[arg-type]
        async with ctx.sessionmaker() as session, session.begin():
            mv = await _service(request, session).add(
                values["name"], path, actor=f"admin:{session_of(request).user}",
                version=values["version"] or None, activate=values["activate"],
            )
            version = mv.version
    except LitegateError as exc:
        result.add(_upload_error_field(exc.detail), exc.detail)
        return await _models_page(request, result, status_code=exc.status_code)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    session_of(request).flash(
        f"Model {values['name']} version {version} uploaded and validated"
        + (" and activated." if values["activate"] else ".")
    )
    return Redirect(path=ctx.url("/models"), status_code=303)


async def _model(session: Any, model_id: int) -> Model:
    model = await session.get(Model, model_id)
    if model is None:
        raise NotFoundException(f"model {model_id} not found")
    return model


def _check_version(model: Model, form: Any) -> None:
    expected = forms.row_version(form)
    if expected is not None and expected != model.row_version:
        raise Conflict(
            f"model {model.name!r} was changed by someone else after you opened the page; "
            "reload and try again"
        )


async def _model_action(request: Request[Any, Any, Any], action: str) -> Redirect:
    ctx = context_of(request)
    state = session_of(request)
    model_id = int(request.path_params["model_id"])
    form = await request.form()
    who = f"admin:{state.user}"
    try:
        async with ctx.sessionmaker() as session, session.begin():
            model = await _model(session, model_id)
            name = model.name
            svc = _service(request, session)
            if action == "activate":
                _check_version(model, form)
                version = str(form.get("version") or "")
                await svc.activate(name, version, actor=who)
                message = f"Model {name}: version {version} is now active."
            elif action == "rollback":
                _check_version(model, form)
                model = await svc.rollback(name, actor=who)
                message = f"Model {name} rolled back to version {model.active_version}."
            else:
                version_id = int(request.path_params["version_id"])
                mv = await session.get(ModelVersion, version_id)
                if mv is None or mv.model_id != model.id:
                    raise NotFoundException(f"version {version_id} not found")
                version = mv.version
                await svc.remove(name, version, actor=who)
                message = f"Model {name}: version {version} removed."
    except NotFoundException:
        raise
    except LitegateError as exc:
        state.flash(exc.detail, "error")
    else:
        state.flash(message)
    return Redirect(path=ctx.url("/models"), status_code=303)


@post("/models/{model_id:int}/activate")
async def model_activate(request: Request[Any, Any, Any]) -> Redirect:
    return await _model_action(request, "activate")


@post("/models/{model_id:int}/rollback")
async def model_rollback(request: Request[Any, Any, Any]) -> Redirect:
    return await _model_action(request, "rollback")


@post("/models/{model_id:int}/versions/{version_id:int}/delete")
async def model_version_delete(request: Request[Any, Any, Any]) -> Redirect:
    return await _model_action(request, "remove")


ROUTE_HANDLERS = [models_page, model_upload, model_activate, model_rollback, model_version_delete]
