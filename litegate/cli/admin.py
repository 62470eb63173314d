"""``litegate admin create-user|set-password``: accounts for the browser console."""

from __future__ import annotations

import argparse
import getpass
import sys

from litegate.cli.common import actor, transaction
from litegate.services import users as user_service
from litegate.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("admin", help="admin console users")
    s = p.add_subparsers(dest="admin_command", required=True)
    for name, func, help_text in (
        ("create-user", _create_user, "create a console user (password prompted)"),
        ("set-password", _set_password, "change a console user's password"),
    ):
        c = s.add_parser(name, help=help_text)
        c.add_argument("name", help="username")
        c.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of stdin instead of prompting",
        )
        c.set_defaults(func=func)


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
    print(f"Created admin user {username!r}. Sign in at http://{settings.host}:{settings.port}/admin")
    return 0


async def _set_password(args: argparse.Namespace, settings: Settings) -> int:
    password = user_service.validate_password(read_password(args))
    async with transaction(settings) as session:
        await user_service.set_password(session, args.name, password, actor=actor())
    print(f"Password changed for {args.name!r}.")
    return 0
