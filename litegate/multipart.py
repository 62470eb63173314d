"""``multipart/form-data`` bodies of the OpenAI upload endpoints (audio transcriptions and
translations, image edits and variations), whose ``model`` is a form field.

The body is already read (and bounded) when it is parsed here, whole, by
python-multipart; a malformed one is a 400. What goes upstream is rebuilt from the
parsed parts with a fresh boundary (:meth:`Form.encode`): a part's name, file name,
media type and bytes travel, nothing else the client wrote (no other part headers, no
epilogue; a preamble is refused), so no unparsed client bytes ever reach an upstream.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from litegate.errors import BadRequest

MAX_FORM_PARTS = 64
"""Most parts a form may have (400 beyond); OpenAI's upload forms have about a dozen."""
MAX_PART_HEADERS = 8
MAX_PART_HEADER_BYTES = 4096
_CODE = "invalid_multipart"
_PARSER_LOG = logging.getLogger("python_multipart")
# RFC 2046 §5.1.1: 1 to 70 characters from this set, not ending in a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_TOKEN = rb"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}"
_MEDIA_TYPE = re.compile(_TOKEN + b"/" + _TOKEN)
_DEFAULT_FILE_TYPE = b"application/octet-stream"
# The HTML form encoding's escapes for a quoted name (WHATWG "multipart/form-data"), and
# the backslash: parsers that honour quoted-pairs (python-multipart, so Starlette/FastAPI
# providers) read a name ending in '\' as an escaped closing quote, and a later
# 'name=' smuggled in the file name would then rename the part (a second 'model').
_QUOTED = str.maketrans({"\r": "%0D", "\n": "%0A", '"': "%22", "\\": "%5C"})
_ParseHeader = Callable[[bytes | None], tuple[bytes, dict[bytes, bytes]]]


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    data: bytes
    filename: str | None = None
    """Set for a file part (``filename=`` in its Content-Disposition), ``None`` for a field."""
    content_type: bytes = _DEFAULT_FILE_TYPE
    """A file's media type (a well-formed ``type/subtype``, else the default)."""


class Form:
    __slots__ = ("parts",)

    def __init__(self, parts: tuple[Part, ...]) -> None:
        self.parts = parts

    def text(self, name: str) -> str | None:
        """The one text field ``name`` (``None`` when absent); 400 when it is a file, sent
        twice, or not UTF-8."""
        found = [p for p in self.parts if p.name == name]
        if not found:
            return None
        if len(found) > 1 or found[0].filename is not None:
            raise BadRequest(f"'{name}' must be one text field of the form", code=_CODE)
        try:
            return found[0].data.decode()
        except UnicodeDecodeError:
            raise BadRequest(f"form field '{name}' is not UTF-8", code=_CODE) from None

    @property
    def text_bytes(self) -> int:
        """Size of the text fields (the prompt, options): what is text in the request."""
        return sum(len(p.data) for p in self.parts if p.filename is None)

    def encode(self, replace: dict[str, str]) -> tuple[bytes, str]:
        """The form as a fresh body and its Content-Type, with the text fields named in
        ``replace`` given those values (one part each, in place)."""
        boundary = b"litegate-" + secrets.token_hex(16).encode()
        while any(boundary in p.data for p in self.parts):  # ~never: 128 random bits
            boundary = b"litegate-" + secrets.token_hex(16).encode()
        out: list[bytes] = []
        start = f"--{boundary.decode()}\r\nContent-Disposition: form-data; name="
        for part in self.parts:
            head = f'{start}"{_quote(part.name)}"'
            value = replace.get(part.name)
            if part.filename is not None:
                head += (f'; filename="{_quote(part.filename)}"\r\n'
                         f"Content-Type: {part.content_type.decode()}")
                value = None
            data = value.encode() if value is not None else part.data
            out += [head.encode(), b"\r\n\r\n", data, b"\r\n"]
        out.append(b"--" + boundary + b"--\r\n")
        return b"".join(out), "multipart/form-data; boundary=" + boundary.decode()


def _quote(value: str) -> str:
    return value.translate(_QUOTED)


def parse_form(body: bytes, content_type: bytes | None) -> Form:
    """Parse a whole ``multipart/form-data`` body; 400 (``invalid_multipart``) for another
    content type, a missing or invalid boundary, broken framing, a part that is not
    ``form-data`` with a name, or more than :data:`MAX_FORM_PARTS` parts."""
    from python_multipart.exceptions import MultipartParseError  # on the first upload only
    from python_multipart.multipart import MultipartParser, parse_options_header

    if not _PARSER_LOG.handlers:
        # Its warning repeats the 400's message; without a handler it would reach stderr
        # as a bare line (logging's last resort) for every malformed upload.
        _PARSER_LOG.addHandler(logging.NullHandler())
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise BadRequest("this endpoint takes a multipart/form-data body", code=_CODE)
    boundary = options.get(b"boundary", b"").decode("latin-1")
    if not _BOUNDARY.fullmatch(boundary):
        raise BadRequest("the multipart/form-data content type needs a valid boundary", code=_CODE)

    parts: list[Part] = []
    headers: dict[bytes, bytes] = {}
    field: list[bytes] = []
    value: list[bytes] = []
    data: list[bytes] = []
    ended = False

    def on_part_begin() -> None:
        if len(parts) >= MAX_FORM_PARTS:
            raise BadRequest(f"a form may have at most {MAX_FORM_PARTS} parts", code=_CODE)
        headers.clear()
        data.clear()

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        field.append(buf[start:end])

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        value.append(buf[start:end])

    def on_header_end() -> None:
        headers[b"".join(field).lower()] = b"".join(value)
        field.clear()
        value.clear()

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        data.append(buf[start:end])

    def on_part_end() -> None:
        parts.append(_part(headers, b"".join(data), parse_options_header))

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(
        boundary.encode("latin-1"),
        {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
         "on_header_value": on_header_value, "on_header_end": on_header_end,
         "on_part_data": on_part_data, "on_part_end": on_part_end, "on_end": on_end},
        max_header_count=MAX_PART_HEADERS, max_header_size=MAX_PART_HEADER_BYTES,
    )
    try:
        parser.write(body)
    except MultipartParseError as exc:
        raise BadRequest(f"malformed multipart/form-data body: {exc}", code=_CODE) from None
    if not ended:
        raise BadRequest("malformed multipart/form-data body: it ends before its closing "
                         "boundary", code=_CODE)
    return Form(tuple(parts))


def _part(headers: dict[bytes, bytes], data: bytes, parse: _ParseHeader) -> Part:
    disposition, params = parse(headers.get(b"content-disposition"))
    name = params.get(b"name")
    if disposition != b"form-data" or not name:
        raise BadRequest("every part needs 'Content-Disposition: form-data' with a name",
                         code=_CODE)
    filename = params.get(b"filename")
    media = parse(headers.get(b"content-type"))[0] if filename is not None else b""
    try:
        return Part(name=name.decode(), data=data,
                    filename=filename.decode() if filename is not None else None,
                    content_type=media if _MEDIA_TYPE.fullmatch(media) else _DEFAULT_FILE_TYPE)
    except UnicodeDecodeError:
        raise BadRequest("part names and file names must be UTF-8", code=_CODE) from None
