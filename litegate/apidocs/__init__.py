"""``/docs``: an offline API reference that renders ``/openapi.json`` in the browser.

Three small files shipped with the package (``index.html``, ``apidocs.js``,
``apidocs.css``), served by the gateway itself under a CSP that allows only its own
origin: nothing is fetched from a CDN, so the page works on an air-gapped host.

The standalone gateway serves them at the root (``/docs``, ``/openapi.json``); a mounted
gateway serves them under its own prefix (``/litegate/docs``, ``/litegate/openapi.json``)
so the host app's ``/docs`` and ``/openapi.json`` stay the host's. :class:`DocsSite`
is that one set of paths; the page names the document it renders in its HTML, so the
same script works under any prefix.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from litegate.asgi_types import Send
from litegate.responses import send_response

HERE = Path(__file__).resolve().parent
MOUNTED_PREFIX = "/litegate"
"""Where a mounted gateway (plug-in, ASGI middleware, WSGI bridge) serves its docs."""
_HTML = b"text/html; charset=utf-8"
CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"same-origin"), (b"cache-control", b"no-cache")]


@lru_cache(maxsize=8)
def _read(name: str, prefix: str) -> bytes:
    body = (HERE / name).read_bytes()
    if name == "index.html" and prefix:
        body = (body.replace(b'"/docs/', b'"' + prefix.encode() + b"/docs/")
                .replace(b'"/openapi.json"', b'"' + prefix.encode() + b'/openapi.json"')
                .replace(b">/openapi.json<", b">" + prefix.encode() + b"/openapi.json<"))
    return body


def normalize_prefix(prefix: str) -> str:
    """``"litegate/"`` → ``"/litegate"``; ``""`` or ``"/"`` → ``""`` (the root)."""
    stripped = prefix.strip("/")
    return "/" + stripped if stripped else ""


class DocsSite:
    """``{prefix}/openapi.json`` and ``{prefix}/docs`` with its two assets."""

    __slots__ = ("files", "openapi_path", "paths", "prefix")

    def __init__(self, prefix: str = "") -> None:
        self.prefix = normalize_prefix(prefix)
        self.openapi_path = self.prefix + "/openapi.json"
        base = self.prefix + "/docs"
        self.files = {
            base: ("index.html", _HTML),
            base + "/": ("index.html", _HTML),
            base + "/apidocs.js": ("apidocs.js", b"text/javascript; charset=utf-8"),
            base + "/apidocs.css": ("apidocs.css", b"text/css; charset=utf-8"),
        }
        self.paths = frozenset(self.files) | {self.openapi_path}

    def is_docs_path(self, path: str) -> bool:
        return path in self.files

    async def send_docs(self, path: str, send: Send) -> None:
        name, content_type = self.files[path]
        await send_response(send, 200, _read(name, self.prefix),
                            [(b"content-type", content_type), *HEADERS])

    async def send_openapi(self, send: Send, *, admin_path: str | None, health: bool = True) -> None:
        from litegate.openapi import document_json  # built on first use

        await send_response(send, 200, document_json(admin_path, health=health),
                            [(b"content-type", b"application/json")])

    async def send(self, path: str, send: Send, *, admin_path: str | None, health: bool = True) -> None:
        """Answer one of :attr:`paths`."""
        if path == self.openapi_path:
            await self.send_openapi(send, admin_path=admin_path, health=health)
        else:
            await self.send_docs(path, send)


ROOT = DocsSite()


def is_docs_path(path: str) -> bool:
    return ROOT.is_docs_path(path)


async def send_docs(path: str, send: Send) -> None:
    await ROOT.send_docs(path, send)
