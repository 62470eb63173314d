"""``litegate config apply FILE`` / ``litegate config export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from litegate.cli.common import actor, print_json, transaction
from litegate.services import config as config_service
from litegate.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="declarative configuration (YAML/TOML you keep in git)")
    s = p.add_subparsers(dest="config_command", required=True)
    a = s.add_parser("apply", help="apply a file atomically: an invalid file changes nothing")
    a.add_argument("file", type=Path)
    a.add_argument("--prune", action="store_true", help="delete routes/upstreams not in the file")
    a.add_argument("--dry-run", action="store_true", help="validate only")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_apply)
    e = s.add_parser("export", help="print the current configuration")
    e.add_argument("--format", choices=["yaml", "json"], default="yaml")
    e.set_defaults(func=_export)


async def _apply(args: argparse.Namespace, settings: Settings) -> int:
    raw = config_service.load_file(args.file)
    doc = config_service.validate(raw)
    if args.dry_run:
        print(f"{args.file}: valid ({len(doc.upstreams)} upstreams, {len(doc.routes)} routes)")
        return 0
    async with transaction(settings) as session:
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


