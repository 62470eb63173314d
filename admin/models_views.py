"""Model pages: versions, upload (validated exactly like ``litegate models add``),
activate, roll back, remove non-active versions — all through ``ModelService``."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from litestar import Response, get, post
from litestar.datastructures import UploadFile
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import Model, ModelVersion
from litegate.errors import LitegateError
from litegate.services.models import ModelService

from . import forms
from .auth import context_of, session_of
from .dashboard import manager_status
from .pages import AdminRequest, act, actor, redirect, render, row_or_404

MAX_UPLOAD_BYTES = 4 * 1024**3
_FILENAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


def _service(request: AdminRequest, session: AsyncSession) -> ModelService:
    settings = context_of(request).settings
    return ModelService(session, settings.models_dir, settings)


async def _models_page(
    request: AdminRequest,
    result: forms.FormResult[None] | None = None,
    *,
    status_code: int = 200,
) -> Response[str]:
    ctx = context_of(request)
    async with ctx.sessionmaker() as session:
        models = await _service(request, session).list()
    result = result or forms.FormResult({"name": "", "version": "", "activate": True})
    return render(
        request, "models.html", title="Models", active="models", models=models,
        status=manager_status(ctx.models), values=result.values, errors=result.errors,
        status_code=status_code,
    )


@get("/models")
async def models_page(request: AdminRequest) -> Response[str]:
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
async def model_upload(request: AdminRequest) -> Response[Any]:
    ctx = context_of(request)
    form = await request.form()
    name = str(form.get("name") or "").strip()
    version = str(form.get("version") or "").strip()
    activate = bool(form.get("activate"))
    quantize = str(form.get("quantize") or "")
    result = forms.FormResult[None]({"name": name, "version": version, "activate": activate,
                                     "quantize": quantize == "int8"})
    upload = form.get("file")
    if not name:
        result.add("name", "required")
    if not isinstance(upload, UploadFile) or not upload.filename:
        result.add("file", "choose an .onnx file")
        return await _models_page(request, result, status_code=400)
    if not result.ok:
        return await _models_page(request, result, status_code=400)
    uploads = ctx.settings.home / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="upload-", dir=uploads))
    try:
        path = await asyncio.to_thread(_save_upload, upload, workdir)
        report: dict[str, Any] | None = None
        async with ctx.sessionmaker() as session, session.begin():
            if quantize:  # int8 copy of the uploaded fp32 file (ModelService checks the mode)
                mv, report = await _service(request, session).add_quantized(
                    name, path, actor=actor(request), quantize=quantize,
                    version=version or None, activate=activate,
                )
            else:
                mv = await _service(request, session).add(
                    name, path, actor=actor(request), version=version or None,
                    activate=activate,
                )
            added = mv.version
    except LitegateError as exc:
        result.add(_upload_error_field(exc.detail), exc.detail)
        return await _models_page(request, result, status_code=exc.status_code)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    session_of(request).flash(
        f"Model {name} version {added} uploaded and validated"
        + (" and activated." if activate else ".")
        + (" " + _quantization_summary(report) if report is not None else "")
    )
    return redirect(request, "/models")


def _quantization_summary(report: dict[str, Any]) -> str:
    f, q, acc = report["fp32"], report["int8"], report["accuracy"]
    return (f"Quantized to INT8 ({report['method']}): file {q['file_bytes'] / 2**20:.2f} MB "
            f"({q['file_bytes'] / f['file_bytes']:.2f}× fp32), loaded memory "
            f"{q['memory_bytes'] / 2**20:.2f} MB ({q['memory_bytes'] / f['memory_bytes']:.2f}×), "
            f"max abs error {acc['max_abs_error']:.4g}, cosine similarity ≥ "
            f"{acc['min_cosine']:.4f} on {acc['rows']} {acc['inputs']} row(s).")


async def _model(session: AsyncSession, model_id: int) -> Model:
    return await row_or_404(session, Model, model_id, "model")


@post("/models/{model_id:int}/activate")
async def model_activate(request: AdminRequest, model_id: FromPath[int]) -> Redirect:
    form = await request.form()
    version = str(form.get("version") or "")

    async def activate(session: AsyncSession) -> str:
        name = (await _model(session, model_id)).name
        await _service(request, session).activate(
            name, version, actor=actor(request), expected_version=forms.row_version(form)
        )
        return f"Model {name}: version {version} is now active."

    return await act(request, activate, "/models")


@post("/models/{model_id:int}/rollback")
async def model_rollback(request: AdminRequest, model_id: FromPath[int]) -> Redirect:
    form = await request.form()

    async def rollback(session: AsyncSession) -> str:
        name = (await _model(session, model_id)).name
        model = await _service(request, session).rollback(
            name, actor=actor(request), expected_version=forms.row_version(form)
        )
        return f"Model {name} rolled back to version {model.active_version}."

    return await act(request, rollback, "/models")


@post("/models/{model_id:int}/versions/{version_id:int}/delete")
async def model_version_delete(
    request: AdminRequest, model_id: FromPath[int], version_id: FromPath[int]
) -> Redirect:
    async def remove(session: AsyncSession) -> str:
        model = await _model(session, model_id)
        mv = await session.get(ModelVersion, version_id)
        if mv is None or mv.model_id != model.id:
            raise NotFoundException(f"version {version_id} not found")
        version = mv.version
        await _service(request, session).remove(model.name, version, actor=actor(request))
        return f"Model {model.name}: version {version} removed."

    return await act(request, remove, "/models")


ROUTE_HANDLERS = [models_page, model_upload, model_activate, model_rollback, model_version_delete]
