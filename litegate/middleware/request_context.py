"""Request context: request id, structlog contextvars, overhead header, access log,
and the single place where exceptions become error responses."""

from __future__ import annotations

import itertools
import os
import re
import time
from typing import TYPE_CHECKING

import structlog

from litegate.asgi_types import ASGIApp, Message, Receive, Scope, Send
from litegate.errors import LitegateError, send_error
from litegate.policies.observe import AccessLog
from litegate.request import SCOPE_KEY, RequestInfo, current_request

if TYPE_CHECKING:
    from litegate.snapshot import SnapshotStore

log = structlog.get_logger("litegate.request")
_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
# Unique per process without a syscall per request (os.urandom is slow on some VMs).
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, snapshots: SnapshotStore, access_log: bool) -> None:
        self.app = app
        self.snapshots = snapshots
        self.access_log = AccessLog() if access_log else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                rid = v if _REQUEST_ID_RE.match(v) else None
                break
        request_id = rid.decode() if rid else f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"
        info = RequestInfo(request_id, started, self.snapshots.current)
        scope[SCOPE_KEY] = info
        current_request.set(info)  # one contextvar per request; see add_request_context
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                info.status = message["status"]
                overhead = (time.perf_counter() - started - info.upstream_s) * 1000.0
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"x-litegate-overhead-ms", f"{overhead:.3f}".encode()))
                headers.extend(info.extra_headers)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except LitegateError as exc:
            if response_started:
                log.warning("error_after_response_started", error=exc.detail)
            else:
                await send_error(send_wrapper, exc, path=scope["path"])
        except Exception:
            log.exception("unhandled_error", path=scope["path"])
            if not response_started:
                await send_error(
                    send_wrapper,
                    LitegateError("internal error; see the gateway log for the request id"),
                    path=scope["path"],
                )
        finally:
            if self.access_log is not None:
                self.access_log(
                    scope["method"], scope["path"], info.status, info.route_name, info.variant,
                    info.key, info.cache, time.perf_counter() - started, info.upstream_s,
                    info.tokens,
                )
