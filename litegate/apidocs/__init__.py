"""``/docs``: an offline API reference that renders ``/openapi.json`` in the browser.

Three small files shipped with the package (``index.html``, ``apidocs.js``,
``apidocs.css``), served by the standalone gateway itself under a CSP that allows only
its own origin: nothing is fetched from a CDN, so the page works on an air-gapped host.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from litegate.asgi_types import Send
from litegate.responses import send_response

HERE = Path(__file__).resolve().parent
FILES = {
    "/docs": ("index.html", b"text/html; charset=utf-8"),
    "/docs/": ("index.html", b"text/html; charset=utf-8"),
    "/docs/apidocs.js": ("apidocs.js", b"text/javascript; charset=utf-8"),
    "/docs/apidocs.css": ("apidocs.css", b"text/css; charset=utf-8"),
}
CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       b"img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@lru_cache(maxsize=len(FILES))
def _read(name: str) -> bytes:
    return (HERE / name).read_bytes()


def is_docs_path(path: str) -> bool:
    return path in FILES


async def send_docs(path: str, send: Send) -> None:
    name, content_type = FILES[path]
    await send_response(send, 200, _read(name), [
        (b"content-type", content_type), (b"content-security-policy", CSP),
        (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
        (b"cache-control", b"no-cache"),
    ])
