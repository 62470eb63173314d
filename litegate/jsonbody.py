"""The one JSON parser for client bodies: syntax errors and nesting beyond
``MAX_JSON_DEPTH`` become a 400, never a ``RecursionError`` (500).

msgspec decodes recursively and raises ``RecursionError`` somewhere near the
interpreter's recursion limit (~1,000 levels, less the caller's stack); and a document
just under that depth would blow the stack later, when it is re-encoded for the
upstream or the cache key. So depth is bounded well below either.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from litegate.errors import BadRequest

MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays/objects a client body may have (400 beyond)."""

_decode = msgspec.json.decode
# A JSON string with its escapes: brackets inside strings do not nest.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_OPENING = bytes(b for b in range(256) if b not in b"[{")


def nesting_within(body: bytes, max_depth: int) -> bool:
    """Whether syntactically valid JSON ``body`` nests at most ``max_depth`` levels.

    Runs at C speed on the bytes: almost every body opens fewer brackets than the bound
    (answered by one pass that keeps only ``[`` and ``{``); otherwise the brackets outside
    strings are peeled one innermost level per pass, at most ``max_depth`` passes.
    """
    if len(body.translate(None, _NOT_OPENING)) <= max_depth:  # one pass, not two counts
        return True
    if b'"' in body:
        body = _STRING.sub(b"", body)
    brackets = body.translate(_AS_SQUARE, _NOT_BRACKET)
    for _ in range(max_depth):
        if not brackets:
            return True
        brackets = brackets.replace(b"[]", b"")
    return not brackets


def parse_json(body: bytes, *, what: str = "JSON body", code: str | None = "invalid_json",
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode a client's JSON ``body``; :class:`BadRequest` (400) when it is malformed or
    nested deeper than ``max_depth``. ``what`` names the body in the message."""
    try:
        data = _decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed {what}: {exc}", code=code) from None
    except RecursionError:
        pass  # far deeper than the bound: reported below
    else:
        if nesting_within(body, max_depth):
            return data
    raise BadRequest(f"{what} is nested deeper than {max_depth} levels", code=code)
