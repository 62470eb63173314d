"""``litegate admin create-user|set-password|end-sessions``: console accounts and sessions;
``litegate admin create-token|list-tokens|revoke-token``: tokens for the admin HTTP API."""

from __future__ import annotations

import argparse
import getpass
import sys

from litegate.cli.common import actor, print_json, print_table, transaction
from litegate.cli.serve import URL_FILE
from litegate.services import admin_tokens
from litegate.services import users as user_service
from litegate.settings import Settings


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("admin", help="admin console users and sessions; admin API tokens")
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
    t = s.add_parser("create-token", help="create an admin API token; the secret is shown only now")
    t.add_argument("name", help="token name (recorded as token:NAME in the audit log)")
    t.add_argument("--scope", choices=admin_tokens.SCOPES, required=True,
                   help="read: GET only; write: every admin API call")
    t.add_argument("--expires", help="30d, 12h or an ISO timestamp (default: never)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_create_token)
    lt = s.add_parser("list-tokens", help="list admin API tokens (never their secrets)")
    lt.add_argument("--json", action="store_true")
    lt.set_defaults(func=_list_tokens)
    rt = s.add_parser("revoke-token", help="revoke an admin API token (at once, on every replica)")
    rt.add_argument("token", metavar="NAME|ID")
    rt.set_defaults(func=_revoke_token)


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


async def _create_token(args: argparse.Namespace, settings: Settings) -> int:
    from litegate.cli.keys import expires_arg

    expires = expires_arg(args.expires) if args.expires else None
    async with transaction(settings) as session:
        token, secret = await admin_tokens.create_token(
            session, args.name, scope=args.scope, actor=actor(), expires_at=expires)
        row = admin_tokens.token_dict(token)
    if args.json:
        print_json(row | {"token": secret})
    else:
        print(f"Created admin token {row['name']!r} ({row['scope']}). "
              f"Secret (shown only now):\n\n    {secret}\n\n"
              f"Use it as `Authorization: Bearer <token>` on {serving_url(settings)}"
              f"{settings.admin_path}/api/")
    return 0


async def _list_tokens(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        tokens = await admin_tokens.list_tokens(session)
        rows = [admin_tokens.token_dict(t) | {"state": admin_tokens.token_state(t)}
                for t in tokens]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["id", "name", "prefix", "scope", "state", "created_at", "expires_at",
                           "last_used_at"])
    return 0


async def _revoke_token(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        token = await admin_tokens.revoke_token(session, args.token, actor=actor())
        name = token.name
    print(f"Revoked admin token {name!r}; it is refused from the next request on.")
    return 0
