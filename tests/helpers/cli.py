"""Drive the real ``litegate`` CLI in-process."""

from __future__ import annotations

import contextlib
import io
import json
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
