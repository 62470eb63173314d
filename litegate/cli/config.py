"""``litegate config apply FILE`` / ``litegate config export``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from litegate.cli import litellm
from litegate.cli.common import actor, print_json, transaction
from litegate.services import config as config_service
from litegate.services.schema import ConfigDocument, ValidationFailed
from litegate.settings import Settings


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("config", help="declarative configuration (YAML/TOML you keep in git)")
    s = p.add_subparsers(dest="config_command", required=True)
    a = s.add_parser(
        "apply", help="apply a file atomically: an invalid file changes nothing",
        description="By default the file is the whole configuration: it defines every upstream "
                    "its routes use (--prune also deletes what it lacks). With --merge it is a "
                    "patch: its routes may use upstreams (and fall back to routes) already in "
                    "the database, and nothing is deleted.")
    a.add_argument("file", type=Path)
    mode = a.add_mutually_exclusive_group()
    mode.add_argument("--prune", action="store_true", help="delete routes/upstreams not in the file")
    mode.add_argument("--merge", action="store_true",
                      help="apply as a patch over the database's configuration")
    a.add_argument("--dry-run", action="store_true", help="validate only")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_apply)
    e = s.add_parser("export", help="print upstreams and routes as YAML (never keys, models or users)")
    e.add_argument("--format", choices=["yaml", "json"], default="yaml")
    e.set_defaults(func=_export)
    litellm.register(s)


WHOLE_MODE = ("mode: whole configuration (the default): the file must define every upstream "
              "and fallback route its routes use; to build on what the database has, use --merge")
MERGE_MODE = ("mode: --merge (a patch): upstreams and fallback routes must be in the file or "
              "already in the database (see `litegate config export`)")


def _validate(args: argparse.Namespace, raw: object, known: tuple[set[str], set[str]]) -> ConfigDocument:
    try:
        doc = config_service.validate(raw, known_upstreams=known[0], known_routes=known[1])
    except ValidationFailed as exc:
        raise ValidationFailed([*exc.errors, MERGE_MODE if args.merge else WHOLE_MODE]) from None
    for name, env in config_service.unset_key_variables(doc).items():
        print(f"warning: upstream {name!r}: {env} is not set here; a gateway started without "
              "it sends requests to this upstream with no Authorization header", file=sys.stderr)
    return doc


async def _apply(args: argparse.Namespace, settings: Settings) -> int:
    raw = config_service.load_file(args.file)
    if not args.merge:  # a whole file validates on its own: --dry-run needs no database
        doc = _validate(args, raw, (set(), set()))
        if args.dry_run:
            print(f"{args.file}: valid ({len(doc.upstreams)} upstreams, {len(doc.routes)} routes)")
            return 0
    async with transaction(settings) as session:
        if args.merge:
            doc = _validate(args, raw, await config_service.known_names(session))
            if args.dry_run:
                print(f"{args.file}: valid as a patch ({len(doc.upstreams)} upstreams, "
                      f"{len(doc.routes)} routes)")
                return 0
        result = await config_service.apply_document(session, doc, actor=actor(), prune=args.prune)
    if args.json:
        print_json(result)
    else:
        print(
            f"applied {args.file}: {result['upstreams']} upstreams, {result['routes']} routes"
            f"{', ' + str(result['deleted']) + ' deleted' if result['deleted'] else ''}"
            f" (config version {result['config_version']})"
        )
    return 0


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    async with transaction(settings) as session:
        doc = await config_service.export_document(session)
    if args.format == "json":
        print(json.dumps(doc, indent=2))
    else:
        print(yaml.safe_dump(doc, sort_keys=False), end="")
    return 0


