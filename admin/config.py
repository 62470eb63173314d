"""What the admin router needs at run time, built once by :func:`create_admin_router`."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import jinja2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from litegate.policies.spend import Spend
from litegate.policies.stats import Stats
from litegate.services.users import LoginThrottle
from litegate.settings import Settings

from .session import SessionSigner

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"


class ModelStatus(Protocol):
    """The part of the ONNX model manager the console reads."""

    def status(self) -> dict[str, Any]: ...


class AdminHost(Protocol):
    """What the console needs from the gateway (a ``Gateway``, or a stand-in in tests)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]: ...

    @property
    def stats(self) -> Stats | None: ...

    @property
    def models(self) -> ModelStatus | None: ...

    @property
    def models_loaded(self) -> bool: ...

    @property
    def spend(self) -> Spend | None:
        """Usage and budget counters (the gateway's limiter storage: Redis or in-process)."""


@dataclass
class AdminContext:
    gateway: AdminHost
    """Provides ``settings``, ``sessionmaker``, ``stats`` and ``models`` (may be ``None``)."""
    base_path: str
    signer: SessionSigner
    env: jinja2.Environment
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    cookie_name: str = "litegate_admin"
    secure_cookies: bool = False
    """Always mark the cookie ``Secure`` (it is anyway when the request came over HTTPS)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> AdminContext:
        # Litestar deep-copies routers on registration; the context (engine, Jinja
        # environment, throttle state) is shared on purpose.
        return self

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.gateway.sessionmaker

    @property
    def models(self) -> ModelStatus | None:
        """The ONNX manager when the gateway has started one (never created from here)."""
        if not self.gateway.models_loaded:
            return None
        return self.gateway.models

    @property
    def stats(self) -> Stats | None:
        return self.gateway.stats

    @property
    def settings(self) -> Settings:
        return self.gateway.settings

    def url(self, path: str = "") -> str:
        return f"{self.base_path}{path or '/'}"


def make_environment(templates_dir: str | Path | None = None) -> jinja2.Environment:
    """Package templates behind the deployer's directory (``litegate_admin/<page>.html``)."""
    loaders: list[jinja2.BaseLoader] = []
    if templates_dir:
        loaders.append(jinja2.FileSystemLoader(str(templates_dir)))
    loaders.append(jinja2.FileSystemLoader(str(TEMPLATES_DIR)))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["dt"] = _format_dt
    env.filters["hour"] = _format_hour
    env.filters["size"] = _format_size
    env.filters["pct"] = _format_pct
    env.filters["ms"] = _format_ms
    env.filters["tojson_pretty"] = _tojson_pretty
    env.globals["changes"] = changes
    return env


def resolve_secret(settings: Settings) -> str:
    """``settings.secret_key``, else a key generated once and kept under ``home``."""
    if settings.secret_key:
        return settings.secret_key
    home = Path(settings.home)
    path = home / "secret_key"
    for _ in range(50):
        try:
            secret = path.read_text().strip()
        except FileNotFoundError:
            secret = ""
        if secret:
            return secret
        home.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: concurrent workers agree on one key.
        tmp = home / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_urlsafe(48).encode())
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    raise RuntimeError(f"could not read or create {path}")


def _format_dt(value: datetime | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def _format_hour(epoch: Any) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%d %H:00")


def _format_size(value: Any) -> str:
    try:
        size = float(value)
    except (TypeError, ValueError):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _format_pct(value: Any) -> str:
    if value is None:
        return "—"
    return f"{float(value) * 100:.1f}%"


def _format_ms(value: Any) -> str:
    if value is None:
        return "—"
    return f"{float(value):.1f} ms"


def _tojson_pretty(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and any(isinstance(i, dict) for i in value):
        for index, item in enumerate(value):
            label = item.get("name") or item.get("model") or item.get("version") if isinstance(
                item, dict) else None
            _flatten(item, f"{prefix}[{label if label is not None else index}]", out)
    else:
        out[prefix] = value


def changes(before: Any, after: Any, limit: int = 5) -> list[tuple[str, str, str]]:
    """``(field, old, new)`` for what an audit entry changed (for the log's summary)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return []
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    _flatten(before, "", old)
    _flatten(after, "", new)
    out = []
    for key in list(dict.fromkeys([*old, *new])):
        if old.get(key) != new.get(key):
            out.append((key, _short(old.get(key, "—")), _short(new.get(key, "—"))))
    return out[:limit]


def _short(value: Any) -> str:
    text = "—" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "…"
