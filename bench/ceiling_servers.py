"""The ceiling forwarder (``bench/ceiling.py``, unchanged) under another ASGI server, so
each server's litegate can be compared with the same raw app on the same server.

Run: ``python bench/ceiling_servers.py --server granian --port 8100 --upstream http://127.0.0.1:9000``

* ``granian``: one worker process, uvloop, HTTP/1.1 and HTTP/2 on one port (h2c with prior
  knowledge) — the settings ``litegate serve --server granian`` uses;
* ``hypercorn``: in-process on uvloop, HTTP/1.1 and h2c (prior knowledge).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ceiling

ceiling.UPSTREAM = os.environ.get("CEILING_UPSTREAM", ceiling.UPSTREAM).rstrip("/")
app = ceiling.app


def main() -> None:
    p = argparse.ArgumentParser(description="the ceiling forwarder under granian or hypercorn")
    p.add_argument("--server", choices=("granian", "hypercorn"), required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--upstream", default=ceiling.UPSTREAM)
    a = p.parse_args()
    os.environ["CEILING_UPSTREAM"] = a.upstream  # granian's worker process imports this module anew
    ceiling.UPSTREAM = a.upstream.rstrip("/")
    if a.server == "granian":
        from granian.constants import HTTPModes, Interfaces, Loops
        from granian.log import LogLevels
        from granian.server import Server

        Server("ceiling_servers:app", address=a.host, port=a.port, interface=Interfaces.ASGI,
               loop=Loops.uvloop, http=HTTPModes.auto, websockets=False,
               log_level=LogLevels.warning, working_dir=Path(__file__).resolve().parent).serve()
    else:
        import uvloop
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"{a.host}:{a.port}"]
        config.accesslog = None
        config.loglevel = "WARNING"
        uvloop.run(serve(app, config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
