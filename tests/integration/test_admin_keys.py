"""Editing keys after creation (CLI ``keys update`` and the console), the per-key
usage view, and search and pagination of keys and the audit log."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import timedelta

import httpx
from sqlalchemy import update

from litegate.db.models import ApiKey, utcnow
from litegate.services import keys as key_service
from tests.e2e.support import (
    create_console_user,
    csrf_of,
    http_login,
)
from tests.helpers.cli import apply_config, chat_config, create_key, run_cli
from tests.helpers.windows import clear_of_minute_edge


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _chat(client: httpx.Client, key: str, model: str = "chat") -> int:
    return client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hello there"}]},
        headers={"Authorization": f"Bearer {key}"},
    ).status_code


def _two_routes(base_url: str) -> dict:
    doc = chat_config(base_url)
    doc["routes"].append({**doc["routes"][0], "name": "chat2"})
    return doc


def _key_row(home, key_id: int) -> dict:
    code, out, err = run_cli("keys", "list", "--json", home=home)
    assert code == 0, err
    return next(r for r in json.loads(out) if r["id"] == key_id)


def test_cli_keys_update_on_a_running_gateway(home, fake_upstream, make_gateway):
    assert apply_config(home, _two_routes(fake_upstream.base_url))[0] == 0
    code, out, _ = run_cli("keys", "create", "--name", "svc", "--routes", "chat", "--limit",
                           "2/minute", "--json", home=home)
    created = json.loads(out)
    key, key_id = created["key"], created["id"]
    server = make_gateway()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        clear_of_minute_edge()  # exact counts: not across a window boundary
        assert [_chat(client, key) for _ in range(3)] == [200, 200, 429]
        assert _chat(client, key, "chat2") == 403

        code, out, err = run_cli("keys", "update", str(key_id), "--routes", "chat,chat2",
                                 "--limit", "100/minute", "--expires", "30d", home=home)
        assert code == 0, err
        assert "routes chat,chat2; limits 100/minute; token limits none" in out
        _eventually(lambda: _chat(client, key, "chat2") == 200)
        assert _chat(client, key) == 200  # the old 2/minute limit is gone
        row = _key_row(home, key_id)
        assert row["routes"] == ["chat", "chat2"] and row["expires_at"]

        code, out, err = run_cli("keys", "update", str(key_id), "--routes", "*", "--limit", "none",
                                 "--token-limit", "1/hour", "--expires", "never", home=home)
        assert code == 0, err
        assert "routes *; limits none; token limits 1/hour; expires never" in out
        assert _key_row(home, key_id)["expires_at"] is None

    code, _, err = run_cli("keys", "update", str(key_id), "--limit", "lots", home=home)
    assert code != 0 and "invalid rate 'lots'" in err
    code, _, err = run_cli("keys", "update", str(key_id), "--routes", "nope", home=home)
    assert code != 0 and "unknown route" in err
    code, _, err = run_cli("keys", "update", "999999", "--limit", "none", home=home)
    assert code != 0 and "API key 999999 not found" in err
    assert run_cli("keys", "revoke", str(key_id), home=home)[0] == 0
    code, _, err = run_cli("keys", "update", str(key_id), "--limit", "none", home=home)
    assert code != 0 and "is revoked" in err


def test_console_edits_a_key_and_shows_its_usage(home, fake_upstream, make_gateway):
    assert apply_config(home, _two_routes(fake_upstream.base_url))[0] == 0
    key = create_key(home, "team", "--routes", "chat", "--limit", "3/minute")
    create_console_user(home, "alice", "alice-password")
    server = make_gateway()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        clear_of_minute_edge()  # exact counts: not across a window boundary
        statuses = [_chat(client, key) for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        assert _chat(client, key, "chat2") == 403
    console = http_login(server.url, "alice", "alice-password")
    listing = console.get("/admin/keys").text
    key_id = int(re.search(r'href="/admin/keys/(\d+)" class="key-link">team<', listing).group(1))
    page = console.get(f"/admin/keys/{key_id}").text
    usage = dict(re.findall(r'data-metric="([a-z]+)">(\d+)<', page.split('id="key-usage"')[1]))
    assert usage["requests"] == "6" and usage["limited"] == "2" and usage["errors"] == "0"
    assert int(usage["tokens"]) > 0
    assert "3/minute" in page

    token = csrf_of(page)
    bad = console.post(f"/admin/keys/{key_id}", data={
        "_csrf": token, "routes": ["chat"], "limits": "often", "token_limits": "", "expires_at": "",
    })
    assert bad.status_code == 400 and "invalid rate" in bad.text
    r = console.post(f"/admin/keys/{key_id}", data={
        "_csrf": token, "routes": ["chat", "chat2"], "limits": "50/minute", "token_limits": "",
        "expires_at": "2099-01-01T00:00",
    })
    assert r.status_code == 303 and r.headers["location"] == f"/admin/keys/{key_id}"
    page = console.get(f"/admin/keys/{key_id}").text
    assert "Key team updated." in page and "50/minute" in page
    assert 'value="2099-01-01T00:00"' in page
    with httpx.Client(base_url=server.url, timeout=10) as client:
        _eventually(lambda: _chat(client, key, "chat2") == 200)
        assert _chat(client, key) == 200
    audit = console.get("/admin/audit", params={"q": "team", "action": "update"}).text
    assert "limits" in audit and "50/minute" in audit


async def test_keys_search_status_and_pagination(admin_console):
    gw, client = admin_console
    async with gw.sessionmaker() as s, s.begin():
        for i in range(120):
            name = f"{'web' if i % 2 else 'batch'}-{i:03d}"
            await key_service.create_key(s, name=name, actor="t")
        for key_id in (1, 3, 5):
            await key_service.revoke_key(s, key_id, actor="t")
        await s.execute(  # expired a minute ago (the service refuses past expiries)
            update(ApiKey).where(ApiKey.id == 7).values(expires_at=utcnow() - timedelta(minutes=1))
        )

    def names(html: str) -> list[str]:
        return re.findall(r'<tr data-key="\d+" data-key-name="([^"]+)">', html)

    first = (await client.get("/admin/keys")).text
    assert len(names(first)) == 50 and names(first)[0] == "web-119"  # newest first
    assert "120 keys." in first and "Page 1 of 3" in first
    third = await client.get("/admin/keys", params={"page": "3"})
    assert third.status_code == 200 and len(names(third.text)) == 20
    assert (await client.get("/admin/keys", params={"page": "4"})).status_code == 400
    web = (await client.get("/admin/keys", params={"q": "web"})).text
    assert "60 keys." in web and all(n.startswith("web-") for n in names(web))
    assert 'href="/admin/keys?q=web&amp;page=2"' in web  # the pager keeps the search
    revoked = (await client.get("/admin/keys", params={"status": "revoked"})).text
    assert sorted(names(revoked)) == ["batch-000", "batch-002", "batch-004"]
    active = (await client.get("/admin/keys", params={"status": "active", "q": "batch-00"})).text
    assert sorted(names(active)) == ["batch-008"]  # 000/002/004 revoked, 006 expired
    expired = (await client.get("/admin/keys", params={"status": "expired"})).text
    assert names(expired) == ["batch-006"]
    assert (await client.get("/admin/keys", params={"status": "bogus"})).status_code == 400
    # the audit log: 120 creations + 3 revocations + the admin user, searchable and paged
    audit = (await client.get("/admin/audit", params={"q": "web-1"})).text
    assert "10 entries." in audit
    page3 = (await client.get("/admin/audit", params={"page": "3"})).text
    assert "Page 3 of 3" in page3 and page3.count('<tr data-entity-type') == 24
