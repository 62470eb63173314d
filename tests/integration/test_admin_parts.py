"""Admin building blocks without HTTP: session signing, charts, form error mapping,
the audit change summary and the dashboard's reading of ``Stats``."""

from __future__ import annotations

import time

from litegate.admin.charts import line_chart
from litegate.admin.config import changes
from litegate.admin.dashboard import build, normalize
from litegate.admin.forms import FormResult, map_errors, parse_route
from litegate.admin.session import SessionSigner, new_session

from litegate.policies.stats import Stats


def test_session_signer_roundtrip_tamper_and_expiry():
    signer = SessionSigner("secret", max_age_s=60)
    data = new_session("a-session-id")
    token = signer.dumps(data)
    assert signer.loads(token) == data
    payload, sig = token.split(".")
    assert signer.loads(payload + "." + sig[:-2] + "AA") is None
    assert signer.loads(payload + "x." + sig) is None
    assert signer.loads("garbage") is None and signer.loads("") is None
    assert SessionSigner("other", max_age_s=60).loads(token) is None
    assert signer.loads(token, now=time.time() + 61) is None
    assert new_session()["csrf"] != new_session()["csrf"]


def test_chart_escapes_labels_and_leaves_gaps():
    svg = str(line_chart("<b>t</b>", {"<script>x</script>": [(0, 1.0), (10, None), (20, 3.0)]}))
    assert "<script>x" not in svg and "&lt;script&gt;x&lt;/script&gt;" in svg
    assert "&lt;b&gt;t&lt;/b&gt;" in svg
    assert svg.count("<circle") == 2  # two isolated points around the gap, no line across it
    assert "style=" not in svg  # CSP: presentation attributes only
    empty = str(line_chart("none", {}))
    assert "no traffic yet" in empty


def test_map_errors_to_fields():
    form = {
        "name": "r", "variant_rows": "3",
        "variants-0-upstream": "", "variants-0-model": "", "variants-0-weight": "",
        "variants-1-upstream": "u", "variants-1-model": "m", "variants-1-weight": "-1",
        "variants-2-upstream": "u", "variants-2-model": "m2", "variants-2-weight": "2",
    }
    result = parse_route(form)
    assert result.ok and result.row_map == [1, 2]  # the blank first row is ignored
    map_errors(
        ["route.variants[0].weight: must be >= 0", "route.limits[1]: invalid rate 'x'",
         "route.cache.ttl_s: must be > 0", "something odd"],
        result,
    )
    assert result.errors == {
        "variants-1-weight": ["must be >= 0"], "limits": ["invalid rate 'x'"],
        "cache_ttl_s": ["must be > 0"], "__all__": ["something odd"],
    }
    r = FormResult({})
    map_errors(["limit[0]: bad", "key: unknown key 3"], r, aliases={"limit": "limits", "key": "key_id"})
    assert r.errors == {"limits": ["bad"], "key_id": ["unknown key 3"]}


def test_audit_changes_summary():
    before = {"name": "chat", "variants": [{"name": "a", "weight": 80}, {"name": "b", "weight": 20}]}
    after = {"name": "chat", "variants": [{"name": "a", "weight": 20}, {"name": "b", "weight": 80}],
             "cache": {"ttl_s": 5}}
    assert changes(before, after) == [
        ("variants[a].weight", "80", "20"), ("variants[b].weight", "20", "80"),
        ("cache.ttl_s", "—", "5"),
    ]
    assert changes(None, after) == []


def test_dashboard_reads_stats():
    stats = Stats()
    for i in range(10):
        stats.record("chat", "a" if i < 7 else "b", 200 if i else 502, 0.004, "HIT" if i < 5 else "MISS")
    stats.record(None, None, 401, 0.001, None)
    routes, variants = normalize(stats.series())
    assert set(routes) == {"chat", "(unrouted)"}
    assert set(variants) == {"chat/a", "chat/b", "(unrouted)/(none)"}
    data = build(stats, None)
    chat = next(r for r in data["route_rows"] if r["name"] == "chat")
    assert chat["requests"] == 10 and chat["errors"] == 1 and chat["cache_hit_rate"] == 0.5
    shares = {r["name"]: r["share"] for r in data["variant_rows"]}
    assert shares["chat/a"] == 0.7 and shares["chat/b"] == 0.3
    assert len(data["charts"]) == 6 and len(data["variant_charts"]) == 3
    assert build(None, None, window="bogus")["window"] == "10m"
