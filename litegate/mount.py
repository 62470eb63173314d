"""Starting a gateway mounted into someone else's app (plug-in, ASGI middleware, WSGI).

A mounted gateway never takes the host app down: when it cannot start for an
operational reason (database unreachable, locked or not migrated) the reason is logged
once as one line naming the fix, litegate's paths answer 503 with that line, the host's
public routes keep working, and the start is retried every few seconds — so running
``litegate db upgrade`` fixes a running app without a restart.
"""

from __future__ import annotations

import time

import structlog

from litegate.faults import OperationalFault
from litegate.gateway import Gateway

log = structlog.get_logger("litegate.mount")

RETRY_S = 2.0


class MountedStart:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.fault: OperationalFault | None = None
        self._next_try = 0.0

    async def start(self) -> OperationalFault | None:
        """Start if not started (at most once per ``RETRY_S`` after a fault); the fault
        that stops litegate, or None once it runs."""
        if self.gateway.started:
            return None
        now = time.monotonic()
        if self.fault is not None and now < self._next_try:
            return self.fault
        try:
            await self.gateway.ensure_started()
        except OperationalFault as exc:
            if self.fault is None or str(exc) != str(self.fault):
                log.error("litegate_not_started", error=str(exc))
            self.fault, self._next_try = exc, now + RETRY_S
            return exc
        self.fault = None
        return None
