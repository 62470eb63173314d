"""ONNX Runtime at the boundary: file validation, session creation, warm-up.

This is the only module that imports ``onnxruntime`` (and ``onnx``), and it does so
inside functions, so a proxy-only gateway never pays for it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from litegate.errors import BadRequest, LitegateError
from litegate.inference.dtypes import V2_TO_NUMPY
from litegate.inference.providers import CPU, check_providers, select_providers
from litegate.inference.signature import Signature, signature_from_session

log = structlog.get_logger("litegate.inference")

GRAPH_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class InvalidModel(BadRequest):
    """The file is not a usable ONNX model."""


class InferenceFailed(LitegateError):
    """The model failed while running this request."""

    status_code = 500
    type = "inference_error"
    code = "inference_failed"


def ort() -> Any:
    import onnxruntime

    return onnxruntime


def _short(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_model_file(path: Path) -> Signature:
    """ONNX checker, then a real CPU session. Raises :class:`InvalidModel` with the reason."""
    path = Path(path)
    if not path.is_file():
        raise InvalidModel(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InvalidModel(f"{path.name}: the file is empty")
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx raises ValidationError, DecodeError, ...
        raise InvalidModel(f"{path.name} is not a valid ONNX model: {_short(exc)}") from exc
    try:
        session = ort().InferenceSession(str(path), providers=[CPU])
    except Exception as exc:
        raise InvalidModel(
            f"{path.name}: onnxruntime {ort().__version__} cannot load the model: {_short(exc)}"
        ) from exc
    return signature_from_session(session)


@dataclass(slots=True)
class LoadedSession:
    """One live ``InferenceSession`` plus what we learned while creating it."""

    name: str
    version: str
    session: Any
    signature: Signature
    providers: tuple[str, ...]
    requested_providers: tuple[str, ...]
    fell_back: tuple[str, ...]
    size_bytes: int
    load_seconds: float
    output_names: tuple[str, ...] = field(default=())

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str] | None = None
            ) -> dict[str, np.ndarray]:
        names = outputs or list(self.output_names)
        try:
            results = self.session.run(names, dict(inputs))
        except Exception as exc:
            kind = type(exc).__name__
            if kind in {"InvalidArgument", "InvalidProtobuf"}:
                raise BadRequest(f"model {self.name!r} rejected the input: {_short(exc)}") from exc
            raise InferenceFailed(f"model {self.name!r} failed: {_short(exc)}") from exc
        return dict(zip(names, results))


def session_options(settings: Any, options: Mapping[str, Any]) -> Any:
    rt = ort()
    so = rt.SessionOptions()
    intra = int(options.get("intra_op_threads", getattr(settings, "intra_op_threads", 0)) or 0)
    inter = int(options.get("inter_op_threads", getattr(settings, "inter_op_threads", 0)) or 0)
    if intra:
        so.intra_op_num_threads = intra
    if inter:
        so.inter_op_num_threads = inter
    level = str(options.get("graph_optimization", "all")).lower()
    so.graph_optimization_level = getattr(
        rt.GraphOptimizationLevel, GRAPH_LEVELS.get(level, "ORT_ENABLE_ALL")
    )
    so.enable_cpu_mem_arena = bool(options.get("cpu_arena", True))
    so.enable_mem_pattern = bool(options.get("mem_pattern", True))
    so.log_severity_level = 3
    # ORT's worker threads spin-wait between runs by default; ``allow_spinning: false``
    # gives those cycles back to the event loop (measure: with 2 shared cores the
    # batched path was faster with spinning left on).
    if "allow_spinning" in options:
        spinning = "1" if bool(options["allow_spinning"]) else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        so.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    return so


def provider_options(providers: list[str], options: Mapping[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for p in providers:
        if p == "CUDAExecutionProvider":
            result.append({
                "arena_extend_strategy": str(options.get("gpu_arena_strategy", "kSameAsRequested")),
                "device_id": int(options.get("device_id", 0)),
            })
        else:
            result.append({})
    return result


def load_session(
    path: Path,
    settings: Any,
    *,
    name: str,
    version: str,
    options: Mapping[str, Any] | None = None,
) -> LoadedSession:
    """Create the session with the configured providers and read back what is in use."""
    options = options or {}
    rt = ort()
    started = time.perf_counter()
    strict = bool(getattr(settings, "strict_providers", False))
    requested = select_providers(
        str(options.get("providers") or getattr(settings, "providers", "auto")),
        rt.get_available_providers(),
        strict=strict,
    )
    try:
        session = rt.InferenceSession(
            str(path),
            sess_options=session_options(settings, options),
            providers=requested,
            provider_options=provider_options(requested, options),
        )
    except Exception as exc:
        raise InferenceFailed(f"model {name!r} version {version!r} failed to load: {_short(exc)}"
                              ) from exc
    actual = list(session.get_providers())
    fell_back = check_providers(requested, actual, strict=strict, model=name)
    signature = signature_from_session(session)
    loaded = LoadedSession(
        name=name,
        version=version,
        session=session,
        signature=signature,
        providers=tuple(actual),
        requested_providers=tuple(requested),
        fell_back=tuple(fell_back),
        size_bytes=int(options.get("memory_bytes", 0)) or Path(path).stat().st_size,
        load_seconds=time.perf_counter() - started,
        output_names=signature.output_names,
    )
    log.info("onnx_model_loaded", model=name, version=version, providers=actual,
             seconds=round(loaded.load_seconds, 3))
    return loaded


def dummy_inputs(signature: Signature, *, batch: int = 1, dynamic: int = 8
                 ) -> dict[str, np.ndarray]:
    """Zero tensors shaped from the signature (first dynamic dim = batch, others = dynamic)."""
    result: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        dtype = V2_TO_NUMPY.get(spec.datatype, np.dtype(np.float32))
        shape = [
            (batch if i == 0 else dynamic) if d == -1 else d for i, d in enumerate(spec.shape)
        ]
        result[spec.name] = np.zeros(shape, dtype=dtype)
    return result


def warm_up(loaded: LoadedSession, runs: int = 2) -> bool:
    """A few dummy runs so the first real request does not pay for lazy init."""
    try:
        inputs = dummy_inputs(loaded.signature)
        for _ in range(runs):
            loaded.session.run(None, inputs)
    except Exception as exc:
        log.warning("onnx_warmup_failed", model=loaded.name, version=loaded.version,
                    error=_short(exc))
        return False
    return True
