"""structlog set-up: contextvars first, JSON in production, pretty on a terminal.

The JSON access log is written through a buffered writer flushed every 200 ms (and
at once for warnings and errors): one ``write`` syscall per request line cost more
than the rest of the gateway's per-request work on the machines we measured.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import msgspec


@contextmanager
def hiding(*names: str) -> Iterator[None]:
    """Inside the block, importing ``names`` fails as if they were not installed; after
    it anyone can import them. For optional extras that a dependency loads eagerly when
    present and the gateway never uses, at a cost in memory and start-up per process."""
    hide = [name for name in names if name not in sys.modules]
    for name in hide:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hide:
            del sys.modules[name]


def import_hiding(hidden: tuple[str, ...], *modules: str) -> None:
    """Import ``modules`` as if ``hidden`` were not installed (see ``hiding``)."""
    with hiding(*hidden):
        for module in modules:
            __import__(module)


def _structlog_extras_to_hide() -> tuple[str, ...]:
    """structlog loads greenlet (+1.2 MiB; there for SQLAlchemy) for its deprecated
    ``threadlocal`` module, and rich (+3 MiB, ~0.1 s; Litestar depends on it) for console
    tracebacks. A process that logs JSON never renders those: the console renderer, if
    used after all, formats tracebacks plainly."""
    fmt = os.environ.get("LITEGATE_LOG_FORMAT", "auto")
    console = fmt == "console" or (fmt == "auto" and sys.stderr is not None and sys.stderr.isatty())
    return ("greenlet",) if console else ("greenlet", "rich")


if "structlog" not in sys.modules:
    import_hiding(_structlog_extras_to_hide(), "structlog")
import structlog

from litegate.request import current_request

FLUSH_INTERVAL_S = 0.2
_encode = msgspec.json.Encoder().encode


def add_request_context(
    logger: object, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Adds the current request's id, key, route and variant (never the key secret).

    One ContextVar set once per request is cheaper than clearing and re-binding
    structlog's per-key contextvars at every policy step.
    """
    info = current_request.get()
    if info is not None:
        event_dict.setdefault("request_id", info.request_id)
        if info.key is not None:
            event_dict.setdefault("key_id", info.key.id)
        if info.route_name is not None:
            event_dict.setdefault("route", info.route_name)
        if info.variant is not None:
            event_dict.setdefault("variant", info.variant.name)
    return event_dict


class FastTimeStamper:
    """ISO-8601 UTC timestamps; the date-time part is formatted once per second."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: object, method_name: str, event_dict: Any) -> Any:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event_dict


def _json(event_dict: Any, **_: Any) -> str:
    return _encode(event_dict).decode()


class BufferedLogger:
    """A structlog logger writing lines into a shared buffer flushed in the background."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        self._stream.write(message.encode() + b"\n")

    def urgent(self, message: str) -> None:
        self._stream.write(message.encode() + b"\n")
        self._stream.flush()

    debug = info = msg
    warning = warn = error = critical = exception = fatal = failure = err = urgent


class BufferedLoggerFactory:
    def __init__(self, fd: int = 2) -> None:
        self.stream = os.fdopen(os.dup(fd), "wb", buffering=256 * 1024)
        self._logger = BufferedLogger(self.stream)
        flusher = threading.Thread(target=self._flush_loop, name="litegate-log-flush", daemon=True)
        flusher.start()
        atexit.register(self.flush)

    def _flush_loop(self) -> None:
        event = threading.Event()
        while not event.wait(FLUSH_INTERVAL_S):
            self.flush()

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def __call__(self, *args: Any) -> BufferedLogger:
        return self._logger


_factory: BufferedLoggerFactory | None = None
_fast_access: Any = None


def access_logger() -> Any:
    """A callable ``log(fields: dict)`` for the per-request access line.

    In the server's JSON mode it encodes straight into the buffered stream (the same
    fields structlog would render, without running the processor chain per request);
    otherwise it goes through structlog, so ``capture_logs`` sees it in tests.
    """
    if _fast_access is not None:
        return _fast_access
    log = structlog.get_logger("litegate.access")

    def via_structlog(fields: dict[str, Any]) -> None:
        log.info("request", **fields)

    return via_structlog


def _make_fast_access(factory: BufferedLoggerFactory, level: int) -> Any:
    if level > logging.INFO:
        return lambda fields: None
    write = factory.stream.write
    stamp = FastTimeStamper()
    encode = msgspec.json.Encoder().encode

    def fast(fields: dict[str, Any]) -> None:
        fields["event"] = "request"
        info = current_request.get()
        if info is not None:
            fields["request_id"] = info.request_id
        fields["level"] = "info"
        stamp(None, "info", fields)
        write(encode(fields) + b"\n")

    return fast


def configure_logging(fmt: str = "auto", level: str = "info", *, cache: bool = False) -> None:
    """``cache`` freezes loggers on first use and buffers JSON output (the server
    process); it prevents ``structlog.testing.capture_logs`` from seeing events."""
    global _factory, _fast_access
    _fast_access = None
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer()
        factory: Any = structlog.PrintLoggerFactory(sys.stderr)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_json)
        if cache:
            _factory = _factory or BufferedLoggerFactory()
            factory = _factory
            _fast_access = _make_fast_access(
                _factory, logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
            )
        else:
            factory = structlog.PrintLoggerFactory(sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_context,
            structlog.processors.add_log_level,
            FastTimeStamper(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
