"""Throwaway redis-server and PostgreSQL instances started from their binaries."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

from tests.helpers.servers import free_port


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


@contextlib.contextmanager
def redis_server(*options: str, port: int | None = None) -> Iterator[str]:
    """A throwaway redis-server on ``port`` (a free one by default); ``options`` are
    more of its flags (``--requirepass``, ``--unixsocket`` ...)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not on PATH (install it: apt-get install redis-server)")
    port = port or free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         *options],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found (install it: apt-get install postgresql)")
    return path


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A fresh cluster in a temp dir; yields a SQLAlchemy asyncpg URL."""
    root = os.geteuid() == 0
    data = tempfile.mkdtemp(prefix="litegate-pg-")
    port = free_port()
    prefix: list[str] = []
    if root:
        shutil.chown(data, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*prefix, pg_bin("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    proc = subprocess.Popen(
        [*prefix, pg_bin("postgres"), "-D", data, "-p", str(port), "-h", "127.0.0.1",
         "-k", data, "-F"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        for _ in range(100):
            ok = subprocess.run(
                [*prefix, pg_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                 "-c", "CREATE DATABASE litegate"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ).returncode == 0
            if ok:
                break
            time.sleep(0.1)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/litegate"
    finally:
        proc.terminate()
        proc.wait(15)
        shutil.rmtree(data, ignore_errors=True)
