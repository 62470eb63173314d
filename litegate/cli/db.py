"""``litegate db upgrade|downgrade|current``."""

from __future__ import annotations

import argparse

from litegate.db import migrate
from litegate.settings import Settings


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("db", help="database migrations")
    s = p.add_subparsers(dest="db_command", required=True)
    up = s.add_parser("upgrade", help="apply migrations (default: to head)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=_upgrade)
    down = s.add_parser("downgrade", help="revert migrations (default: one step)")
    down.add_argument("revision", nargs="?", default="-1")
    down.set_defaults(func=_downgrade)
    cur = s.add_parser("current", help="show the current revision")
    cur.set_defaults(func=_current)


def _upgrade(args: argparse.Namespace, settings: Settings) -> int:
    migrate.upgrade(settings.db_url, args.revision)
    print(f"database at {migrate.current(settings.db_url) or 'base'}")
    return 0


def _downgrade(args: argparse.Namespace, settings: Settings) -> int:
    migrate.downgrade(settings.db_url, args.revision)
    print(f"database at {migrate.current(settings.db_url) or 'base'}")
    return 0


def _current(args: argparse.Namespace, settings: Settings) -> int:
    print(migrate.current(settings.db_url) or "base (no migrations applied)")
    return 0
