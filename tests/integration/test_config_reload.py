"""Declarative config, hot reload, A/B selection and keys."""

from __future__ import annotations

import collections
import sqlite3
import threading
import time

import httpx
import pytest

from tests.helpers.cli import apply_config, chat_config, create_key, run_cli
from tests.helpers.servers import run_fake_upstream


def post(server, key, model="chat", headers=None, **extra):
    return httpx.post(
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        json={"model": model, "messages": [{"role": "user", "content": "x"}], **extra},
        timeout=10,
    )


def wait_for(predicate, timeout=1.0):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return time.perf_counter()
        time.sleep(0.02)
    return None


def test_invalid_config_lists_every_error_and_changes_nothing(home, fake_upstream):
    assert apply_config(home, chat_config(fake_upstream.base_url))[0] == 0
    before = run_cli("config", "export", home=home)[1]
    bad = {
        "upstreams": [{"name": "mock", "kind": "openai", "base_url": "ftp://x"}],
        "routes": [
            {"name": "chat", "variants": [{"upstream": "ghost", "model": "m", "weight": -1}],
             "limits": ["lots/minute"], "sticky": "sometimes"},
            {"name": "chat", "variants": []},
        ],
    }
    code, out, err = apply_config(home, bad)
    assert code == 1
    for fragment in (
        "upstreams[0].base_url", "routes[0].variants[0].upstream: unknown upstream 'ghost'",
        "routes[0].variants[0].weight", "routes[0].limits[0]", "routes[0].sticky",
        "routes[1].variants: at least one variant", "routes[1].name: duplicate route",
    ):
        assert fragment in err, fragment
    assert run_cli("config", "export", home=home)[1] == before


def test_config_export_round_trips(home, fake_upstream, tmp_path):
    cfg = chat_config(fake_upstream.base_url, cache={"ttl_s": 60}, limits=["100/minute"],
                      sticky="header:X-User")
    apply_config(home, cfg)
    exported = run_cli("config", "export", home=home)[1]
    path = tmp_path / "exported.yaml"
    path.write_text(exported)
    code, out, _ = run_cli("config", "apply", str(path), home=home)
    assert code == 0
    assert run_cli("config", "export", home=home)[1] == exported
    assert "header:X-User" in exported and "100/minute" in exported


def test_hot_reload_within_a_second_without_dropping_inflight(home, make_gateway):
    with run_fake_upstream(slow_s=1.0) as fake:
        cfg = chat_config(fake.base_url)
        cfg["routes"].append({"name": "slow", "variants": [{"upstream": "mock", "model": "slow-model"}]})
        apply_config(home, cfg)
        key = create_key(home)
        server = make_gateway()
        assert post(server, key).json()["model"] == "small-model"
        inflight: list[httpx.Response] = []
        t = threading.Thread(target=lambda: inflight.append(post(server, key, model="slow")))
        t.start()
        time.sleep(0.2)
        cfg["routes"][0]["variants"] = [{"upstream": "mock", "model": "new-model", "weight": 1}]
        applied_at = time.perf_counter()
        assert apply_config(home, cfg)[0] == 0
        seen_at = wait_for(lambda: post(server, key).json()["model"] == "new-model", timeout=2.0)
        assert seen_at is not None and seen_at - applied_at < 1.0
        t.join()
        assert inflight[0].status_code == 200


def test_ab_split_and_stickiness(home, fake_upstream, make_gateway):
    cfg = chat_config(fake_upstream.base_url, sticky="none")
    cfg["routes"][0]["variants"] = [
        {"upstream": "mock", "model": "small-model", "weight": 90},
        {"upstream": "mock", "model": "big-model", "weight": 10},
    ]
    cfg["routes"].append({**cfg["routes"][0], "name": "sticky", "sticky": "key"})
    cfg["routes"].append({**cfg["routes"][0], "name": "byheader", "sticky": "header:X-User"})
    apply_config(home, cfg)
    keys = [create_key(home, f"k{i}") for i in range(12)]
    server = make_gateway()
    counts: collections.Counter[str] = collections.Counter()
    with httpx.Client(headers={"Authorization": f"Bearer {keys[0]}"}) as c:
        for _ in range(1000):
            r = c.post(server.url + "/v1/chat/completions",
                       json={"model": "chat", "messages": [{"role": "user", "content": "x"}]})
            counts[r.headers["x-litegate-variant"]] += 1
    # 90/10 of 1000: binomial sd ~ 9.5; allow ~4 sd.
    assert 860 <= counts["small-model"] <= 940, counts
    per_key = {}
    for k in keys:
        variants = {post(server, k, model="sticky").headers["x-litegate-variant"] for _ in range(5)}
        assert len(variants) == 1, "a key must stick to its variant"
        per_key[k] = variants.pop()
    for user in ("alice", "bob", "carol"):
        seen = {post(server, keys[0], model="byheader", headers={"X-User": user})
                .headers["x-litegate-variant"] for _ in range(5)}
        assert len(seen) == 1


def test_keys_are_stored_hashed_and_revocation_applies_live(home, fake_upstream, make_gateway):
    apply_config(home, chat_config(fake_upstream.base_url))
    key = create_key(home)
    server = make_gateway()
    assert post(server, key).status_code == 200
    raw = b"".join(p.read_bytes() for p in home.glob("litegate.db*"))
    assert key.encode() not in raw
    import hashlib

    with sqlite3.connect(home / "litegate.db") as db:
        (stored,) = db.execute("select key_hash from api_keys").fetchone()
    assert stored == hashlib.sha256(key.encode()).hexdigest()
    code, out, _ = run_cli("keys", "list", "--json", home=home)
    assert key not in out and key[:9] in out
    code, out, _ = run_cli("keys", "revoke", "1", home=home)
    assert code == 0
    assert wait_for(lambda: post(server, key).status_code == 401, timeout=1.5)


def test_expired_key_is_401(home, fake_upstream, make_gateway):
    apply_config(home, chat_config(fake_upstream.base_url))
    key = create_key(home, "short", "--expires", "2s")
    server = make_gateway()
    assert post(server, key).status_code == 200
    time.sleep(2.1)
    r = post(server, key)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


def test_keys_create_rejects_bad_input(home, fake_upstream):
    apply_config(home, chat_config(fake_upstream.base_url))
    code, _, err = run_cli("keys", "create", "--name", "x", "--limit", "many/day", home=home)
    assert code == 1 and "invalid rate" in err
    code, _, err = run_cli("keys", "create", "--name", "x", "--routes", "nope", home=home)
    assert code == 1 and "unknown route" in err
    code, out, _ = run_cli("keys", "list", "--json", home=home)
    assert out.strip() == "[]"


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_export_formats(home, fake_upstream, fmt):
    apply_config(home, chat_config(fake_upstream.base_url))
    code, out, _ = run_cli("config", "export", "--format", fmt, home=home)
    assert code == 0 and "small-model" in out
