"""The shipped monitoring kit through real tools: promtool checks and unit-tests the alert
rules, and a real Prometheus scrapes a live gateway (Redis, an upstream, ONNX models)
until every metric each dashboard panel queries has data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from litegate.cli.ops import scrape_config
from tests.fixtures.onnx_models import matmul_add_model
from tests.helpers.cli import apply_config, create_key, run_cli
from tests.helpers.servers import free_port
from tests.helpers.services import _wait_port, redis_server

OPS = Path(__file__).resolve().parents[2] / "litegate" / "ops"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ops"
METRIC_RE = re.compile(r"\b((?:litegate|process)_[a-z_]+)\b")


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool missing: make test installs Debian's prometheus package"
    return subprocess.run([binary, *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_exported_rules_pass_promtool_check_and_every_alert_has_a_unit_test(tmp_path) -> None:
    code, out, err = run_cli("ops", "export", str(tmp_path), home=tmp_path / "home")
    assert code == 0, err
    assert {Path(p).name for p in out.split()} == {"grafana-dashboard.json", "alerts.yml",
                                                     "prometheus.yml"}
    checked = _promtool("check", "rules", "alerts.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout
    config = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert config.returncode == 0, config.stdout + config.stderr

    shutil.copy(FIXTURES / "alerts_test.yml", tmp_path)
    tested = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    rules = yaml.safe_load((tmp_path / "alerts.yml").read_text())["groups"][0]["rules"]
    firing = {a["alertname"] for t in yaml.safe_load((tmp_path / "alerts_test.yml").read_text())["tests"]
              for a in t["alert_rule_test"] if a["exp_alerts"]}
    assert firing == {r["alert"] for r in rules}


def test_a_broken_rule_file_fails_promtool(tmp_path) -> None:
    """The checks above can fail: a rule on a typo'd function is refused."""
    doc = yaml.safe_load((OPS / "alerts.yml").read_text())
    doc["groups"][0]["rules"][0]["expr"] = "rat(process_cpu_seconds_total[1m]) > 0.85"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc))
    assert _promtool("check", "rules", "alerts.yml", cwd=tmp_path).returncode != 0


def test_ops_export_refuses_a_bad_target(tmp_path) -> None:
    code, _, err = run_cli("ops", "export", str(tmp_path), "--target", "no-port",
                           home=tmp_path / "home")
    assert code == 2 and err.strip() == "error: --target: expected HOST:PORT, got 'no-port'"


def _panel_exprs() -> list[tuple[str, str]]:
    dash = json.loads((OPS / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


@pytest.fixture
def busy_gateway(tmp_path, home, make_gateway, fake_upstream) -> Iterator[str]:
    """A gateway on Redis that has served every kind of traffic a panel shows."""
    run_cli("models", "add", "add", str(matmul_add_model(tmp_path / "add.onnx")),
            "--max-batch", "8", home=home)
    run_cli("models", "add", "broken", str(matmul_add_model(tmp_path / "b.onnx")), home=home)
    for stored in (home / "models").rglob("*.onnx"):
        if "broken" in stored.parts:
            stored.write_bytes(b"not onnx any more")  # checksum mismatch: a load failure
    dead = f"http://127.0.0.1:{free_port()}/v1"
    doc = {
        "upstreams": [{"name": "mock", "base_url": fake_upstream.base_url, "timeout_s": 5},
                      {"name": "dead", "base_url": dead, "timeout_s": 1, "max_retries": 0}],
        "routes": [
            {"name": "chat", "cache": {"ttl_s": 60}, "sticky": "none",
             "variants": [{"upstream": "mock", "model": "a", "weight": 50},
                          {"upstream": "mock", "model": "b", "weight": 50}]},
            {"name": "limited", "limits": ["2/minute"],
             "variants": [{"upstream": "mock", "model": "m"}]},
            {"name": "gone", "variants": [{"upstream": "dead", "model": "m"}]},
        ],
    }
    code, _, err = apply_config(home, doc)
    assert code == 0, err
    key = create_key(home)
    with redis_server() as redis:
        server = make_gateway(redis=redis, breaker_failures=3)
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=10) as c:
            for i in range(6):  # the same prompt thrice per variant: misses then hits
                body = {"model": "chat", "messages": [{"role": "user", "content": str(i % 2)}]}
                assert c.post("/v1/chat/completions", json=body).status_code == 200
            statuses = [c.post("/v1/chat/completions", json={
                "model": "limited", "messages": [{"role": "user", "content": "x"}]}).status_code
                for _ in range(3)]
            assert statuses.count(429) == 1
            gone = [c.post("/v1/chat/completions", json={
                "model": "gone", "messages": [{"role": "user", "content": "x"}]}).status_code
                for _ in range(5)]
            assert set(gone) <= {502, 503} and 503 in gone  # the circuit opened
            x = {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1.0] * 8}
            for _ in range(3):
                assert c.post("/v2/models/add/infer", json={"inputs": [x]}).status_code == 200
            wrong = {**x, "shape": [1, 3], "data": [1.0] * 3}
            assert c.post("/v2/models/add/infer", json={"inputs": [wrong]}).status_code == 400
            assert c.post("/v2/models/broken/infer", json={"inputs": [x]}).status_code == 503
        yield server.url


def _query(prom: str, expr: str) -> list[dict]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "success", (expr, r.text)
    return r.json()["data"]["result"]


def test_live_prometheus_finds_every_metric_each_panel_queries(busy_gateway, tmp_path) -> None:
    target = busy_gateway.removeprefix("http://")
    config = yaml.safe_load(scrape_config([target]))
    config["global"].update(scrape_interval="500ms", evaluation_interval="500ms")
    config["rule_files"] = [str(OPS / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: make test installs Debian's prometheus package"
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    prom = f"http://127.0.0.1:{port}"
    try:
        _wait_port(port, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # two scrapes, so rate() has two samples
            got = _query(prom, "count_over_time(litegate_config_version[1m])")
            if got and float(got[0]["value"][1]) >= 2:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("Prometheus never scraped the gateway twice in 30 s")
        health = httpx.get(f"{prom}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        assert [t["health"] for t in health] == ["up"]

        missing = []
        for title, expr in _panel_exprs():
            for metric in set(METRIC_RE.findall(expr)):
                if not _query(prom, metric):
                    missing.append(f"{title}: {metric}")
            if not _query(prom, expr.replace("$__rate_interval", "1m")):
                missing.append(f"{title}: {expr}")
        assert not missing, "\n".join(missing)

        # Values, not just series: the traffic above is what Prometheus saw.
        def value(expr: str) -> float:
            return float(_query(prom, expr)[0]["value"][1])

        assert value('sum(litegate_cache_total{result="HIT"})') >= 2
        assert value('sum(litegate_limit_rejections_total{route="limited"})') == 1
        assert value('max(litegate_circuit_open{upstream="dead"})') == 1
        assert value('sum(litegate_model_load_failures_total{model="broken"})') >= 1
        assert value("min(litegate_redis_up)") == 1
        assert value('sum(litegate_model_queue_limit{model="add"})') > 0
        assert value('sum(litegate_model_memory_bytes{model="add"})') >= 0
        assert value("sum(process_resident_memory_bytes)") > 0
        # Every shipped rule evaluates cleanly against real series (health "ok", not "err").
        deadline = time.monotonic() + 10
        while True:
            rules = [r for g in httpx.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]
                     ["groups"] for r in g["rules"]]
            if all(r["health"] != "unknown" for r in rules) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(rules) == 8 and all(r["health"] == "ok" for r in rules), rules
        circuit = next(r for r in rules if r["name"] == "LitegateCircuitOpen")
        assert circuit["state"] == "pending"  # open now, fires after its minute
    finally:
        proc.terminate()
        proc.wait(10)
