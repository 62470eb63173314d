"""``litegate config import-litellm config.yaml``: a LiteLLM proxy config translated to
litegate's YAML on stdout (ready for ``config apply``); what did not translate goes to
stderr, one line each, with the line it came from."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from litegate.services.litellm_import import translate
from litegate.settings import Settings


def register(config_sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = config_sub.add_parser(
        "import-litellm", help="translate a LiteLLM config.yaml (stdout: litegate YAML; "
                               "stderr: what did not translate)")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_import)


def _import(args: argparse.Namespace, settings: Settings) -> int:
    try:
        text = args.file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{args.file}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        result = translate(text)
    except ValueError as exc:
        raise ValueError(f"{args.file}: {exc}") from None
    for line in result.report:  # compiler-style FILE:LINE: so editors can jump to it
        print(f"{args.file}:{line}", file=sys.stderr)
    if not result.document["routes"]:
        print(f"error: {args.file}: no model_list entry could be translated (see above)",
              file=sys.stderr)
        return 1
    print(f"# Translated from {args.file.name} by `litegate config import-litellm`.")
    print(yaml.safe_dump(result.document, sort_keys=False), end="")
    return 0
