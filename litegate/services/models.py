"""Model registry: validate, copy and checksum ONNX files; activate, roll back, remove.

Every operation runs inside the caller's transaction and records an audit entry and a
config-version bump in it, so gateways pick the change up on their next snapshot.
Files live in ``<home>/models/NAME/VERSION/model.onnx`` (external-data files beside
it); they are written only after validation succeeded and removed again if the
transaction rolls back. Validation and warm-up run in a child process with memory and
time limits. Versions are canonical positive integers (Triton's rule), and names
differing only in case are refused (``Model`` and ``model`` would be one directory on
case-insensitive file systems and confuse clients).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from litegate.db.models import Model, ModelVersion
from litegate.errors import BadRequest, Conflict, NotFound
from litegate.services.audit import record_audit

if TYPE_CHECKING:
    from litegate.progress import Progress

# Names become directory names: no separators, no dot-dot.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
VERSION = re.compile(r"^[1-9][0-9]{0,17}\Z")
MODEL_FILE = "model.onnx"
HISTORY_LIMIT = 50


def _check_name(value: str, what: str) -> str:
    if not SAFE_NAME.match(value or "") or ".." in value:
        raise BadRequest(
            f"{what} {value!r} is invalid: use 1-100 letters, digits, '.', '_' or '-'")
    return value


def _check_version(value: str) -> str:
    if not VERSION.match(value or ""):
        raise BadRequest(
            f"version {value!r} is invalid: use a positive integer without leading zeros "
            "(1, 2, 3...)")
    return value


def version_dict(v: ModelVersion) -> dict[str, Any]:
    return {
        "version": v.version,
        "path": v.path,
        "sha256": v.sha256,
        "size_bytes": v.size_bytes,
        "signature": v.signature,
        "created_at": v.created_at.isoformat() if v.created_at else None,
    }


def model_dict(m: Model) -> dict[str, Any]:
    return {
        "name": m.name,
        "active_version": m.active_version,
        "history": list(m.history or []),
        "max_batch_size": m.max_batch_size,
        "max_queue_delay_ms": m.max_queue_delay_ms,
        "hot": m.hot,
        "options": dict(m.options or {}),
        "versions": [version_dict(v) for v in m.versions],
    }


def _summary(m: Model) -> dict[str, Any]:
    return {"active_version": m.active_version, "history": list(m.history or []),
            "versions": [v.version for v in m.versions]}


def _next_version(m: Model | None) -> str:
    numbers = [int(v.version) for v in (m.versions if m else []) if v.version.isdigit()]
    return str(max(numbers, default=0) + 1)


def _claim(target_dir: Path, name: str, version: str) -> None:
    """Create a new version's directory, or refuse (409) when it exists: another
    registration of the same version is writing it (both passed the "version is free"
    check before either committed), and the loser's clean-up must never delete the
    winner's files."""
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        target_dir.mkdir()
    except FileExistsError:
        raise Conflict(
            f"model {name!r} version {version!r} is being registered by another request; "
            f"retry later (if none is, an interrupted one left {target_dir}: remove it)"
        ) from None


def _on_rollback(session: AsyncSession, action: Any) -> None:
    event.listen(session.sync_session, "after_rollback", lambda _s: action(), once=True)


def _on_commit(session: AsyncSession, action: Any) -> None:
    event.listen(session.sync_session, "after_commit", lambda _s: action(), once=True)


async def model_names(session: AsyncSession) -> list[str]:
    return list(await session.scalars(select(Model.name).order_by(Model.name)))


class ModelService:
    """Registry operations on one session (the caller owns the transaction)."""

    def __init__(self, session: AsyncSession, models_dir: Path, settings: Any = None) -> None:
        self.session = session
        self.models_dir = Path(models_dir)
        self.settings = settings  # limits of the validation child (defaults when None)

    async def list(self) -> list[Model]:
        return list(await self.session.scalars(select(Model).order_by(Model.name)))

    async def get(self, name: str) -> Model:
        model = await self.session.scalar(select(Model).where(Model.name == name))
        if model is None:
            raise NotFound(f"model {name!r} not found")
        return model

    async def _find(self, name: str) -> Model | None:
        return await self.session.scalar(select(Model).where(Model.name == name))

    async def add(
        self,
        name: str,
        source: Path | str,
        *,
        actor: str,
        version: str | None = None,
        activate: bool = False,
        max_batch_size: int | None = None,
        max_queue_delay_ms: float | None = None,
        hot: bool | None = None,
        options: Mapping[str, Any] | None = None,
        warmup_sample: Path | None = None,
        quantization: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
    ) -> ModelVersion:
        """Validate ``source`` (ONNX checker + a real ORT session), copy it, record it.

        A file that is not a loadable ONNX model raises :class:`InvalidModel` (400) and
        nothing is written. The first version of a model is activated automatically.
        Batching is off unless ``max_batch_size`` > 1 is given (Triton's rule: only the
        operator knows whether the first dimension is a batch). ``warmup_sample`` (an
        ``.npz``) is checked, used for warm-up and stored with the version.
        ``quantization`` (the report of :meth:`add_quantized`) goes into the audit entry.
        ``progress`` follows validation, warm-up and the copy (the CLI draws it).
        """
        # The base layer's one import upward (docs/architecture.md, "The one exception").
        from litegate.inference.files import copy_model
        from litegate.inference.session import WARMUP_SAMPLE, check_model_file

        source = Path(source)
        if max_batch_size is not None and max_batch_size < 0:
            raise BadRequest("max_batch_size must not be negative (0 = no batching)")
        if max_queue_delay_ms is not None and max_queue_delay_ms < 0:
            raise BadRequest("max_queue_delay_ms must not be negative")
        model, version = await self._new_version(name, version)

        signature = await asyncio.to_thread(check_model_file, source, self.settings,
                                            warmup_sample, progress)
        target_dir = self.models_dir / name / version
        target = target_dir / MODEL_FILE
        _claim(target_dir, name, version)  # ours from here: only we may remove it
        try:
            digest, size = await asyncio.to_thread(copy_model, source, target_dir, MODEL_FILE,
                                                   progress)
        except BaseException:
            shutil.rmtree(target_dir, ignore_errors=True)
            raise
        _on_rollback(self.session, lambda: shutil.rmtree(target_dir, ignore_errors=True))
        try:
            if warmup_sample is not None:
                await asyncio.to_thread(shutil.copyfile, warmup_sample,
                                        target_dir / WARMUP_SAMPLE)
            before = _summary(model) if model is not None else None
            if model is None:
                model = Model(name=name, history=[], options={}, versions=[],
                              max_batch_size=0)
                self.session.add(model)
            if max_batch_size is not None:
                model.max_batch_size = max_batch_size
            if max_queue_delay_ms is not None:
                model.max_queue_delay_ms = max_queue_delay_ms
            if hot is not None:
                model.hot = hot
            if options:
                model.options = {**(model.options or {}), **dict(options)}
            mv = ModelVersion(version=version, path=str(target.resolve()), sha256=digest,
                              size_bytes=size, signature=signature.to_dict())
            model.versions.append(mv)
            if activate or not model.active_version:
                self._switch(model, version)
            await self.session.flush()
            await record_audit(self.session, actor=actor, action="add_version",
                               entity_type="model", entity_name=name, before=before,
                               after=_summary(model) | {"added": version_dict(mv)}
                               | ({"quantization": dict(quantization)} if quantization else {}),
                               bump=True)
        except BaseException:
            shutil.rmtree(target_dir, ignore_errors=True)
            raise
        return mv

    async def _new_version(self, name: str, version: str | None) -> tuple[Model | None, str]:
        """The model (if it exists) and the canonical version a new file will get; refuses
        bad or case-duplicate names and a version that exists."""
        _check_name(name, "model name")
        model = await self._find(name)
        if model is None:
            await self._refuse_case_duplicate(name)
        version = _check_version(version or _next_version(model))
        if model is not None and any(v.version == version for v in model.versions):
            raise Conflict(f"model {name!r} already has version {version!r}")
        return model, version

    async def add_quantized(
        self,
        name: str,
        source: Path | str,
        *,
        actor: str,
        quantize: str = "int8",
        calibration: Path | None = None,
        max_error: float | None = None,
        min_cosine: float | None = None,
        version: str | None = None,
        warmup_sample: Path | None = None,
        progress: Progress | None = None,
        **kwargs: Any,
    ) -> tuple[ModelVersion, dict[str, Any]]:
        """Quantize the fp32 ``source`` (in the registration check's capped child process)
        and register the result as a version like any other; return it with the report.

        A report beyond ``max_error`` (max abs error) or ``min_cosine`` (cosine similarity)
        against the fp32 model raises :class:`QuantizationDrift` (400): nothing is written.
        """
        import tempfile

        # The base layer's one import upward (docs/architecture.md, "The one exception").
        from litegate.inference.quantize import MODES, OUTPUT_FILE, check_drift, quantize_model

        if quantize not in MODES:
            raise BadRequest(f"quantize {quantize!r} is not supported: use {', '.join(MODES)}")
        _, version = await self._new_version(name, version)
        work = Path(tempfile.mkdtemp(prefix="litegate-quantize-"))
        try:
            report = await asyncio.to_thread(
                quantize_model, Path(source), work, self.settings, calibration=calibration,
                sample=warmup_sample, progress=progress)
            check_drift(report, max_error=max_error, min_cosine=min_cosine)
            summary = {k: report[k] for k in ("method", "fp32", "int8", "accuracy")} | {
                "quantize": quantize, "source_name": Path(source).name}
            mv = await self.add(name, work / OUTPUT_FILE, actor=actor, version=version,
                                warmup_sample=warmup_sample, quantization=summary,
                                progress=progress, **kwargs)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        return mv, summary

    async def _refuse_case_duplicate(self, name: str) -> None:
        other = await self.session.scalar(
            select(Model.name).where(func.lower(Model.name) == name.lower()))
        if other is not None:
            raise Conflict(f"model {other!r} already exists; names differ only in case")

    @staticmethod
    def _switch(model: Model, version: str) -> None:
        if model.active_version and model.active_version != version:
            model.history = [*(model.history or []), model.active_version][-HISTORY_LIMIT:]
        model.active_version = version

    @staticmethod
    def _check_row_version(model: Model, expected_version: int | None) -> None:
        if expected_version is not None and expected_version != model.row_version:
            raise Conflict(
                f"model {model.name!r} was changed by someone else after you opened the page; "
                "reload and try again"
            )

    async def activate(
        self, name: str, version: str, *, actor: str, expected_version: int | None = None
    ) -> Model:
        model = await self.get(name)
        self._check_row_version(model, expected_version)
        if not any(v.version == version for v in model.versions):
            raise NotFound(f"model {name!r} has no version {version!r}")
        if model.active_version == version:
            return model
        before = _summary(model)
        self._switch(model, version)
        await self.session.flush()
        await record_audit(self.session, actor=actor, action="activate", entity_type="model",
                           entity_name=name, before=before, after=_summary(model), bump=True)
        return model

    async def rollback(
        self, name: str, *, actor: str, expected_version: int | None = None
    ) -> Model:
        """Re-activate the previously active version (popped from ``history``)."""
        model = await self.get(name)
        self._check_row_version(model, expected_version)
        existing = {v.version for v in model.versions}
        history = [v for v in (model.history or []) if v in existing and v != model.active_version]
        if not history:
            raise BadRequest(f"model {name!r} has no previous version to roll back to")
        before = _summary(model)
        model.active_version = history.pop()
        model.history = history
        await self.session.flush()
        await record_audit(self.session, actor=actor, action="rollback", entity_type="model",
                           entity_name=name, before=before, after=_summary(model), bump=True)
        return model

    async def remove(self, name: str, version: str, *, actor: str) -> None:
        """Delete an inactive version; its files go once the transaction commits."""
        model = await self.get(name)
        mv = next((v for v in model.versions if v.version == version), None)
        if mv is None:
            raise NotFound(f"model {name!r} has no version {version!r}")
        if model.active_version == version:
            raise Conflict(
                f"version {version!r} of model {name!r} is active; activate another version "
                "or roll back first")
        before = _summary(model)
        model.versions.remove(mv)
        model.history = [v for v in (model.history or []) if v != version]
        await self.session.flush()
        await record_audit(self.session, actor=actor, action="remove_version",
                           entity_type="model", entity_name=name, before=before,
                           after=_summary(model) | {"removed": version_dict(mv)}, bump=True)
        version_dir = Path(mv.path).parent
        if version_dir.name == version and version_dir.parent.name == name:
            _on_commit(self.session, lambda: shutil.rmtree(version_dir, ignore_errors=True))

    async def update(self, name: str, *, actor: str, max_batch_size: int | None = None,
                     max_queue_delay_ms: float | None = None, hot: bool | None = None,
                     options: Mapping[str, Any] | None = None) -> Model:
        """Change serving settings (batching, hot, options) of a model."""
        model = await self.get(name)
        before = model_dict(model)
        if max_batch_size is not None:
            if max_batch_size < 0:
                raise BadRequest("max_batch_size must not be negative (0 = no batching)")
            model.max_batch_size = max_batch_size
        if max_queue_delay_ms is not None:
            if max_queue_delay_ms < 0:
                raise BadRequest("max_queue_delay_ms must not be negative")
            model.max_queue_delay_ms = max_queue_delay_ms
        if hot is not None:
            model.hot = hot
        if options is not None:
            model.options = dict(options)
        await self.session.flush()
        after = model_dict(model)
        for d in (before, after):
            d.pop("versions")
        await record_audit(self.session, actor=actor, action="update", entity_type="model",
                           entity_name=name, before=before, after=after, bump=True)
        return model
