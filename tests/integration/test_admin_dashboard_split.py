"""The dashboard's A/B table on a real gateway: rate-limited and cached requests are
counted apart, never as a variant of the split."""

from __future__ import annotations

import re

import httpx

from tests.e2e.support import create_console_user, http_login
from tests.helpers.cli import apply_config, chat_config, create_key


def _cells(html: str, table: str) -> dict[str, dict[str, str]]:
    """``{row key: {metric: text}}`` for rows of ``<table id=table>``."""
    body = re.search(rf'<table class="grid" id="{table}">(.*?)</table>', html, re.S)
    assert body, f"no table {table}"
    rows: dict[str, dict[str, str]] = {}
    for key, row in re.findall(r'<tr data-(?:variant|route)="([^"]+)">(.*?)</tr>', body.group(1), re.S):
        rows[key] = dict(re.findall(r'data-metric="([a-z_]+)">([^<]*)<', row))
    return rows


def test_limited_and_cached_requests_stay_out_of_the_split(home, fake_upstream, make_gateway):
    doc = chat_config(
        fake_upstream.base_url, sticky="none", cache={"ttl_s": 60},
        variants=[
            {"name": "a", "upstream": "mock", "model": "model-a", "weight": 50},
            {"name": "b", "upstream": "mock", "model": "model-b", "weight": 50},
        ],
    )
    assert apply_config(home, doc)[0] == 0
    key = create_key(home, "dash", "--limit", "10/minute")
    create_console_user(home, "alice", "alice-password")
    server = make_gateway()
    seen = {"variant": 0, "hit": 0, "limited": 0}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for i in range(16):
            text = "same question" if i % 2 else f"question {i}"  # odd ones repeat: cache hits
            r = client.post(
                "/v1/chat/completions",
                json={"model": "chat", "messages": [{"role": "user", "content": text}]},
                headers={"Authorization": f"Bearer {key}"},
            )
            if r.status_code == 429:
                seen["limited"] += 1
            elif r.headers.get("x-cache") == "HIT":
                seen["hit"] += 1
            else:
                assert r.status_code == 200, r.text
                seen["variant"] += 1
    assert seen["limited"] >= 1 and seen["hit"] >= 1 and seen["variant"] >= 2, seen

    html = http_login(server.url, "alice", "alice-password").get("/admin/").text
    split = _cells(html, "variant-stats")
    assert set(split) <= {"chat/a", "chat/b"}, split  # no "(none)" row in the split
    assert sum(int(row["requests"]) for row in split.values()) == seen["variant"]
    shares = [float(row["share"].rstrip("%")) for row in split.values()]
    assert abs(sum(shares) - 100.0) < 0.2, shares
    outside = _cells(html, "outside-split")["chat"]
    assert int(outside["limited"]) == seen["limited"]
    assert int(outside["cache_hits"]) == seen["hit"]
