"""The README's fenced code blocks, as the README test runs them and as other tests
(HTTP/2 and TLS, gRPC) find the examples they check."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\b\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int
    caption: str
    """The last non-empty line before the fence."""
    skip: str | None

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        before = [line for line in text[: m.start()].splitlines() if line.strip()]
        caption = before[-1] if before else ""
        skip = SKIP.search(caption)
        blocks.append(Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1,
                            caption, skip.group(1) if skip else None))
    return blocks
