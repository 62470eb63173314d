"""Progress of long CLI work on stderr, so stdout keeps only the result: a rich bar per
task on a terminal, plain lines when stderr is not one (logs, CI), nothing with ``--json``.

The work reports through :class:`litegate.progress.Progress`; tasks are
named by the work (``validate``, ``warm-up``, ``copy``, ``quantize``) and may report from
any thread.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress as RichBars, TaskID

    from litegate.progress import Progress

QUARTERS = 4
"""Plain mode prints a measured task at 0, 25, 50, 75 and 100 %, not per chunk."""


def _percent(done: float, total: float) -> int:
    return 100 if total <= 0 else max(0, min(100, int(100 * done / total)))


class PlainProgress:
    """``task: 25% (note)`` lines: one when a task starts, at each quarter, on each new
    note, and at its end."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._last: dict[str, tuple[int, str]] = {}

    def __call__(self, task: str, done: float, total: float, note: str = "") -> None:
        percent = _percent(done, total)
        mark = (percent * QUARTERS // 100, note)
        with self._lock:
            if self._last.get(task) == mark:
                return
            self._last[task] = mark
            self._stream.write(f"{task}: {percent}%" + (f" ({note})" if note else "") + "\n")
            self._stream.flush()


class RichProgress:
    """One rich bar per task, drawn on stderr while the work runs."""

    def __init__(self, bars: RichBars) -> None:
        self._bars = bars
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._notes: dict[str, str] = {}

    def __call__(self, task: str, done: float, total: float, note: str = "") -> None:
        from rich.markup import escape

        with self._lock:
            note = self._notes[task] = note or self._notes.get(task, "")  # keep the last one
            description = f"{task:<9}" + (f" [dim]{escape(note)}[/dim]" if note else "")
            if task not in self._tasks:
                self._tasks[task] = self._bars.add_task(description, total=total or 1)
            self._bars.update(self._tasks[task], completed=done if total else 1,
                              total=total or 1, description=description)


def mode(json_output: bool, stream: TextIO | None = None) -> str:
    """``json`` (no progress), ``tty`` (rich bars) or ``plain`` (lines)."""
    if json_output:
        return "json"
    return "tty" if (stream or sys.stderr).isatty() else "plain"


@contextlib.contextmanager
def progress_for(kind: str) -> Iterator[Progress | None]:
    """The reporter for a :func:`mode`; the rich bars stay on screen after the work."""
    if kind == "json":
        yield None
    elif kind == "plain":
        yield PlainProgress(sys.stderr)
    else:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True)) as bars:
            yield RichProgress(bars)
