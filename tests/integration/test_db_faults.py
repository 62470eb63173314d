"""The embedded SQLite database breaking under a running gateway: it keeps serving from
its last snapshot, says so in /readyz, and never dies of a signal (WAL's memory-mapped
-shm file turned a truncated or unwritable -shm into SIGBUS)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from tests.helpers.cli import LITEGATE_BIN, apply_config, chat_config, clean_env, create_key
from tests.helpers.servers import free_port, wait_http

MSGS = [{"role": "user", "content": "hi"}]


def test_broken_database_files_keep_the_gateway_serving(home: Path, fake_upstream):
    apply_config(home, chat_config(fake_upstream.base_url))
    key = create_key(home)
    port = free_port()
    proc = subprocess.Popen(
        [LITEGATE_BIN, "--home", str(home), "serve", "--port", str(port)],
        env=clean_env(LITEGATE_RELOAD_INTERVAL_S="0.1"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    h = {"Authorization": f"Bearer {key}"}
    try:
        wait_http(url + "/readyz", proc, timeout=30)
        db = home / "litegate.db"
        shm = Path(str(db) + "-shm")
        if shm.exists():  # what killed the WAL-mode gateway
            os.truncate(shm, 0)
        header = db.read_bytes()[:100]
        with db.open("r+b") as fh:  # the database can no longer be read
            fh.write(b"\xff" * 100)
        deadline = time.time() + 10
        while httpx.get(url + "/readyz").status_code != 503:
            assert time.time() < deadline and proc.poll() is None, "readyz stayed green"
            time.sleep(0.1)
        assert httpx.get(url + "/readyz").json()["database"] is False
        for _ in range(20):  # the last good snapshot still serves
            r = httpx.post(url + "/v1/chat/completions", headers=h,
                           json={"model": "chat", "messages": MSGS})
            assert r.status_code == 200
        with db.open("r+b") as fh:
            fh.write(header)
        deadline = time.time() + 10
        while httpx.get(url + "/readyz").status_code != 200:
            assert time.time() < deadline, "readyz did not recover"
            time.sleep(0.1)
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    # uvicorn re-raises SIGTERM after its graceful shutdown; any other signal is a crash.
    assert proc.returncode in (0, -15), err[-2000:]
    assert "config_poll_failed" in err and "Fatal Python error" not in err
