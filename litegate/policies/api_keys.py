"""Who is calling: an API key secret checked against the configuration snapshot. The
one rule for every protocol (the ASGI auth middleware, gRPC)."""

from __future__ import annotations

from litegate.errors import Unauthorized
from litegate.snapshot import KeySpec, Snapshot, hash_key

CHALLENGE = {"WWW-Authenticate": "Bearer"}


def authenticate(snapshot: Snapshot, secret: str | None, now: float, *,
                 missing: str) -> KeySpec:
    """The key ``secret`` names; 401 when it is absent (``missing`` says how to send
    one), unknown, revoked or expired."""
    if secret is None:
        raise Unauthorized(missing, headers=CHALLENGE)
    key = snapshot.keys.get(hash_key(secret))
    if key is None:
        raise Unauthorized("Invalid or revoked API key", headers=CHALLENGE)
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("API key expired", headers=CHALLENGE)
    return key

