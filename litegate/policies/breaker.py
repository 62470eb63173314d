"""Circuit breaker per upstream: closed → open (after N consecutive failures) →
half-open (one trial request after ``reset_s``) → closed on success."""

from __future__ import annotations

import time

from litegate.errors import ServiceUnavailable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    __slots__ = ("name", "failures", "threshold", "reset_s", "state", "opened_at", "_trial")

    def __init__(self, name: str, *, threshold: int, reset_s: float) -> None:
        self.name = name
        self.threshold = threshold
        self.reset_s = reset_s
        self.failures = 0
        self.state = CLOSED
        self.opened_at = 0.0
        self._trial = False

    def before_call(self) -> None:
        """Raise 503 while open; in half-open let exactly one trial through."""
        if self.state == CLOSED:
            return
        now = time.monotonic()
        if self.state == OPEN:
            if now - self.opened_at < self.reset_s:
                raise self._unavailable(now)
            self.state = HALF_OPEN
            self._trial = False
        if self._trial:
            raise self._unavailable(now)
        self._trial = True

    def _unavailable(self, now: float) -> ServiceUnavailable:
        retry = max(1, int(self.reset_s - (now - self.opened_at) + 0.999))
        return ServiceUnavailable(
            f"upstream {self.name!r} is failing; circuit open",
            headers={"Retry-After": str(retry)},
            code="circuit_open",
        )

    def abandon(self) -> None:
        """A call ended without an outcome (cancelled): free the half-open trial so the
        next call can try, instead of every later call getting 503 forever."""
        if self.state == HALF_OPEN:
            self._trial = False

    def success(self) -> None:
        self.failures = 0
        self.state = CLOSED
        self._trial = False

    def failure(self) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self.state = OPEN
            self.opened_at = time.monotonic()
            self._trial = False
