"""Process settings: defaults < ``LITEGATE_*`` environment < explicit flags."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "LITEGATE_"


@dataclass(frozen=True)
class Settings:
    home: Path = Path(".litegate")
    """Holds the SQLite file, the registered model files and the demo state."""
    db: str | None = None
    """SQLAlchemy async URL; default ``sqlite+aiosqlite:///<home>/litegate.db``."""
    redis: str | None = None
    """``redis://host:port/db`` — shared limits and cache (configuration changes travel by polling the database)."""
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int = 0
    """Port of the gRPC Open Inference Protocol service (``tritonclient.grpc``); 0 = off.
    Off by default: it is a second listening port and needs ``litegate[grpc]``; Triton's
    convention is 8001."""
    workers: int = 1
    config: Path | None = None
    """Declarative YAML applied at start-up (like ``litegate config apply``)."""

    max_body_bytes: int = 1024 * 1024
    """Largest ``/v1`` request body (413 beyond)."""
    max_infer_body_bytes: int = 64 * 1024 * 1024
    """Largest ``/v2`` inference request body, tensors included (413 beyond)."""
    max_upstream_body_bytes: int = 16 * 1024 * 1024
    """Largest non-streamed ``/v1`` upstream answer the gateway buffers (502 beyond);
    streams and remote ``/v2`` answers are relayed as they arrive and never buffered."""
    reload_interval_s: float = 0.25
    db_timeout_s: float = 5.0
    """How long a database call waits for a lock held by another writer (SQLite) or for a
    connection (PostgreSQL) before failing with a one-line error."""
    """How often a gateway checks ``config_state.version`` (changes show within 1 s)."""

    limit_strategy: str = "sliding-window-counter"
    """``moving-window`` | ``fixed-window`` | ``sliding-window-counter``."""
    limit_fail_open: bool = True
    """When the limit storage (Redis) is unreachable: allow (True) or answer 503 (False)."""

    cache_backend: str = "auto"
    """``memory`` | ``redis`` | ``auto`` (Redis when ``redis`` is set, so replicas share it)."""
    cache_max_entries: int = 4096
    cache_max_bytes: int = 64 * 1024 * 1024
    cache_streams: bool = False

    feedback_max_requests: int = 100_000
    """Requests of ``adaptive: {metric: feedback}`` routes remembered for ``/v1/feedback``
    (least recent forgotten first)."""
    feedback_ttl_s: float = 3600.0
    """How long after a request its feedback is accepted."""

    header_timeout_s: float = 10.0
    """A request's head (request line and headers) must arrive within this many seconds
    of its first byte or of the connection opening; else 408 and the connection closes."""
    body_timeout_s: float = 60.0
    """A request's whole body must arrive within this many seconds after its head."""
    max_connections: int = 2048
    """Open client connections per worker process; more are answered 503 and closed."""

    server: str = "uvicorn"
    """ASGI server of ``litegate serve``: ``uvicorn`` (HTTP/1.1; the connection guard of
    ``litegate.connections``) or ``granian`` (HTTP/1.1 and HTTP/2; h2c with prior
    knowledge in cleartext). Chosen by measurement: bench/RESULTS.md, "ASGI servers"."""
    certfile: Path | None = None
    """PEM certificate (chain) for HTTPS; with ``keyfile``. Under granian ALPN offers
    ``h2`` and ``http/1.1``; under uvicorn HTTP/1.1 only."""
    keyfile: Path | None = None
    """PEM private key matching ``certfile``."""

    breaker_failures: int = 5
    breaker_reset_s: float = 10.0

    metrics_per_key: bool = False
    """Add ``litegate_key_tokens_total{key,route,kind}`` (``key``: the key's name). Off by
    default: a series per key is cardinality Prometheus pays for; spend per key is in
    ``litegate usage`` and the console's Usage page either way."""
    metrics_max_keys: int = 1000
    """Keys with their own ``litegate_key_tokens_total`` series; the rest share ``key="-"``."""

    tracing: str = "off"
    """OpenTelemetry tracing (``pip install 'litegate[otel]'``): ``off`` | ``otlp`` (OTLP
    exporter configured by the standard ``OTEL_*`` variables) | ``console`` | ``global``
    (the provider the host process set up). Off: opentelemetry is never imported and the
    policy stack has no tracing layer. See ``litegate.policies.tracing``."""

    log_format: str = "auto"
    """``json`` | ``console`` | ``auto`` (console on a TTY, JSON otherwise)."""
    log_level: str = "info"
    access_log: bool = True

    # ONNX inference
    providers: str = "auto"
    """Comma-separated ORT providers, or ``auto`` (CUDA first when usable, then CPU)."""
    strict_providers: bool = False
    """Fail instead of falling back to CPU when a requested provider is unavailable."""
    devices: str = ""
    """CUDA device ids sessions are placed on, e.g. ``0,1`` (least-loaded first; a model's
    ``device_id`` option pins it); empty = device 0."""
    gpu_memory_mb: int = 0
    """Budget per CUDA device for loaded sessions (each session's ``gpu_mem_limit`` too);
    least recently used idle sessions on that device are unloaded; 0 = unlimited."""
    trt_fp16: bool = False
    """TensorRT provider: build FP16 engines (``trt_fp16_enable``)."""
    inference_workers: int = 0
    """Threads for tokenizing and warm-up work; 0 means the number of CPUs (at least 2)."""
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    model_memory_mb: int = 0
    """Budget for loaded sessions; 0 = unlimited."""
    max_queue: int = 256
    """Pending inference requests per model before answering 503."""
    max_infer_response_bytes: int = 64 * 1024 * 1024
    """Largest ``/v2`` inference response body (400 beyond: ask for binary outputs or less)."""
    infer_timeout_s: float = 30.0
    """Deadline of one ``session.run`` (ONNX Runtime terminates the run; 504)."""
    text_pipeline_overlap: bool = True
    """Text models: tokenize the next batch while the session runs this one (a model's
    ``overlap`` option overrides it)."""
    model_load_timeout_s: float = 120.0
    """Loading plus warming one model version (503 for that model beyond)."""
    model_check_timeout_s: float = 60.0
    """Registration: validation and warm-up in a child process, killed beyond."""
    model_check_memory_mb: int = 2048
    """Registration: address-space limit (RLIMIT_AS) of the validation child process."""

    admin_enabled: bool = True
    admin_path: str = "/admin"
    admin_templates_dir: Path | None = None
    """Directory whose ``litegate_admin/<page>.html`` files override the console's pages."""
    admin_secure_cookies: bool = False
    """Always mark session cookies ``Secure`` (they are anyway when served over HTTPS)."""
    secret_key: str | None = None
    """Signs admin sessions; generated and stored under ``home`` when unset."""
    session_max_age_s: int = 8 * 3600

    demo: bool = False

    @property
    def db_url(self) -> str:
        if self.db:
            return normalize_db_url(self.db)
        return f"sqlite+aiosqlite:///{(self.home / 'litegate.db').resolve()}"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Defaults, then ``LITEGATE_*`` variables, then non-None ``overrides``."""
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = os.environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _coerce(hints[f.name], raw, f.name)
        for name, value in overrides.items():
            if value is not None:
                values[name] = _coerce(hints[name], value, name) if isinstance(value, str) else value
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def normalize_db_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``sqlite://`` URLs and pick the async driver."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///"):]
    return url


def _coerce(hint: Any, raw: Any, name: str) -> Any:
    if not isinstance(raw, str):
        return raw
    text = str(hint)
    try:
        if hint is bool or text == "bool":
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is Path or "Path" in text:
            return Path(raw) if raw else None
    except ValueError as exc:
        raise ValueError(f"invalid value for {ENV_PREFIX}{name.upper()}: {raw!r}") from exc
    return raw
