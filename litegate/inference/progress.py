"""Progress of long model work (copy, validation, quantization, warm-up), reported by the
code doing it and drawn by whoever called it (the CLI: :mod:`litegate.cli.progress`).

The registration check and the quantizer run in child processes (memory and time caps);
they report with :func:`report`, one JSON line on stdout each, and :func:`run_child`
forwards those lines to the caller's :class:`~litegate.progress.Progress` while the child runs. The child's
other lines (its result is the last one) come back to the caller unchanged;
:func:`child_result` reads the result from them.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from litegate.progress import Progress

MARK = '{"progress":'
"""How a progress line starts (the child's result lines never do)."""
KEEP_LINES = 16
"""Other lines of a child's output kept (the result is the last one)."""


def report(task: str, done: float, total: float, note: str = "") -> None:
    """In a child process: one progress line for :func:`run_child` to forward."""
    print(json.dumps({"progress": task, "done": done, "total": total, "note": note}),
          flush=True)


def run_child(argv: Sequence[str], *, timeout: float, env: Mapping[str, str],
              progress: Progress | None = None) -> tuple[int, list[str]]:
    """Run ``argv``, forwarding its progress lines; (exit status, its last other lines).

    Killed past ``timeout`` seconds (:class:`subprocess.TimeoutExpired`). Its stderr is
    discarded: what the caller needs is on stdout.
    """
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=dict(env))
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    lines: deque[str] = deque(maxlen=KEEP_LINES)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").strip()
            if not line.startswith(MARK):
                if line:
                    lines.append(line)
                continue
            if progress is None:
                continue
            try:
                event = json.loads(line)
                args = (str(event["progress"]), float(event["done"]), float(event["total"]),
                        str(event.get("note", "")))
            except (ValueError, KeyError, TypeError):
                continue  # not ours after all: a progress bar is never worth failing for
            progress(*args)
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if expired.is_set():
        raise subprocess.TimeoutExpired(list(argv), timeout)
    return proc.returncode, list(lines)


def child_result(lines: Sequence[str]) -> dict[str, Any]:
    """The result a child printed last (a JSON object), as :func:`run_child` returned its
    lines; ``{}`` when there is none: no output, a line that is not JSON, or JSON that is
    not an object (a crash's last words, never the child's result)."""
    try:
        result = json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {}
    return result if isinstance(result, dict) else {}
