"""Drive the real ``litegate`` CLI: in-process, or as the installed command in a child process."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from litegate.cli import main


def run_cli(*argv: str, home: Path, extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--home", str(home), *extra, *argv])
    return code, out.getvalue(), err.getvalue()


def create_key(home: Path, name: str = "test", *args: str, extra: tuple[str, ...] = ()) -> str:
    code, out, err = run_cli("keys", "create", "--name", name, "--json", *args, home=home, extra=extra)
    assert code == 0, err
    return json.loads(out)["key"]


def apply_config(home: Path, doc: dict[str, Any], tmp: Path | None = None, *args: str,
                 extra: tuple[str, ...] = ()) -> tuple[int, str, str]:
    (tmp or home).mkdir(parents=True, exist_ok=True)
    path = (tmp or home) / "config-under-test.yaml"
    path.write_text(yaml.safe_dump(doc))
    return run_cli("config", "apply", str(path), *args, home=home, extra=extra)


def chat_config(base_url: str, **route: Any) -> dict[str, Any]:
    r = {
        "name": "chat",
        "variants": [{"upstream": "mock", "model": "small-model", "weight": 100}],
        "sticky": "key",
    }
    r.update(route)
    return {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": base_url, "timeout_s": 5}],
        "routes": [r],
    }


LITEGATE_BIN = str(Path(sys.executable).parent / "litegate")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without LITEGATE_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITEGATE_")}
    env.update(extra)
    return env


def run_litegate(*argv: str, home: Path, timeout: float = 60, cwd: Path | None = None,
                 **env: str) -> subprocess.CompletedProcess[str]:
    """The installed ``litegate`` command in a child process: exit status, stdout and
    stderr exactly as a user sees them (a traceback would show up in stderr)."""
    return subprocess.run(
        [LITEGATE_BIN, *argv], capture_output=True, text=True, timeout=timeout,
        cwd=cwd or home.parent, env=clean_env(LITEGATE_HOME=str(home), **env),
    )


def one_line_error(code: int, stderr: str) -> str:
    """The single ``error: ...`` line of an operational failure (exit status 3)."""
    lines = stderr.strip().splitlines()
    assert code == 3, (code, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@dataclass
class Served:
    """A ``litegate serve`` child process; ``stdout``/``stderr`` as read so far."""

    proc: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)


@contextlib.contextmanager
def serving(*argv: str, home: Path, cwd: Path | None = None, timeout: float = 60,
            **env: str) -> Iterator[Served]:
    """``litegate serve ARGV`` until it prints its start-up block (it does so only once it
    accepts connections); interrupted with Ctrl+C (SIGINT) afterwards."""
    proc = subprocess.Popen(
        [LITEGATE_BIN, "serve", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=cwd or home.parent, env=clean_env(LITEGATE_HOME=str(home), **env),
    )
    served, announced = Served(proc), threading.Event()

    def pump(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            if line.strip() == "Stop it with Ctrl+C.":
                announced.set()

    threads = [threading.Thread(target=pump, args=(s, lines), daemon=True)
               for s, lines in ((proc.stdout, served.out), (proc.stderr, served.err))]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + timeout
        while not announced.wait(0.05):
            assert proc.poll() is None, f"serve exited {proc.returncode}: {served.stderr[-3000:]}"
            assert time.monotonic() < deadline, f"serve did not announce itself: {served.stderr[-3000:]}"
        yield served
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for t in threads:
            t.join(5)
