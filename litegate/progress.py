"""The callback long model work (copy, validation, quantization, warm-up) reports its
progress to: the service that registers models takes one, the engine's file checks call
it (:mod:`litegate.inference.progress` forwards a child process's reports) and the CLI
draws it (:mod:`litegate.cli.progress`)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def __call__(self, task: str, done: float, total: float, note: str = "") -> None:
        """``task`` has done ``done`` of ``total`` (bytes or steps); ``note`` says what
        it is doing now. ``done == total`` finishes the task."""
