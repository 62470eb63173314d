"""The README is executable documentation (issue 8 item 3): its ```python and ```bash
blocks run here, in order, as a reader would run them — from a fresh directory next to
`.venv`, against `litegate serve --demo` (what `make run` starts).

What is substituted, and nothing else:
* ``127.0.0.1:8000`` -> the port of the gateway started here; ``127.0.0.1:9000`` -> a fake
  OpenAI-compatible upstream (the README's "any OpenAI-compatible server");
* ``lg-...`` in Python -> the key the README's own ``keys create`` printed;
* ``make TARGET`` in bash -> ``make -n TARGET`` in the checkout (the target must exist;
  running ``make test`` inside the test suite would recurse).
A ```yaml block preceded by a line naming a file (`gateway.yaml`) is written to that file.
A Python block that defines ``app =`` is a mounting example: it is saved as ``app.py`` in
its own empty directory and served with uvicorn. Python blocks share one interpreter.
An illustrative block can opt out with ``<!-- readme-test: skip <reason> -->`` on the line
before it; use that sparingly.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from litegate.cli import build_parser
from tests.helpers.cli import clean_env, serving
from tests.helpers.readme import ROOT, Block, readme_blocks
from tests.helpers.servers import free_port, run_fake_upstream, wait_http

VENV_BIN = Path(sys.executable).parent
FILE_CAPTION = re.compile(r"`([\w.-]+\.(?:ya?ml|toml))`")
KEY = re.compile(r"\blg-[A-Za-z0-9_-]{20,}")

DRIVER = r"""
import contextlib, io, json, sys, traceback
namespace = {"__name__": "__readme__"}
for line in sys.stdin:
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(json.loads(line), "<README block>", "exec"), namespace)
        reply = {"ok": True, "out": out.getvalue()}
    except BaseException:
        reply = {"ok": False, "out": out.getvalue(), "error": traceback.format_exc()}
    sys.__stdout__.write(json.dumps(reply) + "\n")
    sys.__stdout__.flush()
"""


def test_readme_blocks_are_found_and_skips_are_rare_and_explained():
    blocks = readme_blocks()
    runnable = [b for b in blocks if b.lang in ("python", "bash")]
    assert len(runnable) >= 8, "README extraction broke (fence format changed?)"
    skipped = [b for b in runnable if b.skip is not None]
    assert all(b.skip for b in skipped), f"a skip marker needs a reason: {skipped}"
    assert len(skipped) <= len(runnable) // 4, f"most blocks must run: {skipped}"


class Reader:
    """Follows the README in a fresh directory: one shell per bash block, one Python
    interpreter for all client blocks, one uvicorn per mounting example."""

    def __init__(self, work: Path, gateway_port: int, upstream_port: int, key: str) -> None:
        self.work, self.port, self.key = work, gateway_port, key
        self.upstream_port = upstream_port
        self.python = subprocess.Popen(
            [sys.executable, "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, cwd=work, env=clean_env(),
        )

    def close(self) -> None:
        self.python.stdin.close()  # type: ignore[union-attr]
        self.python.wait(30)

    def rewrite(self, code: str) -> str:
        code = code.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
        return code.replace("127.0.0.1:9000", f"127.0.0.1:{self.upstream_port}")

    def run(self, block: Block) -> str:
        code = self.rewrite(block.code)
        if block.lang == "bash":
            return self.bash(block, code)
        if block.lang == "python":
            if re.search(r"^app = ", code, re.M):
                return self.mount(block, code)
            return self.client(block, code.replace("lg-...", self.key))
        if block.lang in ("yaml", "toml"):
            named = FILE_CAPTION.search(block.caption)
            if named:
                (self.work / named.group(1)).write_text(code)
        return ""

    def bash(self, block: Block, code: str) -> str:
        script = f'make() {{ command make -s -n -C "{ROOT}" "$@" >/dev/null; }}\n{code}'
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=self.work,
                              env=clean_env(), capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"{block} failed:\n{code}\n{done.stdout}\n{done.stderr}"
        printed = KEY.findall(done.stdout)
        if printed:
            self.key = printed[-1]  # what the README's `keys create` showed once
        self.wait_for_gateway_to_catch_up()
        return done.stdout

    def client(self, block: Block, code: str) -> str:
        self.python.stdin.write(json.dumps(code) + "\n")  # type: ignore[union-attr]
        self.python.stdin.flush()  # type: ignore[union-attr]
        reply = json.loads(self.python.stdout.readline())  # type: ignore[union-attr]
        assert reply["ok"], f"{block} failed:\n{code}\n{reply['error']}"
        return reply["out"]

    def mount(self, block: Block, code: str) -> str:
        here = self.work / f"mounted-at-line-{block.line}"  # a new, empty directory
        here.mkdir()
        (here / "app.py").write_text(code)
        port = free_port()
        server = subprocess.Popen(
            [str(VENV_BIN / "uvicorn"), "app:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=here, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/healthz", server)
            ready = httpx.get(url + "/readyz")
            assert ready.status_code == 200 and ready.json()["ready"], f"{block}: {ready.text}"
            assert "litegate_config_version" in httpx.get(url + "/metrics").text
            models = httpx.get(url + "/v1/models")
            assert models.status_code == 401, f"{block}: /v1/models {models.status_code} {models.text}"
            if '"/docs"' in code:  # named public by the example
                assert httpx.get(url + "/docs").status_code == 200
            assert (here / ".litegate" / "litegate.db").is_file()
        finally:
            server.terminate()
            output = server.communicate(timeout=30)[0]
        assert "Traceback" not in output, f"{block}:\n{output}"
        return output

    def wait_for_gateway_to_catch_up(self) -> None:
        """A change made by a block reaches the gateway within a second (its promise);
        wait for that before the next block uses it."""
        with sqlite3.connect(self.work / ".litegate" / "litegate.db") as db:
            stored = db.execute("SELECT version FROM config_state WHERE id = 1").fetchone()
        deadline = time.monotonic() + 10
        while True:
            ready = httpx.get(f"http://127.0.0.1:{self.port}/readyz").json()
            if ready["ready"] and ready["config_version"] >= (stored[0] if stored else 0):
                return
            assert time.monotonic() < deadline, f"gateway did not catch up: {ready}"
            time.sleep(0.05)


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    work = tmp_path / "fresh"
    work.mkdir()
    (work / ".venv").symlink_to(VENV_BIN.parent)
    port = free_port()
    with run_fake_upstream() as upstream, serving(
        "--demo", "--port", str(port), home=work / ".litegate", cwd=work,
        LITEGATE_RELOAD_INTERVAL_S="0.05",
    ) as served:
        demo_key = KEY.search(served.stdout).group(0)
        r = Reader(work, port, upstream.port, demo_key)
        try:
            yield r
        finally:
            r.close()
        assert upstream.calls, "the README's quick start never reached its upstream"


def test_readme_runs_as_written(reader: Reader):
    ran = []
    for block in readme_blocks():
        if block.skip is None and block.lang in ("python", "bash", "yaml", "toml"):
            reader.run(block)
            ran.append(block)
    assert {b.lang for b in ran} >= {"python", "bash"}


def test_cli_synopsis_names_real_commands():
    """Each ``litegate GROUP SUB|SUB ... | SUB ...`` line of the README's CLI synopsis
    names commands the parser has."""
    groups = _choices(build_parser())
    synopsis = next(b for b in readme_blocks() if b.lang == "" and "litegate serve" in b.code)
    for line in synopsis.code.splitlines():
        words = line.split()
        if not words or words[0] != "litegate" or words[1].startswith("-"):
            continue
        assert words[1] in groups, f"README CLI: unknown command {words[1]!r}"
        subs = _choices(groups[words[1]])
        if not subs:
            continue
        while re.search(r"\[[^\[\]]*\]", line):  # options: [--a | --b], [--x N]
            line = re.sub(r"\[[^\[\]]*\]", "", line)
        for part in line.split(" | "):
            head = part.split()[2] if part.startswith("litegate ") else part.split()[0]
            for sub in head.split("|"):
                assert sub in subs, f"README CLI: unknown `litegate {words[1]} {sub}`"


def _choices(parser) -> dict:  # type: ignore[no-untyped-def]
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        return dict(action.choices)
    return {}
