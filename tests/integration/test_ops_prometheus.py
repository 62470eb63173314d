"""The shipped monitoring kit through real tools: promtool checks and unit-tests the alert
rules, and a real Prometheus scrapes a live gateway (Redis, an upstream, ONNX models)
until every metric each dashboard panel queries has data; the panels are then drawn from
that data (docs/screenshots/ops-dashboard.svg, linked from the README)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from litegate.app import create_app
from litegate.cli.ops import scrape_config
from litegate.ops import loadgen
from litegate.settings import Settings
from tests.fixtures.onnx_models import matmul_add_model
from tests.helpers.cli import apply_config, create_key, run_cli
from tests.helpers.panels_svg import dashboard_svg, series_of
from tests.helpers.servers import ThreadServer, free_port, run_fake_upstream
from tests.helpers.services import _wait_port, redis_server
from tests.helpers.windows import clear_of_minute_edge

OPS = Path(__file__).resolve().parents[2] / "litegate" / "ops"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ops"
METRIC_RE = re.compile(r"\b((?:litegate|process)_[a-z_]+)\b")
# Committed under docs/screenshots like the console's; LITEGATE_SCREENSHOTS redirects it.
SCREENSHOTS = Path(os.environ.get("LITEGATE_SCREENSHOTS")
                   or Path(__file__).resolve().parents[2] / "docs" / "screenshots")


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
    """The checks above can fail: a typo'd function is refused, and a CPU alert moved to
    95 % fails its unit test (the 90 % series no longer fires it)."""
    doc = yaml.safe_load((OPS / "alerts.yml").read_text())
    cpu = doc["groups"][0]["rules"][0]
    assert cpu["alert"] == "LitegateHighCPU"
    cpu["expr"] = "rat(process_cpu_seconds_total[1m]) > 0.85"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc))
    assert _promtool("check", "rules", "alerts.yml", cwd=tmp_path).returncode != 0
    cpu["expr"] = ("rate(process_cpu_seconds_total[1m]) > 0.95 "
                   "and on (instance, job) litegate_config_version")
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc))
    shutil.copy(FIXTURES / "alerts_test.yml", tmp_path)
    tested = _promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert tested.returncode != 0 and "LitegateHighCPU" in tested.stdout + tested.stderr


def test_ops_export_refuses_a_bad_target(tmp_path) -> None:
    code, _, err = run_cli("ops", "export", str(tmp_path), "--target", "no-port",
                           home=tmp_path / "home")
    assert code == 2 and err.strip() == "error: --target: expected HOST:PORT, got 'no-port'"


def _panel_exprs() -> list[tuple[str, str]]:
    dash = json.loads((OPS / "grafana-dashboard.json").read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


@dataclass
class Live:
    gateway: str
    prometheus: str
    traffic_from: float
    traffic_to: float


def _query(prom: str, expr: str) -> list[dict]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "success", (expr, r.text)
    return r.json()["data"]["result"]


def _scrapes(prom: str) -> int:
    got = _query(prom, "count_over_time(litegate_config_version[5m])")
    return int(float(got[0]["value"][1])) if got else 0


def _wait_scrapes(prom: str, more: int) -> None:
    target, deadline = _scrapes(prom) + more, time.monotonic() + 30
    while _scrapes(prom) < target:
        assert time.monotonic() < deadline, "Prometheus stopped scraping the gateway"
        time.sleep(0.2)


def _setup_gateway(home: Path, tmp: Path, fake_base: str) -> tuple[dict, str]:
    """Models (one good, one whose stored file is corrupted), routes and a key."""
    run_cli("models", "add", "add", str(matmul_add_model(tmp / "add.onnx")),
            "--max-batch", "8", home=home)
    run_cli("models", "add", "broken", str(matmul_add_model(tmp / "b.onnx")), home=home)
    for stored in (home / "models").rglob("*.onnx"):
        if "broken" in stored.parts:
            stored.write_bytes(b"not onnx any more")  # checksum mismatch: a load failure
    doc = {
        "upstreams": [{"name": "mock", "base_url": fake_base, "timeout_s": 5},
                      {"name": "dead", "base_url": f"http://127.0.0.1:{free_port()}/v1",
                       "timeout_s": 1, "max_retries": 0}],
        "routes": [
            {"name": "chat", "cache": {"ttl_s": 60}, "sticky": "none",
             "variants": [{"upstream": "mock", "model": "a", "weight": 70},
                          {"upstream": "mock", "model": "b", "weight": 30}]},
            {"name": "limited", "limits": ["2/minute"],
             "variants": [{"upstream": "mock", "model": "m"}]},
            {"name": "gone", "variants": [{"upstream": "dead", "model": "m"}]},
        ],
    }
    code, _, err = apply_config(home, doc)
    assert code == 0, err
    return doc, create_key(home)


def _drive(url: str, key: str) -> None:
    """Every kind of traffic a panel shows, with exact counts the test checks."""
    x = {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1.0] * 8}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
        for i in range(6):  # two prompts, three times each: misses then hits
            body = {"model": "chat", "messages": [{"role": "user", "content": str(i % 2)}]}
            assert c.post("/v1/chat/completions", json=body).status_code == 200
        clear_of_minute_edge()  # exact counts: not across a window boundary
        statuses = [c.post("/v1/chat/completions", json={
            "model": "limited", "messages": [{"role": "user", "content": "x"}]}).status_code
            for _ in range(3)]
        assert statuses.count(429) == 1
        gone = [c.post("/v1/chat/completions", json={
            "model": "gone", "messages": [{"role": "user", "content": "x"}]}).status_code
            for _ in range(5)]
        assert set(gone) <= {502, 503} and 503 in gone  # the circuit opened
        for _ in range(3):
            assert c.post("/v2/models/add/infer", json={"inputs": [x]}).status_code == 200
        wrong = {**x, "shape": [1, 3], "data": [1.0] * 3}
        assert c.post("/v2/models/add/infer", json={"inputs": [wrong]}).status_code == 400
        assert c.post("/v2/models/broken/infer", json={"inputs": [x]}).status_code == 503


def _background(url: str, key: str, seconds: float) -> None:
    """A few seconds of steady load (the loadtest engine, distinct prompts so the cache
    hits and misses, inference, 5xx) so the rate panels have a shape to draw: a burst
    that starts and ends between two scrapes is invisible to rate()."""
    stop = time.monotonic() + seconds

    def infer() -> None:
        x = {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5] * 4}
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
            while time.monotonic() < stop:
                c.post("/v2/models/add/infer", json={"inputs": [x]})
                c.post("/v1/chat/completions", json={  # 503 while its circuit is open
                    "model": "gone", "messages": [{"role": "user", "content": "x"}]})

    thread = threading.Thread(target=infer)
    thread.start()
    for prompt in ("p1", "p2", "p3"):
        asyncio.run(loadgen.run(loadgen.Plan(url=url, key=key, route="chat", connections=3,
                                             duration_s=seconds / 3, prompt=prompt)))
    thread.join()


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    from litegate.db import migrate

    tmp = tmp_path_factory.mktemp("ops-live")
    home = tmp / "home"
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: make test installs Debian's prometheus package"
    gateway_port, port = free_port(), free_port()
    config = yaml.safe_load(scrape_config([f"127.0.0.1:{gateway_port}"]))
    config["global"].update(scrape_interval="500ms", evaluation_interval="500ms")
    config["rule_files"] = [str(OPS / "alerts.yml")]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    # Started first: it boots while the gateway is set up (its target is down until then).
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    prom = f"http://127.0.0.1:{port}"
    try:
        with run_fake_upstream() as fake, redis_server() as redis:
            _, key = _setup_gateway(home, tmp, fake.base_url)
            settings = Settings.load(home=home, redis=redis, breaker_failures=3,
                                     reload_interval_s=0.1)
            migrate.upgrade(settings.db_url)
            with ThreadServer(create_app(settings), port=gateway_port) as server:
                _wait_port(port, timeout=30)
                _wait_scrapes(prom, 1)
                started = time.time()
                _drive(server.url, key)
                _background(server.url, key, 2.0)
                _wait_scrapes(prom, 2)  # after the traffic, so rate() sees all of it
                yield Live(server.url, prom, started, time.time())
    finally:
        proc.terminate()
        proc.wait(10)


def test_live_prometheus_finds_every_metric_each_panel_queries(live: Live) -> None:
    prom = live.prometheus
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

    assert value('sum(litegate_cache_total{result="HIT"})') >= 4
    assert value('sum(litegate_limit_rejections_total{route="limited"})') == 1
    assert value('max(litegate_circuit_open{upstream="dead"})') == 1
    assert value('sum(litegate_model_load_failures_total{model="broken"})') >= 1
    assert value('sum(litegate_model_request_failures_total{model="add",status="400"})') == 1
    assert value("min(litegate_redis_up)") == 1
    assert value('sum(litegate_model_queue_limit{model="add"})') > 0
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


def test_dashboard_panels_drawn_from_live_data(live: Live) -> None:
    """Each panel's queries over the traffic window, drawn as the README's picture."""
    dash = json.loads((OPS / "grafana-dashboard.json").read_text())
    t0, t1 = live.traffic_from - 1, live.traffic_to
    drawn, empty = [], []
    for panel in dash["panels"]:
        series = []
        for target in panel["targets"]:
            r = httpx.get(f"{live.prometheus}/api/v1/query_range", timeout=10, params={
                "query": target["expr"].replace("$__rate_interval", "2s"),
                "start": t0, "end": t1, "step": 0.5})
            assert r.status_code == 200, (panel["title"], r.text)
            series += series_of(r.json()["data"]["result"], target["legendFormat"])
        if not any(math.isfinite(v) for _, values in series for _, v in values):
            empty.append(panel["title"])
        drawn.append((panel, series))
    assert not empty, f"panels with no finite point: {empty}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    svg = dashboard_svg(drawn, t0, t1, "litegate dashboard: each panel's PromQL over a live "
                        "gateway's test traffic (Prometheus query_range, drawn by the test)")
    (SCREENSHOTS / "ops-dashboard.svg").write_text(svg)
    assert svg.count("<polyline") >= len(drawn)


def test_metrics_pass_promtool_lint_and_redis_up_only_with_redis(make_gateway) -> None:
    """Without --redis there is no litegate_redis_up (so the alert cannot misfire); with a
    Redis nobody listens on, it is 0."""
    plain = httpx.get(make_gateway().url + "/metrics").text
    assert "process_cpu_seconds_total " in plain and "process_resident_memory_bytes " in plain
    assert "litegate_redis_up" not in plain
    lint = subprocess.run(["promtool", "check", "metrics"], input=plain, check=False,
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    dead = make_gateway(redis=f"redis://127.0.0.1:{free_port()}/0")
    assert "\nlitegate_redis_up 0.0\n" in httpx.get(dead.url + "/metrics").text


def test_queue_full_refusals_are_counted_per_model(home, tmp_path, make_gateway) -> None:
    """max_queue 1: concurrent requests beyond the one in flight get 503, and each one is
    counted in litegate_model_queue_rejections_total (what LitegateModelQueueFull reads)."""
    code, _, err = run_cli("models", "add", "add", str(matmul_add_model(tmp_path / "a.onnx")),
                           "--max-batch", "8", "--option", "max_queue=1", home=home)
    assert code == 0, err
    key = create_key(home)
    server = make_gateway()
    x = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]}

    async def wave() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                     headers={"Authorization": f"Bearer {key}"}) as c:
            answers = await asyncio.gather(*(c.post("/v2/models/add/infer", json=x)
                                             for _ in range(20)))
        return [r.status_code for r in answers]

    statuses = asyncio.run(wave())  # loads the model; then queue behind one another
    for _ in range(3):
        if 503 in statuses:
            break
        statuses = asyncio.run(wave())
    assert set(statuses) == {200, 503}, statuses
    text = httpx.get(server.url + "/metrics").text
    line = next(x for x in text.splitlines()
                if x.startswith('litegate_model_queue_rejections_total{model="add"'))
    refused = statuses.count(503)
    assert float(line.rsplit(" ", 1)[1]) >= refused
    assert 'litegate_model_queue_limit{model="add",version="1"} 1.0' in text
