"""``litegate serve``: the standalone gateway under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from pathlib import Path

from litegate.cli.common import actor, transaction
from litegate.db import migrate
from litegate.logging import configure_logging
from litegate.settings import ENV_PREFIX, Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument("--config", type=Path, help="YAML/TOML applied at start-up")
    p.add_argument("--demo", action="store_true", help="register a demo model, route and key")
    p.add_argument("--providers", help='ONNX Runtime providers, e.g. "cuda,cpu" (default: auto)')
    p.add_argument("--strict-providers", action="store_true", default=None,
                   help="fail instead of falling back to CPU when a requested provider is missing")
    p.add_argument("--model-memory-mb", type=int, dest="model_memory_mb",
                   help="memory budget for loaded models; least recently used idle ones are unloaded")
    p.add_argument("--migrate", action="store_true",
                   help="apply migrations to a non-SQLite database before starting")
    p.set_defaults(func=_serve)


def _export_env(settings: Settings) -> None:
    """Worker processes rebuild Settings from the environment."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.name == "extra" or value is None:
            continue
        os.environ[ENV_PREFIX + f.name.upper()] = str(value)


def _tune_gc() -> None:
    """Startup objects (modules, ORM metadata, templates) live forever: freeze them so
    the collector stops rescanning them, and collect young objects less often — the
    hot path allocates many short-lived objects."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def app_from_env():  # type: ignore[no-untyped-def]
    from litegate.app import create_app

    settings = Settings.load()
    configure_logging(settings.log_format, settings.log_level, cache=True)
    app = create_app(settings)
    _tune_gc()
    return app


async def _prepare(settings: Settings) -> None:
    if settings.config is not None:
        from litegate.services import config as config_service

        doc = config_service.validate(config_service.load_file(settings.config))
        async with transaction(settings) as session:
            result = await config_service.apply_document(session, doc, actor="serve:--config")
        print(f"applied {settings.config} (config version {result['config_version']})", flush=True)
    if settings.demo:
        await setup_demo(settings)


async def setup_demo(settings: Settings) -> None:
    from litegate.services import keys as key_service

    try:
        from litegate.demo import setup_demo_model
    except ImportError:
        setup_demo_model = None
    if setup_demo_model is not None:
        await setup_demo_model(settings)
    async with transaction(settings) as session:
        existing = [k for k in await key_service.list_keys(session, include_revoked=False) if k.name == "demo"]
        if not existing:
            _key, secret = await key_service.create_key(
                session, name="demo", actor=actor(), limits=["600/minute"]
            )
            base = f"http://{settings.host}:{settings.port}"
            print(
                f"\n  Demo API key (shown once): {secret}\n\n"
                f"  Try it:\n"
                f"    curl -s {base}/v1/embeddings -H 'Authorization: Bearer {secret}' \\\n"
                f"         -H 'Content-Type: application/json' -d '{{\"model\": \"minilm\", \"input\": \"hello\"}}'\n"
                f"    python -c \"import openai; c = openai.OpenAI(base_url='{base}/v1', api_key='{secret}'); "
                f"print(len(c.embeddings.create(model='minilm', input='hello').data[0].embedding))\"\n",
                flush=True,
            )
        else:
            print("\n  Demo API key already exists (it was printed on the first run);"
                  " create another with: litegate keys create --name me\n", flush=True)
    try:
        from litegate.services import users
    except ImportError:
        return
    async with transaction(settings) as session:
        password = await users.ensure_demo_user(session)
    if password:
        print(f"  Admin console: http://{settings.host}:{settings.port}/admin"
              f"  user: admin  password (shown once): {password}\n", flush=True)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    configure_logging(settings.log_format, settings.log_level, cache=True)
    settings.home.mkdir(parents=True, exist_ok=True)
    if args.migrate:
        migrate.upgrade(settings.db_url)
    elif settings.db_url.startswith("sqlite"):
        migrate.upgrade_if_needed(settings.db_url)
    asyncio.run(_prepare(settings))
    common = dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        ws="none",  # the gateway serves no websockets
        server_header=False,  # do not advertise the server software
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    if settings.workers > 1:
        if not settings.redis:
            # Each worker would count on its own: N workers would allow N x every quota.
            print(
                "warning: --workers > 1 without --redis: limits, token quotas and the cache are "
                "per worker process; use --redis redis://... for one global quota",
                file=sys.stderr, flush=True,
            )
        _export_env(settings.replace(config=None, demo=False))
        uvicorn.run("litegate.cli.serve:app_from_env", factory=True, workers=settings.workers, **common)
    else:
        from litegate.app import create_app

        app = create_app(settings)
        _tune_gc()
        uvicorn.run(app, **common)
    return 0
