"""The OpenAI upload endpoints (``multipart/form-data``, the route in the ``model`` form
field): audio transcriptions and translations, image edits and variations, through the
official ``openai`` client against the real gateway and a fake provider that records
every part it receives."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from aiohttp import BodyPartReader, MultipartReader, StreamReader, web

from litegate.multipart import MAX_FORM_PARTS, MAX_PART_HEADER_BYTES, MAX_PART_HEADERS
from tests.helpers.cli import apply_config, create_key
from tests.helpers.servers import free_port, serve_aiohttp
from tests.helpers.windows import clear_of_minute_edge

# Bytes that look like multipart framing, NULs and every byte value: they must arrive as sent.
AUDIO = b"RIFF" + bytes(range(256)) * 8 + b"\r\n--boundary\r\n\r\n--" + b"\x00" * 64
IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) * 4 + b"\r\n--x--\r\n"
BODY_BOUND = 64 * 1024
USAGE = {"type": "tokens", "input_tokens": 14, "output_tokens": 3, "total_tokens": 17}


@dataclass
class Received:
    path: str
    content_type: str
    fields: dict[str, list[str]]
    files: dict[str, list[tuple[str | None, str, bytes]]]

    @property
    def model(self) -> str:
        (model,) = self.fields["model"]
        return model


@dataclass
class FakeProvider:
    """An OpenAI-compatible provider for the four upload endpoints."""

    seen: list[Received] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * BODY_BOUND)
        for path in ("/v1/audio/transcriptions", "/v1/audio/translations"):
            app.router.add_post(path, self.audio)
        for path in ("/v1/images/edits", "/v1/images/variations"):
            app.router.add_post(path, self.images)
        return app

    async def _receive(self, request: web.Request) -> Received:
        got = Received(request.path, request.headers["Content-Type"], {}, {})
        raw = await request.read()
        self.raw.append(raw)
        # The body is read once, kept raw, and parsed by aiohttp's own multipart reader.
        stream = StreamReader(request.protocol, len(raw) + 1, loop=asyncio.get_running_loop())
        stream.feed_data(raw)
        stream.feed_eof()
        reader = MultipartReader(request.headers, stream)
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader) and part.name is not None
            data = await part.read()
            if part.filename is None:
                got.fields.setdefault(part.name, []).append(data.decode())
            else:
                got.files.setdefault(part.name, []).append(
                    (part.filename, part.headers.get("Content-Type", ""), bytes(data)))
        self.seen.append(got)
        return got

    async def audio(self, request: web.Request) -> web.StreamResponse:
        got = await self._receive(request)
        text = f"heard {len(got.files['file'][0][2])} bytes on {got.model}"
        if got.fields.get("prompt") == ["big"]:
            return web.Response(text="x" * (2 * BODY_BOUND), content_type="text/plain")
        if got.fields.get("stream") == ["true"]:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            events = [{"type": "transcript.text.delta", "delta": word + " "}
                      for word in text.split()]
            events.append({"type": "transcript.text.done", "text": text, "usage": USAGE})
            for event in events:
                await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            return resp
        fmt = got.fields.get("response_format", ["json"])[0]
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if fmt == "vtt":
            return web.Response(text=f"WEBVTT\n\n00:00.000 --> 00:01.000\n{text}\n",
                                content_type="text/vtt")
        return web.json_response({"text": text, "usage": USAGE})

    async def images(self, request: web.Request) -> web.Response:
        got = await self._receive(request)
        data = [{"b64_json": base64.b64encode(f[2][:16]).decode()} for f in
                got.files.get("image[]", got.files.get("image", []))]
        return web.json_response({"created": 1, "data": data})


@pytest.fixture
def provider():
    fake = FakeProvider()
    with serve_aiohttp(fake.app()) as port:
        yield fake, f"http://127.0.0.1:{port}/v1"


def _config(base_url: str, **stt: Any) -> dict[str, Any]:
    return {
        "upstreams": [
            {"name": "prov", "kind": "openai", "base_url": base_url},
            {"name": "dead", "kind": "openai", "max_retries": 0,
             "base_url": f"http://127.0.0.1:{free_port()}/v1"},
        ],
        "routes": [
            {"name": "stt", "variants": [{"upstream": "prov", "model": "whisper-large-v3"}], **stt},
            {"name": "img", "variants": [{"upstream": "prov", "model": "dall-e-2"}]},
            {"name": "stt-fb", "variants": [{"upstream": "dead", "model": "gone"}],
             "fallback": "stt"},
        ],
    }


def _apply(home, cfg: dict[str, Any]) -> None:
    code, _, err = apply_config(home, cfg)
    assert code == 0, err


def _client(server, key: str, base: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + base, api_key=key, max_retries=0)


def test_uploads_reach_the_variant_with_its_model_and_the_files_intact(home, provider,
                                                                      make_gateway):
    fake, base_url = provider
    _apply(home, _config(base_url, cache={"ttl_s": 60}))
    key = create_key(home)
    server = make_gateway()
    c = _client(server, key)

    raw = c.audio.transcriptions.with_raw_response.create(
        model="stt", file=("clip.wav", AUDIO, "audio/wav"), language="en",
        timestamp_granularities=["word", "segment"], response_format="json")
    assert raw.headers["x-litegate-variant"] == "whisper-large-v3"
    assert raw.parse().text == f"heard {len(AUDIO)} bytes on whisper-large-v3"
    got = fake.seen[-1]
    assert got.path == "/v1/audio/transcriptions" and got.model == "whisper-large-v3"
    assert got.files == {"file": [("clip.wav", "audio/wav", AUDIO)]}
    assert got.fields["language"] == ["en"] and got.fields["response_format"] == ["json"]
    assert got.fields["timestamp_granularities[]"] == ["word", "segment"]
    # The form is rebuilt with the gateway's own boundary, not passed through.
    assert "boundary=litegate-" in got.content_type

    # Text formats come back as the provider sent them, with their content type.
    text = c.audio.translations.with_raw_response.create(
        model="stt", file=("clip.mp3", AUDIO, "audio/mpeg"), response_format="text")
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text == f"heard {len(AUDIO)} bytes on whisper-large-v3\n"
    vtt = c.audio.transcriptions.create(model="stt", file=("clip.wav", AUDIO),
                                        response_format="vtt")
    assert isinstance(vtt, str) and vtt.startswith("WEBVTT")
    assert fake.seen[-2].path == "/v1/audio/translations"
    assert fake.seen[-2].files["file"] == [("clip.mp3", "audio/mpeg", AUDIO)]

    edit = c.images.edit(model="img", image=("cat.png", IMAGE, "image/png"), prompt="a hat",
                         mask=("mask.png", IMAGE[::-1], "image/png"), n=1)
    assert base64.b64decode(edit.data[0].b64_json) == IMAGE[:16]
    got = fake.seen[-1]
    assert got.path == "/v1/images/edits" and got.model == "dall-e-2"
    assert got.fields["prompt"] == ["a hat"] and got.fields["n"] == ["1"]
    assert got.files["image"] == [("cat.png", "image/png", IMAGE)]
    assert got.files["mask"] == [("mask.png", "image/png", IMAGE[::-1])]
    variation = c.images.create_variation(model="img", image=("cat.png", IMAGE, "image/png"))
    assert base64.b64decode(variation.data[0].b64_json) == IMAGE[:16]
    assert (fake.seen[-1].path, fake.seen[-1].model) == ("/v1/images/variations", "dall-e-2")

    # The unprefixed aliases, as clients pointed at the bare host call them.
    bare = _client(server, key, base="")
    assert bare.audio.transcriptions.create(model="stt", file=("a.wav", AUDIO)).text
    assert bare.images.create_variation(model="img", image=("cat.png", IMAGE)).data
    assert [(r.path, r.model) for r in fake.seen[-2:]] == [
        ("/v1/audio/transcriptions", "whisper-large-v3"), ("/v1/images/variations", "dall-e-2")]

    # Not cached although the route caches: each identical upload reaches the provider.
    before = len(fake.seen)
    for _ in range(2):
        again = c.audio.transcriptions.with_raw_response.create(model="stt", file=("a.wav", AUDIO))
        assert "x-cache" not in again.headers
    assert len(fake.seen) == before + 2

    metrics = httpx.get(server.url + "/metrics").text
    stt = 'litegate_requests_total{route="stt",status="200",variant="whisper-large-v3"} 6.0'
    assert stt in metrics
    assert 'litegate_requests_total{route="img",status="200",variant="dall-e-2"} 3.0' in metrics


def test_a_streamed_transcription_is_relayed_event_by_event(home, provider, make_gateway):
    fake, base_url = provider
    _apply(home, _config(base_url))
    key = create_key(home)
    server = make_gateway()
    events = list(_client(server, key).audio.transcriptions.create(
        model="stt", file=("clip.wav", AUDIO), stream=True))
    assert [e.type for e in events] == ["transcript.text.delta"] * 5 + ["transcript.text.done"]
    assert events[-1].text == f"heard {len(AUDIO)} bytes on whisper-large-v3"
    assert fake.seen[-1].fields["stream"] == ["true"]
    # The usage in the final event is what the token counters record.
    metrics = httpx.get(server.url + "/metrics").text
    stt = 'litegate_tokens_total{kind="%s",route="stt",variant="whisper-large-v3"} %s'
    assert stt % ("prompt", "14.0") in metrics and stt % ("completion", "3.0") in metrics


def test_upload_policies_scope_limits_and_bounds(home, provider, make_gateway):
    fake, base_url = provider
    _apply(home, _config(base_url))
    key = create_key(home, "scoped", "--routes", "stt,stt-fb", "--limit", "3/minute")
    other = create_key(home, "other")
    server = make_gateway(max_body_bytes=BODY_BOUND, max_upstream_body_bytes=BODY_BOUND)
    clear_of_minute_edge()  # exact counts: not across a window boundary
    c = _client(server, key)

    assert c.audio.transcriptions.create(model="stt", file=("a.wav", AUDIO)).text
    with pytest.raises(openai.PermissionDeniedError):
        c.images.create_variation(model="img", image=("cat.png", IMAGE))
    with pytest.raises(openai.NotFoundError):  # an unknown model counts towards the key's limit
        c.audio.translations.create(model="nope", file=("a.wav", AUDIO))
    # A fallback replays the form: the dead route's answer comes from 'stt'.
    fb = c.audio.transcriptions.with_raw_response.create(model="stt-fb", file=("a.wav", AUDIO))
    assert fb.headers["x-litegate-fallback"] == "stt"
    assert fb.parse().text == f"heard {len(AUDIO)} bytes on whisper-large-v3"
    with pytest.raises(openai.RateLimitError) as limited:
        c.audio.transcriptions.create(model="stt", file=("a.wav", AUDIO))
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert len(fake.seen) == 2  # neither the 403, the 404 nor the 429 reached the provider

    o = _client(server, other)
    with pytest.raises(openai.APIStatusError) as too_large:
        o.audio.transcriptions.create(model="stt", file=("big.wav", b"\x00" * (BODY_BOUND + 1)))
    assert too_large.value.status_code == 413
    assert too_large.value.body["code"] == "payload_too_large"
    with pytest.raises(openai.InternalServerError) as unbounded:
        o.audio.transcriptions.create(model="stt", file=("a.wav", AUDIO), prompt="big",
                                      response_format="text")
    assert unbounded.value.status_code == 502
    assert unbounded.value.body["code"] == "upstream_body_too_large"
    assert len(fake.seen) == 3


def _form(*parts: bytes, boundary: bytes = b"b0undary") -> bytes:
    framed = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return framed + b"--" + boundary + b"--\r\n"


MODEL = b'Content-Disposition: form-data; name="model"\r\n\r\nstt'
FILE = b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF'
MULTIPART = "multipart/form-data; boundary=b0undary"
BROKEN = [
    ("no boundary", "multipart/form-data", _form(MODEL, FILE)),
    ("not a form", "application/json", b'{"model": "stt"}'),
    ("no content type", None, _form(MODEL, FILE)),
    ("missing model", MULTIPART, _form(FILE)),
    ("empty model", MULTIPART,
     _form(b'Content-Disposition: form-data; name="model"\r\n\r\n', FILE)),
    ("model is a file", MULTIPART,
     _form(b'Content-Disposition: form-data; name="model"; filename="m"\r\n\r\nstt', FILE)),
    ("model twice", MULTIPART, _form(MODEL, MODEL, FILE)),
    ("model not UTF-8", MULTIPART,
     _form(b'Content-Disposition: form-data; name="model"\r\n\r\n\xff\xfe', FILE)),
    ("no closing boundary", MULTIPART, _form(MODEL, FILE)[:-12]),
    ("wrong boundary", MULTIPART, _form(MODEL, FILE, boundary=b"other")),
    ("garbage", MULTIPART, b"\x00\x01 not multipart at all"),
    ("empty body", MULTIPART, b""),
    ("part without a name", MULTIPART, _form(MODEL, b"Content-Disposition: form-data\r\n\r\nx")),
    ("not form-data", MULTIPART,
     _form(b'Content-Disposition: attachment; name="model"\r\n\r\nstt')),
    ("too many part headers", MULTIPART,
     _form(b"".join(b"X-H%d: 1\r\n" % i for i in range(MAX_PART_HEADERS)) + MODEL, FILE)),
    ("a part header too long", MULTIPART,
     _form(b"X-Long: " + b"a" * MAX_PART_HEADER_BYTES + b"\r\n" + MODEL, FILE)),
    ("too many parts", MULTIPART,
     _form(MODEL, *[b'Content-Disposition: form-data; name="x"\r\n\r\n1'] * MAX_FORM_PARTS)),
]


def test_broken_multipart_bodies_are_400s_in_the_openai_shape(home, provider, make_gateway):
    fake, base_url = provider
    _apply(home, _config(base_url))
    key = create_key(home)
    server = make_gateway()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as http:
        for case, content_type, body in BROKEN:
            headers = {"content-type": content_type} if content_type else {}
            r = http.post("/v1/audio/transcriptions", content=body, headers=headers)
            assert r.status_code == 400, (case, r.status_code, r.text)
            error = r.json()["error"]
            assert error["type"] == "invalid_request_error" and error["message"], case
        # The same framing, well-formed, goes through: the cases above fail for their flaw.
        ok = http.post("/v1/audio/transcriptions", content=_form(MODEL, FILE),
                       headers={"content-type": MULTIPART})
        assert ok.status_code == 200 and ok.json()["text"] == "heard 4 bytes on whisper-large-v3"
    assert len(fake.seen) == 1


def test_a_shadow_variant_gets_a_copy_of_the_form(home, provider, make_gateway):
    fake, base_url = provider
    cfg = _config(base_url)
    cfg["routes"][0]["variants"].append({"upstream": "prov", "model": "whisper-next", "weight": 0})
    cfg["routes"][0]["shadow"] = "whisper-next"
    _apply(home, cfg)
    key = create_key(home)
    server = make_gateway()
    assert _client(server, key).audio.transcriptions.create(model="stt", file=("a.wav", AUDIO)).text
    deadline = time.monotonic() + 10
    while len(fake.seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sorted(r.model for r in fake.seen) == ["whisper-large-v3", "whisper-next"]
    assert all(r.files["file"][0][2] == AUDIO for r in fake.seen)


def test_only_parsed_parts_are_forwarded(home, provider, make_gateway):
    """A quote in a file name cannot rename the part, and an epilogue or extra part
    headers never reach the provider: the form is rebuilt from what was read."""
    fake, base_url = provider
    _apply(home, _config(base_url))
    key = create_key(home)
    server = make_gateway()
    body = (_form(MODEL, b'Content-Disposition: form-data; name="file"; '
                           b'filename="x\\"; name=\\"model\\".wav"\r\n'
                           b"Content-Type: audio/wav\r\nX-Smuggled: yes\r\n\r\nRIFF")
            + b"epilogue for nobody")
    r = httpx.post(server.url + "/v1/audio/transcriptions", content=body,
                   headers={"Authorization": f"Bearer {key}", "content-type": MULTIPART})
    assert r.status_code == 200, r.text
    (got,) = fake.seen
    assert got.model == "whisper-large-v3"
    assert got.files == {"file": [('x%22; name=%22model%22.wav', "audio/wav", b"RIFF")]}
    assert fake.raw[0].count(b"Content-Disposition") == 2
    assert b"epilogue" not in fake.raw[0]
    assert b"X-Smuggled" not in fake.raw[0]


def test_a_backslash_in_a_name_cannot_smuggle_a_model_field_to_a_starlette_provider(
    home, make_gateway
):
    """Starlette (python-multipart: FastAPI, vLLM) reads ``\\"`` in a quoted parameter as
    an escaped quote and lets a later ``name=`` win. Before the fix a file part named
    ``a\\`` with file name ``; name=model; x=`` was rebuilt as ``name="a\\"; filename=";
    name=model; x="``: the provider saw a second, text ``model`` field holding the file's
    bytes (the client's own model choice), and read it last."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.helpers.servers import ThreadServer

    seen: list[list[tuple[str, str]]] = []

    async def transcribe(request: Request) -> JSONResponse:
        form = await request.form()
        seen.append([(k, v if isinstance(v, str) else f"file:{v.filename}")
                     for k, v in form.multi_items()])
        return JSONResponse({"text": f"on {form['model']}"})

    app = Starlette(routes=[Route("/v1/audio/transcriptions", transcribe, methods=["POST"])])
    with ThreadServer(app) as provider:
        _apply(home, _config(provider.url + "/v1"))
        key = create_key(home)
        server = make_gateway()
        body = _form(MODEL, b'Content-Disposition: form-data; filename="; name=model; x="; '
                            b'name="a\\\\"\r\n\r\ngpt-4o-transcribe-pricey')
        r = httpx.post(server.url + "/v1/audio/transcriptions", content=body,
                       headers={"Authorization": f"Bearer {key}", "content-type": MULTIPART})
    assert r.status_code == 200, r.text
    assert r.json() == {"text": "on whisper-large-v3"}
    (fields,) = seen
    assert [v for k, v in fields if k == "model"] == ["whisper-large-v3"]
    assert len(fields) == 2 and fields[1][1].startswith("file:")
