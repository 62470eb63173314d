"""``litegate`` command line. Each command group lives in its own module with a
``register(subparsers)`` function; handlers are ``async (args, settings) -> int``.

Exit status: 0 success, 1 invalid input or a refused change, 2 usage error,
3 operational fault (database unreachable, locked or not migrated, port in use: the
one-line message names the fix), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
from collections.abc import Sequence

from litegate.db.rows import database_errors
from litegate.errors import LitegateError
from litegate.faults import (
    EXIT_OPERATIONAL,
    OperationalFault,
    explain_db_error,
    raised_by_database_code,
)
from litegate.log_config import configure_logging
from litegate.services.schema import ValidationFailed
from litegate.settings import Settings

COMMANDS = {
    "serve": "litegate.cli.serve",
    "db": "litegate.cli.db",
    "keys": "litegate.cli.keys",
    "usage": "litegate.cli.usage",
    "routes": "litegate.cli.routes",
    "upstreams": "litegate.cli.routes",
    "config": "litegate.cli.config",
    "models": "litegate.cli.models",
    "admin": "litegate.cli.admin",
    "ops": "litegate.cli.ops",
    "loadtest": "litegate.cli.loadtest",
}
"""Command name -> the module that registers it."""
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))
_VALUE_FLAGS = frozenset({"--home", "--db", "--redis"})


def _command_module(argv: Sequence[str]) -> str | None:
    """The module of the command ``argv`` names (None: unknown, or help for all): only it
    is imported, so ``serve`` does not carry every other command's imports (the ORM,
    numpy, Alembic) in the process that serves."""
    args = iter(argv)
    for arg in args:
        if arg in _VALUE_FLAGS:
            next(args, None)
        elif not arg.startswith("-"):
            return COMMANDS.get(arg)
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litegate",
        description="A lightweight, fast inference gateway. Settings also come from LITEGATE_* env vars.",
    )
    parser.add_argument("--version", action="version", version=f"litegate {_version()}")
    _add_global_flags(parser, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    only = _command_module(argv) if argv is not None else None
    for name in (only,) if only else COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    _accept_global_flags_everywhere(parser)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("litegate")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _add_global_flags(parser: argparse.ArgumentParser, *, default: object) -> None:
    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument("--home", default=default,
                       help="state directory (SQLite file, models); default ./.litegate")
    group.add_argument("--db", default=default, help="database URL (default: SQLite under --home)")
    group.add_argument("--redis", default=default,
                       help="redis://host:port/db for shared limits across replicas")


def _accept_global_flags_everywhere(parser: argparse.ArgumentParser) -> None:
    """``litegate serve --db URL`` as well as ``litegate --db URL serve``. Sub-commands
    leave the value unset when the flag is absent (SUPPRESS), so the top level's stays."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for child in action.choices.values():  # type: ignore[union-attr]
            _add_global_flags(child, default=argparse.SUPPRESS)
            _accept_global_flags_everywhere(child)


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name, None)
        for name in (
            "home", "db", "redis", "host", "port", "workers", "config",
            "providers", "strict_providers", "model_memory_mb", "devices", "gpu_memory_mb",
        )
    }
    if getattr(args, "demo", False):
        overrides["demo"] = True
    return Settings.load(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    settings: Settings | None = None
    try:
        settings = settings_from_args(args)
        # Commands print their results on stdout; logs go to stderr, warnings only.
        configure_logging(settings.log_format, "warning")
        result = args.func(args, settings)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except OperationalFault as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_OPERATIONAL
    except database_errors() as exc:
        # The database driver's own errors: explained in one line, or a real bug.
        fault = settings and raised_by_database_code(exc) and explain_db_error(
            exc, settings.db_url, timeout_s=settings.db_timeout_s)
        if not fault:
            raise
        print(f"error: {fault}", file=sys.stderr)
        return EXIT_OPERATIONAL
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
