"""A console upload never sits in the serving process's memory: the multipart body is
spooled to disk and the file is validated in a capped child process. Measured on a
real uvicorn server in a child process (its peak RSS, VmHWM), not on the test runner."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import requests

from tests.e2e.support import ADMIN_PASSWORD, ADMIN_USER, CSRF_RE

UPLOAD_MB = 96

SERVER = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    import uvicorn
    from tests.e2e.support import make_admin_gateway, make_app
    gateway = asyncio.run(make_admin_gateway(Path(sys.argv[1])))
    app, _ = make_app(gateway)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
""")


def _peak_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) // 1024  # type: ignore[union-attr]


def test_large_console_upload_does_not_grow_the_server(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path), str(port)],
                            cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/admin"
        session = requests.Session()
        deadline = time.monotonic() + 30
        while True:
            try:
                page = session.get(base + "/login", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        token = CSRF_RE.search(page.text).group(1)  # type: ignore[union-attr]
        session.post(base + "/login", data={"_csrf": token, "username": ADMIN_USER,
                                            "password": ADMIN_PASSWORD})
        token = CSRF_RE.search(session.get(base + "/models").text).group(1)  # type: ignore[union-attr]
        before = _peak_mb(proc.pid)
        r = session.post(base + "/models", data={"_csrf": token, "name": "big"},
                         files={"file": ("big.onnx", os.urandom(UPLOAD_MB * 1024 * 1024))},
                         timeout=120)
        grown = _peak_mb(proc.pid) - before
        assert r.status_code == 400 and "big.onnx" in r.text  # not a model: refused
        # Before: the checker read the whole file inside the server (+96 MB or more).
        assert grown < UPLOAD_MB // 3, f"server peak grew {grown} MB for a {UPLOAD_MB} MB upload"
    finally:
        proc.terminate()
        proc.wait(10)
