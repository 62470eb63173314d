"""schemathesis against a live gateway, from the gateway's own ``/openapi.json``: no 5xx,
for the inference API (with an API key) and the admin API (with a write token, on the
test's throwaway database).

The gateway is the real standalone app on a socket, with route ``chat`` on a fake
OpenAI upstream that answers 400 (never 5xx) to what it cannot use, and a tiny ONNX
model ``add`` for ``/v2``: any 5xx schemathesis sees is then the gateway's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
from aiohttp import web

from litegate.openapi import DOCUMENT, document
from tests.fixtures.onnx_models import matmul_add_model
from tests.helpers.cli import apply_config, chat_config, create_key, run_cli
from tests.helpers.servers import FakeUpstream, serve_aiohttp

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
MAX_EXAMPLES = 25  # per operation and phase: ~900 requests, ~20 s here
ADMIN_MAX_EXAMPLES = 10
SEED = 7
# Path parameters and body ``model`` often name what exists (route ``chat``, model ``add``
# and its input ``x``), so that requests get past the 404 into the handlers' parsing.
CONFIG = """
[dictionaries.routes]
values = ["chat"]

[dictionaries.models]
values = ["add"]

[dictionaries.inputs]
values = ["x"]

[parameters]
"path.model" = { dictionary = "routes", probability = 0.6 }
"body.model" = { dictionary = "routes", probability = 0.6 }

[[operations]]
include-path-regex = "^/v2/models/"
parameters = { "path.model" = { dictionary = "models", probability = 0.7 }, "path.version" = "1", "body.inputs[*].name" = { dictionary = "inputs", probability = 0.8 } }
"""


class WellBehavedUpstream(FakeUpstream):
    """The fake upstream, answering 400 instead of crashing on a body it cannot use."""

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body.get("input"), (str, list)):
            return web.json_response({"error": {"message": "bad input", "type": "invalid_request_error",
                                                "code": None}}, status=400)
        return await super().embeddings(request)


def test_openapi_document_is_served_without_a_key(home: Path, make_gateway) -> None:
    server = make_gateway()
    r = httpx.get(server.url + "/openapi.json", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc == document("/admin")
    assert {p: v for p, v in doc["paths"].items() if not p.startswith("/admin/")} == DOCUMENT["paths"]
    assert {"/admin/api/routes/{name}", "/admin/api/keys", "/admin/api/usage"} <= set(doc["paths"])
    assert doc["paths"]["/admin/api/routes"]["post"]["security"] == [{"adminToken": []}]
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/chat/completions", "/v1/aggregate", "/v2/models/{model}/infer"} <= set(doc["paths"])
    # Every status the gateway answers with an error body is documented with its shape.
    responses = doc["paths"]["/v1/chat/completions"]["post"]["responses"]
    for code in ("400", "401", "403", "404", "413", "429", "502", "503", "504"):
        assert responses[code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/OpenAIError"}


def test_schemathesis_finds_no_server_errors(home: Path, tmp_path: Path, make_gateway) -> None:
    fake = WellBehavedUpstream()
    with serve_aiohttp(fake.app()) as port:
        fake.port = port
        apply_config(home, chat_config(fake.base_url))
        model = matmul_add_model(tmp_path / "add.onnx")
        code, _, err = run_cli("models", "add", "add", str(model), home=home)
        assert code == 0, err
        key = create_key(home)
        server = make_gateway()
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG)
        run = subprocess.run(
            [SCHEMATHESIS, "--no-color", "--config-file", str(config), "run",
             server.url + "/openapi.json", "--checks", "not_a_server_error",
             "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
             "--phases", "examples,coverage,fuzzing", "--request-timeout", "20",
             "--header", f"Authorization: Bearer {key}", "--suppress-health-check", "all",
             "--exclude-path-regex", "^/admin/"],
            check=False, capture_output=True, text=True, timeout=100, cwd=tmp_path,  # < pytest-timeout
        )
    output = run.stdout[-12000:] + run.stderr[-3000:]
    assert run.returncode == 0, output
    assert "No issues found" in output or "passed" in output, output


ADMIN_CONFIG = """
[dictionaries.names]
values = ["mock", "chat", "add"]

[parameters]
"path.name" = { dictionary = "names", probability = 0.6 }
"path.key_id" = "1"
"path.version" = "1"
"""


def test_schemathesis_admin_api_finds_no_server_errors(home: Path, tmp_path: Path,
                                                      make_gateway) -> None:
    """Every admin API operation, fuzzed with a write token: deletes, bad bodies, stale
    versions and uploads of random bytes are all 4xx, never a 5xx."""
    apply_config(home, chat_config("http://127.0.0.1:9/v1"))
    model = matmul_add_model(tmp_path / "add.onnx")
    assert run_cli("models", "add", "add", str(model), home=home)[0] == 0
    create_key(home)
    code, out, err = run_cli("admin", "create-token", "fuzz", "--scope", "write", "--json",
                             home=home)
    assert code == 0, err
    token = json.loads(out)["token"]
    server = make_gateway()
    config = tmp_path / "schemathesis-admin.toml"
    config.write_text(ADMIN_CONFIG)
    run = subprocess.run(
        [SCHEMATHESIS, "--no-color", "--config-file", str(config), "run",
         server.url + "/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", str(ADMIN_MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
         "--phases", "examples,coverage,fuzzing", "--request-timeout", "20",
         "--header", f"Authorization: Bearer {token}", "--suppress-health-check", "all",
         "--include-path-regex", "^/admin/api/"],
        check=False, capture_output=True, text=True, timeout=100, cwd=tmp_path,
    )
    output = run.stdout[-12000:] + run.stderr[-3000:]
    assert run.returncode == 0, output
    assert "No issues found" in output or "passed" in output, output
    assert "/admin/api/routes/{name}" in output, output  # the admin operations really ran
