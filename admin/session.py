"""The admin cookie: a signed payload (:class:`SessionSigner`) and the per-request
:class:`SessionState` handlers change and :mod:`.auth`'s middleware writes back.

The payload carries the issue time, the CSRF token, short flash messages and, once
signed in, a server-side session id (see :mod:`.auth` for why it is built this way).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """``payload.signature``; ``loads`` rejects a bad signature or an expired session."""

    def __init__(self, secret: str | bytes, *, max_age_s: int) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        self._key = hashlib.sha256(b"litegate-admin-session\x00" + raw).digest()
        self.max_age_s = max_age_s

    def _sign(self, payload: str) -> str:
        return _b64e(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def dumps(self, data: dict[str, Any]) -> str:
        payload = _b64e(json.dumps(data, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def loads(self, token: str, *, now: float | None = None) -> dict[str, Any] | None:
        payload, _, signature = token.partition(".")
        if not payload or not signature:
            return None
        try:
            if not hmac.compare_digest(self._sign(payload), signature):
                return None
            data = json.loads(_b64d(payload))
        except (ValueError, UnicodeError):
            return None
        if not isinstance(data, dict):
            return None
        issued = data.get("iat")
        if not isinstance(issued, int | float):
            return None
        if (now if now is not None else time.time()) - issued > self.max_age_s:
            return None
        return data


def new_session(session_id: str | None = None) -> dict[str, Any]:
    """Cookie payload: a fresh CSRF token, and the server-side session id once signed in."""
    data: dict[str, Any] = {"csrf": secrets.token_urlsafe(24), "iat": int(time.time())}
    if session_id is not None:
        data["sid"] = session_id
    return data


@dataclass
class SessionState:
    """Per-request session; handlers change it and the middleware writes the cookie."""

    data: dict[str, Any]
    dirty: bool = False
    user: str | None = None
    """Set by the middleware from the live server-side session, never from the cookie."""
    user_id: int | None = None

    @property
    def session_id(self) -> str | None:
        sid = self.data.get("sid")
        return sid if isinstance(sid, str) and self.user is not None else None

    @property
    def csrf_token(self) -> str:
        return str(self.data.get("csrf", ""))

    def sign_in(self, session_id: str, user: str, user_id: int) -> None:
        # A fresh cookie (and CSRF token) on login: no session fixation.
        self.data, self.dirty = new_session(session_id), True
        self.user, self.user_id = user, user_id

    def sign_out(self) -> None:
        self.data, self.user, self.user_id, self.dirty = new_session(), None, None, True

    def flash(self, message: str, category: str = "ok") -> None:
        self.data.setdefault("flash", []).append([category, message])
        self.dirty = True

    def pop_flashes(self) -> list[tuple[str, str]]:
        items = self.data.pop("flash", None)
        if items:
            self.dirty = True
            return [(str(c), str(m)) for c, m in items]
        return []
