"""A gateway for soak tests, run as ``python -m tests.helpers.soak_server HOME PORT``.

The standalone app under uvicorn with uvloop and httptools (as ``litegate serve`` runs
it), in this process, with tracemalloc on. The probe path ``/__soak`` is added here
(test code, never in the product) and answers, after a full collection: the Python
heap that tracemalloc traces, the live upstream ``Response`` objects (one per
upstream answer still referenced) and the asyncio tasks.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import uvicorn

from litegate.app import create_app
from litegate.db import migrate
from litegate.settings import Settings
from litegate.upstreams.http1 import Response

PROBE_PATH = "/__soak"


def probe() -> dict[str, int]:
    gc.collect()
    return {
        "traced_bytes": tracemalloc.get_traced_memory()[0],
        "client_responses": sum(isinstance(o, Response) for o in gc.get_objects()),
        "tasks": len(asyncio.all_tasks()),
    }


def with_probe(app: Any) -> Any:
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == PROBE_PATH:
            body = json.dumps(probe()).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    return wrapped


def main(home: str, port: str) -> None:
    settings = Settings.load(home=Path(home), log_level="warning", access_log=False)
    migrate.upgrade(settings.db_url)
    tracemalloc.start(1)
    uvicorn.run(with_probe(create_app(settings)), host="127.0.0.1", port=int(port), loop="uvloop",
                http="httptools", log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main(*sys.argv[1:3])
