"""The admin HTTP API (``/admin/api/``) on the real standalone gateway over a socket:
admin tokens from the real CLI, the official ``openai`` client and ``tritonclient`` for
the traffic, the gateway's own counters for usage."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import tritonclient.http as triton

from tests.e2e.support import create_console_user, http_login
from tests.fixtures.onnx_models import corrupt_file, matmul_add_model, matmul_add_reference
from tests.helpers.cli import run_cli
from tests.helpers.servers import run_fake_upstream


def create_token(home: Path, name: str, scope: str, *args: str) -> str:
    code, out, err = run_cli("admin", "create-token", name, "--scope", scope, "--json", *args,
                             home=home)
    assert code == 0, err
    row = json.loads(out)
    assert row["name"] == name and row["scope"] == scope and row["token"].startswith("lga-")
    return str(row["token"])


class Api:
    """``httpx`` against ``/admin/api`` with a bearer token (and no cookies)."""

    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url + "/admin/api", headers=headers, timeout=30)

    def __getattr__(self, method: str) -> Any:
        return getattr(self.http, method)


def wait_until(check: Any, what: str, timeout: float = 10) -> Any:
    """Poll ``check`` until it returns a truthy value (the gateway's reload interval)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json() if response.content else None


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body["error"], str) and body["error"], body
    return body


@pytest.fixture
def served(make_gateway: Any) -> Any:
    """The standalone gateway (tokens are created first: the CLI migrates the database)."""
    return make_gateway


def test_round_trip_route_model_key_traffic_usage(home: Path, tmp_path: Path, served: Any) -> None:
    """The issue's round trip in one test, every step through the API: create an upstream
    and a route → upload two versions of a model, activate the second → create a key →
    use the key (openai chat, tritonclient inference) → read usage and the audit log."""
    token = create_token(home, "deployer", "write")
    server = served()
    api = Api(server.url, token)
    with run_fake_upstream() as fake:
        ok(api.post("/upstreams", json={"name": "mock", "kind": "openai",
                                       "base_url": fake.base_url, "timeout_s": 5}), 201)
        ok(api.post("/upstreams", json={"name": "local", "kind": "onnx"}), 201)
        route = ok(api.post("/routes", json={
            "name": "chat", "variants": [{"upstream": "mock", "model": "small-model",
                                          "price": {"input_per_1m": 1.0,
                                                    "output_per_1m": 2.0}}]}), 201)
        assert route["row_version"] == 1 and route["variants"][0]["model"] == "small-model"

        for offset, version in ((0.0, "1"), (5.0, "2")):
            onnx_file = matmul_add_model(tmp_path / f"add-{version}.onnx", offset=offset)
            added = ok(api.post("/models/add/versions", content=onnx_file.read_bytes(),
                                headers={"Content-Type": "application/octet-stream"}), 201)
            assert added["version"] == version and added["signature"]["inputs"][0]["name"] == "x"
        model = ok(api.get("/models/add"))
        assert model["active_version"] == "1" and [v["version"] for v in model["versions"]] == ["1", "2"]
        activated = ok(api.post("/models/add/activate", json={"version": "2"},
                                headers={"If-Match": f'"{model["row_version"]}"'}))
        assert activated["active_version"] == "2" and activated["history"] == ["1"]
        ok(api.post("/routes", json={"name": "add", "variants": [
            {"upstream": "local", "model": "add"}]}), 201)

        created = ok(api.post("/keys", json={"name": "app", "routes": ["chat", "add"],
                                             "limits": ["100/minute"]}), 201)
        secret = created["secret"]
        assert secret.startswith("lg-") and created["limits"] == ["100/minute"]
        listed = ok(api.get("/keys"))
        assert listed["total"] == 1 and "secret" not in listed["keys"][0]
        assert all(secret not in json.dumps(k) for k in listed["keys"])

        client = openai.OpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0)

        answer = wait_until(lambda: _chat_or_none(client), "the route and key to reach the gateway")
        assert answer.usage.prompt_tokens == 5 and answer.usage.completion_tokens == 7

        infer = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
        x = np.ones((1, 4), np.float32)
        inp = triton.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(x)
        result = wait_until(lambda: _infer_or_none(infer, inp, secret), "model add on the gateway")
        np.testing.assert_allclose(result.as_numpy("y"), matmul_add_reference(x, offset=5.0),
                                   rtol=1e-5)  # version 2, the one activated through the API

        report = ok(api.get("/usage", params={"since": "1d"}))
        rows = [r for r in report["usage"] if r["key"] == "app" and r["route"] == "chat"]
        assert len(rows) == 1, report
        assert rows[0]["requests"] == 1 and rows[0]["prompt_tokens"] == 5
        assert rows[0]["completion_tokens"] == 7
        assert rows[0]["cost_usd"] == pytest.approx((5 * 1.0 + 7 * 2.0) / 1e6)

    audit = ok(api.get("/audit", params={"actor": "token:deployer", "limit": 50}))
    seen = {(e["entity_type"], e["action"], e["entity_name"]) for e in audit["entries"]}
    assert {("upstream", "create", "mock"), ("route", "create", "chat"),
            ("model", "add_version", "add"), ("model", "activate", "add"),
            ("api_key", "create", "app")} <= seen, seen
    assert audit["total"] == len(audit["entries"])
    assert all(secret not in json.dumps(e) for e in audit["entries"])


def _chat_or_none(client: openai.OpenAI) -> Any:
    """A chat completion on route ``chat``, or None while the gateway has not picked the
    route or the key up yet."""
    try:
        return client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}])
    except (openai.NotFoundError, openai.AuthenticationError):
        return None


def _infer_or_none(client: Any, inp: Any, key: str) -> Any:
    try:
        return client.infer("add", [inp], headers={"Authorization": f"Bearer {key}"})
    except Exception as exc:  # tritonclient's one exception type
        if "404" in str(exc) or "not found" in str(exc).lower():
            return None
        raise


def test_scopes_revocation_and_cookies(home: Path, served: Any) -> None:
    writer = create_token(home, "writer", "write")
    reader = create_token(home, "reader", "read")
    create_console_user(home, "alice", "correct horse battery")
    server, replica = served(), served()  # two gateways on one database
    ro, rw, anonymous = Api(server.url, reader), Api(server.url, writer), Api(server.url, None)
    rw_replica = Api(replica.url, writer)
    assert ok(rw_replica.get("/upstreams")) == []

    body = error(anonymous.get("/routes"), 401)
    assert body["code"] == "invalid_admin_token"
    error(Api(server.url, "lga-not-a-real-token").get("/routes"), 401)
    assert ok(ro.get("/routes")) == []
    refused = error(ro.post("/upstreams", json={"name": "u", "kind": "openai",
                                                "base_url": "http://127.0.0.1:9/v1"}), 403)
    assert "read" in refused["error"]
    error(ro.delete("/routes/anything"), 403)
    assert ok(ro.get("/upstreams")) == []  # nothing was written by the refused call
    ok(rw.post("/upstreams", json={"name": "u", "base_url": "http://127.0.0.1:9/v1"}), 201)

    # A console session (cookie + CSRF token) does not authenticate the API.
    console = http_login(server.url, "alice", "correct horse battery")
    assert console.get("/admin/").status_code == 200
    error(console.get("/admin/api/routes"), 401)
    error(console.post("/admin/api/upstreams", json={"name": "v"}), 401)

    # Revoked from the CLI: refused at the very next request, on every replica.
    code, _, err = run_cli("admin", "revoke-token", "writer", home=home)
    assert code == 0, err
    error(rw.get("/routes"), 401)
    error(rw_replica.get("/routes"), 401)
    error(rw.post("/upstreams", json={"name": "w", "base_url": "http://127.0.0.1:9/v1"}), 401)
    code, out, _ = run_cli("admin", "list-tokens", "--json", home=home)
    states = {t["name"]: t["state"] for t in json.loads(out)}
    assert states == {"writer": "revoked", "reader": "active"}
    assert all(t["last_used_at"] for t in json.loads(out))  # both were used above
    assert all("token" not in t for t in json.loads(out))

    # A revoked token's name can be used again; an active one's cannot.
    code, _, err = run_cli("admin", "create-token", "writer", "--scope", "write", home=home)
    assert code == 0, err
    code, _, err = run_cli("admin", "create-token", "writer", "--scope", "write", home=home)
    assert code == 1 and "revoke it first" in err


def test_stale_row_version_is_409_and_changes_nothing(home: Path, served: Any) -> None:
    api = Api(served().url, create_token(home, "ops", "write"))
    ok(api.post("/upstreams", json={"name": "u", "base_url": "http://127.0.0.1:9/v1"}), 201)
    ok(api.post("/routes", json={"name": "r", "variants": [{"upstream": "u", "model": "a"}]}), 201)
    got = api.get("/routes/r")
    read = ok(got)
    assert got.headers["etag"] == f'"{read["row_version"]}"'

    # Two editors read version 1; the first write wins, the second (stale) is a 409.
    first = dict(read, variants=[{"upstream": "u", "model": "a", "weight": 3}])
    saved = ok(api.put("/routes/r", json=first))  # row_version travels in the body
    assert saved["row_version"] == read["row_version"] + 1
    second = dict(read, variants=[{"upstream": "u", "model": "a", "weight": 9}])
    body = error(api.put("/routes/r", json=second), 409)
    assert body["code"] == "conflict" and "changed by someone else" in body["error"]
    error(api.put("/routes/r", json={"variants": [{"upstream": "u", "model": "a"}]},
                  headers={"If-Match": f'"{read["row_version"]}"'}), 409)
    assert ok(api.get("/routes/r"))["variants"][0]["weight"] == 3
    # Upstreams have the same check.
    up = ok(api.get("/upstreams/u"))
    ok(api.put("/upstreams/u", json=dict(up, timeout_s=9)))
    error(api.put("/upstreams/u", json=dict(up, timeout_s=8)), 409)
    assert ok(api.get("/upstreams/u"))["timeout_s"] == 9

    # A DELETE with a stale If-Match is a 409 too (before the fix it deleted whatever
    # the row had become); a current one, or none, deletes.
    stale = {"If-Match": f'"{read["row_version"]}"'}
    assert error(api.delete("/routes/r", headers=stale), 409)["code"] == "conflict"
    assert ok(api.get("/routes/r"))["variants"][0]["weight"] == 3
    error(api.delete("/routes/r", headers={"If-Match": "soon"}), 400)
    ok(api.delete("/routes/r", headers={"If-Match": f'"{saved["row_version"]}"'}), 204)
    assert error(api.delete("/upstreams/u", headers={"If-Match": f'"{up["row_version"]}"'}),
                 409)["code"] == "conflict"
    ok(api.delete("/upstreams/u"), 204)


def test_bad_input_is_a_json_4xx(home: Path, tmp_path: Path, served: Any) -> None:
    api = Api(served().url, create_token(home, "ops", "write"))
    assert error(api.post("/routes", content=b'{"name": '), 400)["code"] == "invalid_json"
    error(api.post("/routes", content=b"[1, 2]"), 400)
    invalid = error(api.post("/routes", json={"name": "r", "variants": "nope"}), 400)
    assert invalid["errors"] and "variants" in invalid["errors"][0]
    error(api.post("/routes", json={"name": "r", "variants": [], "surprise": 1}), 400)
    checked = error(api.post("/routes", json={"name": "r", "variants": [
        {"upstream": "missing", "model": "m", "weight": -1}]}), 400)
    assert any("missing" in e for e in checked["errors"]), checked
    error(api.put("/routes/nope", json={"variants": []}), 404)
    error(api.get("/keys/999"), 404)
    error(api.get("/keys/99999999999"), 404)
    error(api.get("/keys", params={"limit": 100000}), 400)
    error(api.get("/audit", params={"limit": 0}), 400)
    error(api.get("/usage", params={"since": "forever"}), 400)
    error(api.get("/no-such-endpoint"), 404)
    error(api.put("/upstreams/nope", json={"base_url": "http://x"},
                  headers={"If-Match": "yesterday"}), 400)
    error(api.post("/keys", json={"name": "k", "expires_at": "2001-01-01T00:00:00Z"}), 400)
    error(api.post("/quotas", json={"rate": "lots"}), 400)
    error(api.post("/models/m/activate", json={"version": "1"}), 404)
    # A file that is not ONNX is refused at registration; nothing is stored.
    bad = corrupt_file(tmp_path / "bad.onnx")
    error(api.post("/models/m/versions", content=bad.read_bytes()), 400)
    error(api.post("/models/m/versions", content=b""), 400)
    assert ok(api.get("/models")) == []
    # Bounded bodies: JSON beyond 1 MiB is a 413 before it is parsed.
    huge = b'{"name": "r", "description": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    body = error(api.post("/routes", content=huge), 413)
    assert body["code"] == "payload_too_large"


def test_wrong_methods_and_unknown_paths_are_json_errors(home: Path, served: Any) -> None:
    """Before the fix, a method an endpoint lacks (and any non-GET on an unknown path) got
    Litestar's own ``{"status_code": 405, "detail": ...}``, not the API's error shape."""
    api = Api(served().url, create_token(home, "ops", "write"))
    for method, path, allowed in [
        ("PUT", "/routes", "GET, POST"),
        ("PATCH", "/routes", "GET, POST"),
        ("DELETE", "/keys", "GET, POST"),
        ("POST", "/upstreams/u", "DELETE, GET, PUT"),
        ("GET", "/keys/1/revoke", "POST"),
        ("PUT", "/usage", "GET"),
    ]:
        body = error(api.request(method, path, json={}), 405)
        assert body["code"] == "method_not_allowed", body
        assert method in body["error"] and allowed in body["error"], body
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert error(api.request(method, "/no-such-endpoint"), 404)["code"] == "not_found"
    # Deeper unknown paths (an encoded slash in a name, extra segments) miss every
    # handler in Litestar's router itself; TRACE is no endpoint's method.
    for method, path in [("GET", "/models/a%2fb"), ("POST", "/models/..%2f..%2fetc/versions"),
                         ("GET", "/routes/r/extra"), ("DELETE", "/keys/1/revoke/x")]:
        assert error(api.request(method, path), 404)["code"] == "not_found", path
    assert error(api.request("TRACE", "/routes"), 405)["code"] == "method_not_allowed"
    # Still behind the token: an anonymous caller learns nothing about the endpoints.
    assert error(Api(api.http.base_url.scheme + "://" + api.http.base_url.netloc.decode(),
                     None).put("/routes"), 401)["code"] == "invalid_admin_token"


def test_an_upstream_cannot_send_litegate_settings_as_its_api_key(
    home: Path, served: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``litegate serve`` exports every setting as ``LITEGATE_*`` (the database URL and
    its password, the Redis URL, the console's secret), and an upstream's
    ``api_key_env`` is sent upstream as the bearer token. Before the fix a write token
    could point an upstream at its own server with ``api_key_env: LITEGATE_DB`` and read
    the database credentials; now the name is refused, and a row that names one anyway
    (written before) sends no key."""
    import sqlite3

    monkeypatch.setenv("LITEGATE_PROBE_SECRET", "s3cret")  # this gateway is in-process
    token = create_token(home, "ops", "write")
    server = served()
    api = Api(server.url, token)
    with run_fake_upstream() as fake:
        for name in ("LITEGATE_DB", "litegate_redis", "Litegate_Secret_Key", "A B", "1X"):
            refused = error(api.post("/upstreams", json={
                "name": "exfil", "base_url": fake.base_url, "api_key_env": name}), 400)
            assert "api_key_env" in refused["error"], refused
        ok(api.post("/upstreams", json={"name": "exfil", "base_url": fake.base_url,
                                         "api_key_env": "PROVIDER_API_KEY"}), 201)
        with sqlite3.connect(home / "litegate.db") as db:  # as an older version allowed
            db.execute("UPDATE upstreams SET api_key_env = 'LITEGATE_PROBE_SECRET' "
                       "WHERE name = 'exfil'")
        ok(api.post("/routes", json={"name": "chat", "variants": [
            {"upstream": "exfil", "model": "small-model"}]}), 201)
        secret = ok(api.post("/keys", json={"name": "app"}), 201)["secret"]
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=secret, max_retries=0)

        assert wait_until(lambda: _chat_or_none(client), "the route")  # served from a snapshot with the row
        assert fake.headers_seen
        assert all(h.get("Authorization") is None for h in fake.headers_seen), fake.headers_seen


def test_concurrent_uploads_of_one_version_keep_the_winners_files(
    home: Path, tmp_path: Path, served: Any
) -> None:
    """A client that retries an upload while the first is still being validated: both
    pass the "version is free" check and write the same directory. Before the fix the
    loser's rollback deleted that directory, which the winner's committed version points
    to (a registered model without its file); now the loser is a 409 before it writes."""
    import asyncio

    api = Api(served().url, create_token(home, "deployer", "write"))
    onnx = matmul_add_model(tmp_path / "add.onnx").read_bytes()

    async def upload_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=str(api.http.base_url), timeout=60,
                                     headers=dict(api.http.headers)) as c:
            return list(await asyncio.gather(*[
                c.post("/models/race/versions", params={"version": "1"}, content=onnx)
                for _ in range(4)]))

    statuses = sorted(r.status_code for r in asyncio.run(upload_all()))
    assert statuses == [201, 409, 409, 409], statuses
    (version,) = ok(api.get("/models/race"))["versions"]
    assert Path(version["path"]).is_file()
    assert Path(version["path"]).read_bytes() == onnx
    assert not [p for p in (home / "models" / "race").iterdir() if p.name != "1"]


def test_an_upload_the_disk_refuses_is_a_503_naming_the_directory(
    home: Path, tmp_path: Path, served: Any
) -> None:
    """An operational fault (no space, a read-only or broken home) is one line that names
    the place, not a 500 (before the fix: Litestar's bare 500)."""
    api = Api(served().url, create_token(home, "deployer", "write"))
    (home / "uploads").write_text("not a directory")
    onnx = matmul_add_model(tmp_path / "add.onnx").read_bytes()
    body = error(api.post("/models/m/versions", content=onnx), 503)
    assert str(home / "uploads") in body["error"] and body["code"] == "unavailable", body
    (home / "uploads").unlink()
    ok(api.post("/models/m/versions", content=onnx), 201)  # and it works once fixed


def test_keys_quotas_and_models_lifecycle(home: Path, tmp_path: Path, served: Any) -> None:
    api = Api(served().url, create_token(home, "ops", "write", "--expires", "1d"))
    key = ok(api.post("/keys", json={"name": "k"}), 201)
    updated = ok(api.patch(f"/keys/{key['id']}", json={
        "limits": ["5/minute"], "expires_at": "2099-01-01T00:00:00Z",
        "budget": {"max_usd": 10, "period": "30d"}}))
    assert updated["limits"] == ["5/minute"] and updated["expires_at"].startswith("2099-01-01")
    assert updated["budget"] == {"max_usd": 10.0, "period": "30d", "alert_at": None}
    assert ok(api.patch(f"/keys/{key['id']}", json={"budget": None}))["budget"] is None
    quota = ok(api.post("/quotas", json={"rate": "50/hour", "key_id": key["id"]}), 201)
    assert quota["key_id"] == key["id"] and quota["rate"] == "50/hour"
    assert [(q["key_id"], q["rate"]) for q in ok(api.get("/quotas"))] == [
        (key["id"], "5/minute"), (key["id"], "50/hour")]
    ok(api.delete(f"/quotas/{quota['id']}"), 204)
    error(api.delete(f"/quotas/{quota['id']}"), 404)
    revoked = ok(api.post(f"/keys/{key['id']}/revoke"))
    assert revoked["revoked_at"] is not None
    error(api.patch(f"/keys/{key['id']}", json={"limits": []}), 409)

    for version, offset in (("1", 0.0), ("2", 1.0)):
        data = matmul_add_model(tmp_path / f"m{version}.onnx", offset=offset).read_bytes()
        ok(api.post("/models/m/versions", content=data, params={"activate": "true"}), 201)
    assert ok(api.get("/models/m"))["active_version"] == "2"
    error(api.delete("/models/m/versions/2"), 409)  # the active version stays
    rolled = ok(api.post("/models/m/rollback"))
    assert rolled["active_version"] == "1"
    error(api.post("/models/m/rollback", json={"row_version": rolled["row_version"] - 1}), 409)
    ok(api.delete("/models/m/versions/2"), 204)
    assert [v["version"] for v in ok(api.get("/models/m"))["versions"]] == ["1"]
    entries = ok(api.get("/audit", params={"entity_type": "model"}))["entries"]
    assert [e["action"] for e in entries] == [
        "remove_version", "rollback", "add_version", "add_version"]
    assert {e["actor"] for e in entries} == {"token:ops"}



def test_migration_0008_up_and_down(home: Path) -> None:
    import sqlite3

    from litegate.db import migrate

    home.mkdir(parents=True)
    url = f"sqlite+aiosqlite:///{home}/m.db"

    def tables() -> set[str]:
        with sqlite3.connect(home / "m.db") as db:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    migrate.upgrade(url)
    assert "admin_tokens" in tables()
    migrate.downgrade(url, "0007")
    assert "admin_tokens" not in tables()
    migrate.upgrade(url)
    assert "admin_tokens" in tables() and migrate.current(url).startswith("0008")


async def test_token_table_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At most MAX_TOKENS rows: revoked ones make room; live ones are never dropped."""
    from datetime import timedelta

    from litegate.db.models import utcnow
    from litegate.errors import Conflict
    from litegate.services import admin_tokens
    from tests.e2e.support import make_admin_gateway

    monkeypatch.setattr(admin_tokens, "MAX_TOKENS", 3)
    gateway = await make_admin_gateway(tmp_path)
    secrets = {}
    async with gateway.sessionmaker() as session, session.begin():
        for name in ("a", "b", "c"):
            secrets[name] = (await admin_tokens.create_token(
                session, name, scope="read", actor="test"))[1]
    with pytest.raises(Conflict, match="already 3 admin tokens"):
        async with gateway.sessionmaker() as session, session.begin():
            await admin_tokens.create_token(session, "d", scope="read", actor="test")
    async with gateway.sessionmaker() as session, session.begin():
        await admin_tokens.revoke_token(session, "b", actor="test")
        await admin_tokens.create_token(session, "d", scope="write", actor="test")
    async with gateway.sessionmaker() as session, session.begin():
        names = [t.name for t in await admin_tokens.list_tokens(session)]
        assert names == ["a", "c", "d"]
        assert (await admin_tokens.authenticate(session, secrets["a"])) is not None
        assert (await admin_tokens.authenticate(session, secrets["b"])) is None
        # An expired token is refused like a revoked one, and makes room like one.
        (await admin_tokens.get_token(session, "c")).expires_at = utcnow() - timedelta(seconds=1)
    async with gateway.sessionmaker() as session, session.begin():
        assert (await admin_tokens.authenticate(session, secrets["c"])) is None
        assert admin_tokens.token_state(await admin_tokens.get_token(session, "c")) == "expired"
        await admin_tokens.create_token(session, "e", scope="read", actor="test")
        assert [t.name for t in await admin_tokens.list_tokens(session)] == ["a", "d", "e"]
    await gateway.engine.dispose()


async def test_console_creates_and_revokes_tokens(tmp_path: Path) -> None:
    """The console's token page: CSRF-protected, the secret shown once (a reload does not
    show it again), the token works on the API, and revoking it there stops it at once."""
    import re

    from litestar.testing import AsyncTestClient

    from tests.e2e.support import csrf_of, login, make_admin_gateway, make_app

    gateway = await make_admin_gateway(tmp_path)
    app, _ = make_app(gateway)
    async with AsyncTestClient(app) as client:
        assert (await login(client)).status_code == 303
        page = await client.get("/admin/account")
        assert 'href="/admin/tokens"' in page.text
        page = await client.get("/admin/tokens")
        csrf = csrf_of(page.text)
        refused = await client.post("/admin/tokens", data={"name": "ci", "scope": "write"})
        assert refused.status_code == 403
        bad = await client.post("/admin/tokens", data={"_csrf": csrf, "name": "bad name",
                                                       "scope": "admin", "expires": "soon"})
        assert bad.status_code == 400
        assert "letters, digits" in bad.text and "must be one of read, write" in bad.text
        assert "expected e.g. 30d" in bad.text
        made = await client.post("/admin/tokens", data={"_csrf": csrf, "name": "ci",
                                                        "scope": "write", "expires": "30d"},
                                 follow_redirects=False)
        assert made.status_code == 303
        shown = await client.get("/admin/tokens")
        secret = re.search(r'id="new-token-secret" value="(lga-[^"]+)"', shown.text)
        assert secret is not None
        again = (await client.get("/admin/tokens")).text
        assert secret.group(1) not in again and secret.group(1)[:10] in again  # prefix only

        api = {"Authorization": f"Bearer {secret.group(1)}"}
        assert (await client.get("/admin/api/routes", headers=api)).status_code == 200
        async with gateway.sessionmaker() as session:
            from litegate.services import admin_tokens

            token_id = (await admin_tokens.get_token(session, "ci")).id
        revoked = await client.post(f"/admin/tokens/{token_id}/revoke", data={"_csrf": csrf},
                                    follow_redirects=False)
        assert revoked.status_code == 303
        assert (await client.get("/admin/api/routes", headers=api)).status_code == 401
        listing = (await client.get("/admin/tokens")).text
        assert re.search(r'data-token-name="ci">.*?token-state">revoked<', listing, re.DOTALL)
        audit = (await client.get("/admin/audit")).text
        assert "admin_token" in audit
    await gateway.engine.dispose()


def test_names_with_control_characters_are_refused(home: Path, served: Any) -> None:
    """A key's name was free text, so a write token could store one that drives the
    terminal of whoever runs ``litegate keys list``; the name patterns of routes,
    upstreams and admin tokens ended in ``$``, which also matches before a final
    newline. All of them now refuse control characters: 400 on the API, an error in the
    CLI, and nothing is stored."""
    api = Api(served().url, create_token(home, "ops", "write"))
    for name in ("evil\x1b[2J", "bell\x07", "del\x7f", "c1\x9b31m", "line\n"):
        body = error(api.post("/keys", json={"name": name}), 400)
        assert "control characters" in str(body), body
    assert ok(api.get("/keys"))["total"] == 0
    checked = error(api.post("/upstreams", json={"name": "up\n", "base_url": "http://x"}), 400)
    assert "invalid name" in str(checked)
    error(api.post("/routes", json={"name": "r\n", "variants": []}), 400)
    code, _, err = run_cli("keys", "create", "--name", "evil\x1b]0;pwned\x07", home=home)
    assert code != 0 and "control characters" in err
    code, _, err = run_cli("admin", "create-token", "tok\n", "--scope", "read", home=home)
    assert code != 0 and "name" in err
    assert ok(api.post("/keys", json={"name": "Zoë's key (ok)"}), 201)["name"] == "Zoë's key (ok)"


def test_cli_tables_escape_control_characters_of_older_names(home: Path) -> None:
    """A key stored before names had to be printable is shown with its control
    characters escaped in the CLI's tables, never written to the terminal raw."""
    code, out, err = run_cli("keys", "create", "--name", "old", "--json", home=home)
    assert code == 0, err
    import sqlite3

    with sqlite3.connect(home / "litegate.db") as db:
        db.execute("UPDATE api_keys SET name = ? WHERE name = 'old'", ("old\x1b[2J\x9b\x7f\n",))
    code, out, err = run_cli("keys", "list", home=home)
    assert code == 0, err
    assert "old\\x1b[2J\\x9b\\x7f\\n" in out
    assert not any(c in out.replace("\n", "") for c in "\x1b\x9b\x7f")
    assert len(out.splitlines()) == 2  # the header and the one row
    code, out, _ = run_cli("keys", "revoke", "1", home=home)
    assert code == 0 and "\\x1b" in out and "\x1b" not in out
