from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from litegate.app import create_app
from litegate.settings import Settings
from tests.helpers.servers import FakeUpstream, ThreadServer, run_fake_upstream


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    with run_fake_upstream() as fake:
        yield fake


@pytest.fixture
def make_gateway(home: Path):
    """Start the standalone app for ``home`` in a thread; yields a factory."""
    servers: list[ThreadServer] = []

    def start(**overrides: object) -> ThreadServer:
        from litegate.db import migrate

        settings = Settings.load(home=home, reload_interval_s=0.1, **overrides)
        migrate.upgrade(settings.db_url)
        server = ThreadServer(create_app(settings))
        server.__enter__()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.__exit__(None, None, None)


@pytest.fixture
async def admin_console(tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    """(gateway stand-in, a logged-in ``AsyncTestClient``) of the console app in
    process, over a fresh database in ``tmp_path``."""
    from litestar.testing import AsyncTestClient

    from tests.e2e.support import login, make_admin_gateway, make_app

    gw = await make_admin_gateway(tmp_path)
    app, _ = make_app(gw)
    async with AsyncTestClient(app) as client:
        assert (await login(client)).status_code == 303
        yield gw, client
    await gw.engine.dispose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (LITEGATE_FORBID_SKIPS=1) a skipped test is a failure, never hidden."""
    import os

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("LITEGATE_FORBID_SKIPS") and reporter is not None:
        skipped = reporter.stats.get("skipped", [])
        if skipped:
            reporter.write_line(f"ERROR: {len(skipped)} test(s) skipped; CI forbids skips", red=True)
            session.exitstatus = 1
