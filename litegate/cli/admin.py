"""``litegate admin create-user|set-password|end-sessions``: console accounts and sessions."""

from __future__ import annotations

import argparse
import getpass
import sys

from litegate.cli.common import actor, transaction
from litegate.cli.serve import URL_FILE
from litegate.services import users as user_service
from litegate.settings import Settings


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("admin", help="admin console users")
    s = p.add_subparsers(dest="admin_command", required=True)
    for name, func, help_text in (
        ("create-user", _create_user, "create a console user (password prompted)"),
        ("set-password", _set_password, "change a console user's password (ends their sessions)"),
    ):
        c = s.add_parser(name, help=help_text)
        c.add_argument("name", help="username")
        c.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of stdin instead of prompting",
        )
        c.set_defaults(func=func)
    e = s.add_parser("end-sessions", help="sign out console sessions (all users, or one)")
    e.add_argument("name", nargs="?", help="only this user's sessions")
    e.set_defaults(func=_end_sessions)


def serving_url(settings: Settings) -> str:
    """The URL a running ``serve`` with this home wrote down, else the configured one."""
    try:
        return (settings.home / URL_FILE).read_text().strip()
    except OSError:
        return f"http://{settings.host}:{settings.port}"


def read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        return password.rstrip("\r")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != password:
        raise ValueError("passwords do not match")
    return password


async def _create_user(args: argparse.Namespace, settings: Settings) -> int:
    password = user_service.validate_password(read_password(args))
    async with transaction(settings) as session:
        user = await user_service.create_user(session, args.name, password, actor=actor())
        username = user.username
    print(f"Created admin user {username!r}. Sign in at {serving_url(settings)}{settings.admin_path}")
    return 0


async def _set_password(args: argparse.Namespace, settings: Settings) -> int:
    password = user_service.validate_password(read_password(args))
    async with transaction(settings) as session:
        await user_service.set_password(session, args.name, password, actor=actor())
    print(f"Password changed for {args.name!r}; their console sessions were ended.")
    return 0


async def _end_sessions(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        ended = await user_service.end_sessions(session, args.name, actor=actor())
    who = f"user {args.name!r}" if args.name else "all users"
    print(f"Ended {ended} console session(s) of {who}.")
    return 0
