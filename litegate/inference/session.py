"""ONNX Runtime at the boundary: file validation, session creation, warm-up.

This is the only module that imports ``onnxruntime`` (and ``onnx``), and it does so
inside functions, so a proxy-only gateway never pays for it.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from litegate.errors import BadRequest, LitegateError, ServiceUnavailable
from litegate.inference.dtypes import BYTES, V2_TO_NUMPY, Tensor, Tensors
from litegate.inference.files import external_data, model_digest
from litegate.inference.memory import MEASURING, heap_in_use
from litegate.inference.placement import MIB, session_mem_limit
from litegate.inference.progress import child_result, run_child
from litegate.inference.providers import (
    CPU,
    build_provider_options,
    check_providers,
    on_device,
    select_providers,
)
from litegate.inference.signature import Signature, signature_from_session, validate_inputs
from litegate.progress import Progress
from litegate.settings import Settings

if TYPE_CHECKING:  # imported for real only inside functions (see ort())
    from onnxruntime import InferenceSession, RunOptions, SessionOptions

    from litegate.inference.binding import GraphBinding

log = structlog.get_logger("litegate.inference")

WARMUP_SAMPLE = "warmup.npz"
"""A version's own warm-up inputs, stored beside its model file when one was given."""
MAX_SAMPLE_BYTES = 16 * 1024 * 1024

GRAPH_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class InvalidModel(BadRequest):
    """The file is not a usable ONNX model."""


class InferenceFailed(LitegateError):
    """The model failed while running this request."""

    status_code = 500
    type = "inference_error"
    code = "inference_failed"


class ModelUnavailable(ServiceUnavailable):
    """This model version cannot be served now (the others still can)."""

    code = "model_unavailable"


def ort() -> ModuleType:
    """``onnxruntime``, imported on first use."""
    import onnxruntime

    module: ModuleType = onnxruntime  # no type information ships with it
    return module


def _short(exc: BaseException, path: Path | None = None, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if path is not None:  # ORT and onnx quote full paths: keep only the file names
        text = text.replace(str(path.parent.resolve()) + os.sep, "").replace(
            str(path.parent) + os.sep, "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_model_file(path: Path) -> Signature:
    """ONNX checker, then a real CPU session. Raises :class:`InvalidModel` with the reason.

    Messages name the file, never the directory it is in (that is the server's business).
    This runs in-process: registration calls it through :func:`check_model_file`.
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidModel(f"{path.name}: no such file")
    if path.stat().st_size == 0:
        raise InvalidModel(f"{path.name}: the file is empty")
    import onnx

    external_data(path)  # unsafe or missing external data: a clear error first
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx raises ValidationError, DecodeError, ...
        raise InvalidModel(f"{path.name} is not a valid ONNX model: {_short(exc, path)}") from exc
    options = ort().SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort().InferenceSession(str(path), sess_options=options, providers=[CPU])
    except Exception as exc:
        raise InvalidModel(
            f"{path.name}: onnxruntime {ort().__version__} cannot load the model: "
            f"{_short(exc, path)}") from exc
    return signature_from_session(session)


def load_sample(path: Path, signature: Signature) -> dict[str, Tensor]:
    """Warm-up inputs from an uncompressed ``.npz`` (one array per model input), checked
    against the signature; at most ``MAX_SAMPLE_BYTES`` once unpacked."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
        if any(m.compress_type != zipfile.ZIP_STORED for m in members) or sum(
                m.file_size for m in members) > MAX_SAMPLE_BYTES:
            raise InvalidModel(
                f"{path.name}: the warm-up sample must be an uncompressed .npz (numpy.savez) "
                f"of at most {MAX_SAMPLE_BYTES // 2**20} MiB")
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InvalidModel(f"{path.name}: the warm-up sample is not a .npz of arrays") from exc
    # numpy keeps strings as fixed-width unicode; ONNX Runtime takes str objects.
    arrays = {k: a.astype(object) if a.dtype.kind in "US" else a for k, a in arrays.items()}
    try:
        validate_inputs(signature, arrays)
    except BadRequest as exc:
        raise InvalidModel(f"{path.name}: warm-up sample: {exc.detail}") from exc
    return arrays


def check_model_file(path: Path, settings: Settings | None, sample: Path | None = None,
                     progress: Progress | None = None) -> Signature:
    """Validate and warm up ``path`` in a child process with memory and time limits.

    A model that needs more memory (constant folding, huge warm-up tensors) or time
    (a graph that loops for ever) than allowed is refused; the calling process never
    runs the model, so registering a hostile file cannot take a gateway down. Warm-up
    uses ``sample`` (see :func:`load_sample`) when given, else minimal zero tensors.
    ``progress`` hears of the ``validate`` and ``warm-up`` steps as the child takes them.
    """
    path = Path(path)
    settings = settings if settings is not None else Settings()  # the default limits
    limit_mb = int(settings.model_check_memory_mb or 2048)
    timeout = float(settings.model_check_timeout_s or 60.0)
    try:
        returncode, lines = run_child(
            [sys.executable, "-m", "litegate.inference.check", str(path),
             str(limit_mb * 1024 * 1024), str(timeout * 0.8),
             *([str(sample)] if sample is not None else [])],
            timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"}, progress=progress)
    except subprocess.TimeoutExpired as exc:
        raise InvalidModel(
            f"{path.name}: validation and warm-up did not finish within {timeout:g} s "
            "(model_check_timeout_s); the model may loop for ever") from exc
    result = child_result(lines)
    if returncode == 0 and "signature" in result:
        return Signature.from_dict(result["signature"])
    if "error" in result:
        raise InvalidModel(str(result["error"]))
    raise InvalidModel(
        f"{path.name}: validation and warm-up needed more than {limit_mb} MB "
        "(model_check_memory_mb) or crashed (exit status "
        f"{returncode})")


@dataclass(slots=True)
class LoadedSession:
    """One live ``InferenceSession`` plus what we learned while creating it."""

    name: str
    version: str
    session: InferenceSession
    signature: Signature
    providers: tuple[str, ...]
    requested_providers: tuple[str, ...]
    fell_back: tuple[str, ...]
    size_bytes: int
    load_seconds: float
    output_names: tuple[str, ...] = field(default=())
    warm_up_error: str | None = None  # why warm-up failed (the model still serves)
    device_id: int | None = None
    """The CUDA device the session computes on; None on CPU (or after a fallback)."""
    binding: str | None = None
    """Where outputs are bound (``"cuda"``/``"cpu"``), or None for plain ``session.run``."""
    graph: GraphBinding | None = None
    """Fixed buffers of a CUDA-graph session (static shapes only)."""

    def run(self, inputs: Tensors, run_options: RunOptions | None = None
            ) -> dict[str, Tensor]:
        """One run (IO binding when :attr:`binding` says so, else ``session.run``);
        ``run_options`` lets the caller terminate it (deadline)."""
        from litegate.inference.binding import bindable, run_bound

        names = list(self.output_names)
        try:
            results: list[Tensor]
            if self.graph is not None:
                results = self.graph.run(inputs, run_options)
            elif self.binding is not None and bindable(inputs):
                results = run_bound(self.session, inputs, names, self.binding,
                                    self.device_id or 0, run_options)
            else:
                results = self.session.run(names, dict(inputs), run_options)
        except Exception as exc:
            kind = type(exc).__name__
            if kind in {"InvalidArgument", "InvalidProtobuf"}:
                raise BadRequest(f"model {self.name!r} rejected the input: {_short(exc)}") from exc
            raise InferenceFailed(f"model {self.name!r} failed: {_short(exc)}") from exc
        return dict(zip(names, results))


def new_run_options() -> RunOptions:
    """A ``RunOptions`` whose ``terminate`` flag stops the run between kernels (and loop
    iterations); quiet, since a terminated run is expected, not an ORT error."""
    ro: RunOptions = ort().RunOptions()
    ro.log_severity_level = 4
    return ro


def session_options(settings: Settings, options: Mapping[str, Any]) -> SessionOptions:
    rt = ort()
    so: SessionOptions = rt.SessionOptions()
    intra = int(options.get("intra_op_threads", settings.intra_op_threads) or 0)
    inter = int(options.get("inter_op_threads", settings.inter_op_threads) or 0)
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


def static_shapes(path: Path) -> bool:
    """Every graph input and output has a fixed shape (what a CUDA graph needs)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    tensors = [t for t in graph.input if t.name not in weights] + list(graph.output)
    return bool(tensors) and all(
        t.type.HasField("tensor_type") and t.type.tensor_type.HasField("shape")
        and all(d.HasField("dim_value") and d.dim_value > 0
                for d in t.type.tensor_type.shape.dim)
        for t in tensors)


def _binding_for(loaded: LoadedSession, options: Mapping[str, Any],
                 cuda_graph: bool) -> None:
    """IO binding from the providers really in use: on by default on a CUDA device, off
    on CPU; the ``io_binding`` option forces it either way (``true`` binds to ``cpu``
    on a CPU session)."""
    from litegate.inference.binding import GraphBinding

    device = on_device(loaded.providers)
    wanted = options.get("io_binding")
    if wanted is None or wanted == "auto":
        use = device
    else:
        use = str(wanted).lower() in {"1", "true", "yes", "on"}
    if not use:
        return
    loaded.binding = "cuda" if device else "cpu"
    if cuda_graph and device:
        sig = loaded.signature
        shapes = {t.name: (tuple(t.shape), V2_TO_NUMPY[t.datatype])
                  for t in (*sig.inputs, *sig.outputs)}
        loaded.graph = GraphBinding(loaded.session, loaded.output_names, loaded.binding,
                                    loaded.device_id or 0, shapes)


def _memory_in_use() -> int:
    """Heap bytes in use (glibc), else resident memory (Linux), else 0."""
    heap = heap_in_use()
    if heap is not None:
        return heap
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def verify_file(path: Path, sha256: str, *, name: str, version: str) -> None:
    """The file (and its external data) must be what was registered."""
    try:
        digest = model_digest(Path(path))
    except OSError as exc:
        raise ModelUnavailable(
            f"model {name!r} version {version!r}: its stored file is missing or unreadable; "
            "register the version again") from exc
    except BadRequest as exc:
        raise ModelUnavailable(f"model {name!r} version {version!r}: {exc.detail}") from exc
    if digest != sha256:
        log.error("onnx_model_checksum_mismatch", model=name, version=version)
        raise ModelUnavailable(
            f"model {name!r} version {version!r}: the stored file does not match its "
            "registered SHA-256; register the version again")


def load_session(
    path: Path,
    settings: Settings,
    *,
    name: str,
    version: str,
    options: Mapping[str, Any] | None = None,
) -> LoadedSession:
    """Create the session with the configured providers and read back what is in use.

    ``size_bytes`` is what the process really grew by while loading and warming up
    (ORT's arena, pre-packed weights...), not the file size, unless ``memory_bytes``
    is set or another load was being measured at the same time.
    """
    options = options or {}
    rt = ort()
    started = time.perf_counter()
    strict = settings.strict_providers
    requested = select_providers(
        str(options.get("providers") or settings.providers),
        rt.get_available_providers(),
        strict=strict,
    )
    gpu = on_device(requested)
    try:
        device_id = int(options.get("device_id") or 0)
        by_provider = build_provider_options(
            requested, options, device_id=device_id,
            gpu_mem_limit=session_mem_limit(options, int(settings.gpu_memory_mb or 0) * MIB),
            trt_fp16=settings.trt_fp16,
            home=settings.home,
            static_shapes=gpu and bool(options.get("cuda_graph")) and static_shapes(Path(path)))
    except ValueError as exc:  # a bad option (device_id, gpu_memory_mb, cuDNN search)
        raise ModelUnavailable(f"model {name!r} version {version!r}: {exc}") from exc
    cuda_graph = any(o.get("enable_cuda_graph") == "1" for o in by_provider)
    for o in by_provider:  # TensorRT writes its engines there; make sure it can
        if "trt_engine_cache_path" in o:
            Path(o["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
    # Bounded wait: a load that cannot be measured falls back to the file size.
    measured = MEASURING.acquire(timeout=10)
    try:
        before = _memory_in_use()
        try:
            session: InferenceSession = rt.InferenceSession(
                str(path),
                sess_options=session_options(settings, options),
                providers=requested,
                provider_options=by_provider,
            )
        except Exception as exc:
            raise ModelUnavailable(
                f"model {name!r} version {version!r} failed to load: {_short(exc, Path(path))}"
            ) from exc
        actual = list(session.get_providers())
        fell_back = check_providers(requested, actual, strict=strict, model=name)
        signature = signature_from_session(session)
        loaded = LoadedSession(
            name=name, version=version, session=session, signature=signature,
            providers=tuple(actual), requested_providers=tuple(requested),
            fell_back=tuple(fell_back), size_bytes=0, load_seconds=0.0,
            output_names=signature.output_names,
            device_id=device_id if on_device(actual) else None,
        )
        _binding_for(loaded, options, cuda_graph)
        loaded.warm_up_error = warm_up(loaded, runs=int(options.get("warmup_runs", 2)),
            timeout_s=float(settings.model_load_timeout_s or 120.0),
            sample=_stored_sample(Path(path), signature, name))
        grown = _memory_in_use() - before if measured else 0
    finally:
        if measured:
            MEASURING.release()
    loaded.size_bytes = int(options.get("memory_bytes", 0)) or max(grown, Path(path).stat().st_size)
    loaded.load_seconds = time.perf_counter() - started
    log.info("onnx_model_loaded", model=name, version=version, providers=actual,
             device_id=loaded.device_id, io_binding=loaded.binding,
             seconds=round(loaded.load_seconds, 3), size_bytes=loaded.size_bytes)
    return loaded


def _stored_sample(path: Path, signature: Signature, name: str) -> dict[str, Tensor] | None:
    sample = path.parent / WARMUP_SAMPLE
    if not sample.is_file():
        return None
    try:
        return load_sample(sample, signature)
    except InvalidModel as exc:  # checked at registration; changed since: minimal shapes
        log.warning("onnx_warmup_sample_ignored", model=name, error=exc.detail)
        return None


def dummy_inputs(signature: Signature) -> dict[str, Tensor]:
    """The smallest tensors the signature allows: 1 for every dynamic dimension."""
    result: dict[str, Tensor] = {}
    for spec in signature.inputs:
        shape = [1 if d == -1 else d for d in spec.shape]
        if spec.datatype == BYTES:
            result[spec.name] = np.full(shape, "", dtype=object)
        else:
            dtype = V2_TO_NUMPY.get(spec.datatype, np.dtype(np.float32))
            result[spec.name] = np.zeros(shape, dtype=dtype)
    return result


def warm_up(loaded: LoadedSession, runs: int = 2, timeout_s: float = 120.0,
            sample: Tensors | None = None) -> str | None:
    """A few runs (on ``sample``, else minimal zeros) so the first real request does not
    pay for lazy init.

    Returns None, or why the runs failed: a model may reject zero-filled minimal inputs
    (only logged). One that does not finish within ``timeout_s`` is refused: its
    requests would never finish either.
    """
    inputs = dict(sample) if sample is not None else dummy_inputs(loaded.signature)
    ro = new_run_options()
    timer = threading.Timer(timeout_s, lambda: setattr(ro, "terminate", True))
    timer.daemon = True
    timer.start()
    try:
        for _ in range(runs):
            if loaded.binding is not None:  # warm the bound path (a CUDA graph captures here)
                loaded.run(inputs, ro)
            else:
                loaded.session.run(None, inputs, ro)
    except Exception as exc:
        if ro.terminate:
            raise ModelUnavailable(
                f"model {loaded.name!r} version {loaded.version!r}: warm-up did not finish "
                f"within {timeout_s:g} s (model_load_timeout_s)") from exc
        log.warning("onnx_warmup_failed", model=loaded.name, version=loaded.version,
                    error=_short(exc))
        return _short(exc)
    finally:
        timer.cancel()
    return None
