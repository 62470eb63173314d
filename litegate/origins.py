"""Upstream base URLs, parsed once and rebuilt from the parts litegate accepts: the
configuration check refuses what the upstream client could not use, with the same rule."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an upstream's requests go, rebuilt from the parts of its ``base_url``."""

    scheme: str
    host: str
    port: int
    prefix: str
    """The base URL's path, without its trailing ``/``; request paths are appended."""
    host_header: str


def parse_base_url(url: str) -> Origin:
    """Parse ``http[s]://host[:port][/prefix]``; anything else is a ValueError naming
    what is wrong (credentials, a query or a fragment in a base URL are refused)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (use api_key_env)")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError("must not carry a query or a fragment")
    host = parts.hostname
    if not host:
        raise ValueError("has no host")
    port = parts.port or (443 if scheme == "https" else 80)  # .port raises ValueError past 65535
    prefix = parts.path.rstrip("/")
    if not safe_path(prefix or "/"):
        raise ValueError("has a path with spaces, controls or non-ASCII characters")
    shown = f"[{host}]" if ":" in host else host
    default = port == (443 if scheme == "https" else 80)
    return Origin(scheme, host, port, prefix, shown if default else f"{shown}:{port}")


def safe_path(path: str) -> bool:
    return path.startswith("/") and path.isascii() and path.isprintable() and " " not in path
