"""``litegate`` command line. Each command group lives in its own module with a
``register(subparsers)`` function; handlers are ``async (args, settings) -> int``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from collections.abc import Sequence

from litegate.errors import LitegateError
from litegate.logging import configure_logging
from litegate.services.schema import ValidationFailed
from litegate.settings import Settings

COMMAND_MODULES = (
    "litegate.cli.serve",
    "litegate.cli.db",
    "litegate.cli.keys",
    "litegate.cli.routes",
    "litegate.cli.config",
    "litegate.cli.models",
    "litegate.cli.admin",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litegate",
        description="A lightweight, fast inference gateway. Settings also come from LITEGATE_* env vars.",
    )
    parser.add_argument("--home", help="state directory (SQLite file, models); default ./.litegate")
    parser.add_argument("--db", help="database URL (default: SQLite under --home)")
    parser.add_argument("--redis", help="redis://host:port/db for shared limits across replicas")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name, None)
        for name in (
            "home", "db", "redis", "host", "port", "workers", "config",
            "providers", "strict_providers", "model_memory_mb",
        )
    }
    if getattr(args, "demo", False):
        overrides["demo"] = True
    return Settings.load(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        # Commands print their results on stdout; logs go to stderr, warnings only.
        configure_logging(settings.log_format, "warning")
        result = args.func(args, settings)
        if inspect.isawaitable(result):
            result = asyncio.run(result)
        return int(result or 0)
    except ValidationFailed as exc:
        for error in exc.errors:
            print(f"error: {error}", file=sys.stderr)
        return 1
    except LitegateError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
