"""structlog set-up: contextvars first, JSON in production, pretty on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog

from litegate.context import current_request


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


def configure_logging(fmt: str = "auto", level: str = "info", *, cache: bool = False) -> None:
    """``cache`` freezes loggers on first use (faster; only for the server process —
    it prevents ``structlog.testing.capture_logs`` from seeing events)."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=cache,
    )
