"""What ``litegate serve`` / ``make run`` print (issue 8 item 6): one block once it is
really serving, with the URL, the demo key, the console login and commands that work
from the shell it was started in."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

from tests.helpers.cli import run_cli, serving
from tests.helpers.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_plain_serve_prints_its_url_and_create_user_uses_it(tmp_path, monkeypatch):
    home, port = tmp_path / "home", free_port()
    with serving("--port", str(port), home=home) as served:
        # Before: a plain serve printed nothing at all.
        assert f"litegate is serving on http://127.0.0.1:{port}" in served.stdout
        assert f"Admin console: http://127.0.0.1:{port}/admin" in served.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        monkeypatch.setattr("sys.stdin", __import__("io").StringIO("a-long-password-1\n"))
        code, out, err = run_cli("admin", "create-user", "bob", "--password-stdin", home=home)
        # Before: "http://127.0.0.1:8000/admin" whatever the port.
        assert code == 0 and f"Sign in at http://127.0.0.1:{port}/admin" in out, err
    assert not (home / "serve-url").exists()


def test_demo_block_has_key_login_and_commands_that_run_from_this_shell(tmp_path):
    home, port = tmp_path / "home", free_port()
    with serving("--demo", "--port", str(port), home=home, cwd=ROOT) as served:
        block = served.stdout
        key = re.search(r"API key \(shown once\): +(lg-\S+)", block).group(1)
        assert re.search(rf"Admin console: +http://127.0.0.1:{port}/admin +user admin +password \S+ +\(shown once\)", block)
        # Before: bare `python`, which has no openai outside the venv.
        python_line = next(line.strip() for line in block.splitlines()
                           if line.strip().startswith(".venv/bin/python -c"))
        assert key in python_line
        ran = subprocess.run(python_line, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0 and ran.stdout.strip() == "384", ran.stderr
    with serving("--demo", "--port", str(port), home=home, cwd=ROOT) as again:
        assert "API key (shown once)" not in again.stdout
        reset = next(line.strip() for line in again.stdout.splitlines()
                     if "forgot the password?" in line).split("forgot the password? ", 1)[1].rstrip(")")
        assert reset == ".venv/bin/litegate admin set-password admin"
        ran = subprocess.run(f"{reset} --home {home} --password-stdin", shell=True, cwd=ROOT,
                             input="another-password-1\n", capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
