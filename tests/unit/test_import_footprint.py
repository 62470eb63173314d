"""A proxy-only gateway loads only what a proxied request needs (issue #13: idle memory,
start-to-ready). Checked structurally, in a fresh interpreter, through sys.modules — no
timing: the ORM, Alembic, the admin console, ONNX Runtime and numpy stay out of a
process that serves ``litegate serve`` with no local model, through start-up, a proxied
request, a config reload and the key-use flush at shutdown."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from tests.helpers.cli import apply_config, chat_config, clean_env, create_key

HEAVY = ("sqlalchemy", "alembic", "aiosqlite", "litestar", "jinja2", "onnxruntime", "numpy",
         "rich", "yaml", "greenlet", "watchfiles", "anyio", "aiohttp", "litegate.admin",
         "litegate.services.keys", "litegate.db.models")

CHILD = textwrap.dedent("""
    import asyncio, json, sys

    from litegate.cli import build_parser

    build_parser(["serve"])  # what `litegate serve` parses with
    import litegate.cli.serve  # noqa: F401  (the command's module, as main() loads it)
    import litegate.connections  # noqa: F401  (uvicorn's protocol, as serve loads it)
    from litegate.app import create_app
    from litegate.settings import Settings

    async def call(app, method, path, body=b"", headers=()):
        sent, messages = [], [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
                 "query_string": b"", "headers": list(headers), "http_version": "1.1",
                 "scheme": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        await app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])

    async def main():
        app = create_app(Settings.load())
        gateway = app.gateway
        await gateway.start()
        auth = [(b"authorization", b"Bearer " + sys.argv[1].encode()),
                (b"content-type", b"application/json")]
        body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
        status, answer = await call(app, "POST", "/v1/chat/completions", body.encode(), auth)
        statuses = {"chat": status, "unknown": (await call(app, "POST", "/v1/chat/completions",
                    b'{"model": "nope"}', auth))[0]}
        for path in ("/healthz", "/readyz", "/metrics"):
            statuses[path] = (await call(app, "GET", path))[0]
        reloaded = await gateway.snapshots.check()  # the poll's path: one version SELECT
        await gateway.stop()  # flushes the key's last use
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY_TOP or m in HEAVY)
        print(json.dumps({"statuses": statuses, "answer": answer.decode(), "heavy": heavy,
                          "reloaded": reloaded, "routes": sorted(gateway.snapshots.current.routes)}))

    HEAVY = set(sys.argv[2].split(","))
    HEAVY_TOP = {h for h in HEAVY if "." not in h}
    asyncio.run(main())
""")


def test_proxy_only_serving_path_loads_no_orm_no_console_no_onnx(home: Path, fake_upstream) -> None:
    assert apply_config(home, chat_config(fake_upstream.base_url))[0] == 0
    key = create_key(home)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, key, ",".join(HEAVY)], capture_output=True, text=True, check=False,
        timeout=120, env=clean_env(LITEGATE_HOME=str(home), LITEGATE_LOG_FORMAT="json"),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["statuses"] == {"chat": 200, "unknown": 404, "/healthz": 200, "/readyz": 200,
                                  "/metrics": 200}, report
    assert json.loads(report["answer"])["object"] == "chat.completion"
    assert report["routes"] == ["chat"] and report["reloaded"] is False
    assert report["heavy"] == [], f"the serving path imported {report['heavy']}"


def test_the_key_use_flush_is_written_where_the_orm_reads_it(home: Path, fake_upstream) -> None:
    """The serving path writes ``last_used_at`` with plain SQL; ``keys list`` (the ORM)
    must read it back as the time of the request."""
    from tests.helpers.cli import run_cli

    assert apply_config(home, chat_config(fake_upstream.base_url))[0] == 0
    key = create_key(home)
    before = datetime.now(UTC).replace(microsecond=0)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, key, "none"], capture_output=True, text=True, timeout=120,
        check=False,
        env=clean_env(LITEGATE_HOME=str(home), LITEGATE_LOG_FORMAT="json"),
    )
    after = datetime.now(UTC)
    assert done.returncode == 0, done.stderr
    code, out, err = run_cli("keys", "list", "--json", home=home)
    assert code == 0, err
    [listed] = json.loads(out)
    used = datetime.fromisoformat(listed["last_used_at"])
    assert before <= used.astimezone(UTC) <= after, (before, used, after)
