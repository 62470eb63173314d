"""docs/deploy validated as far as this machine can (no Docker daemon, no helm binary, no
cluster): YAML parses, the compose file's bind mounts and build files exist, the Prometheus
config passes promtool, the Dockerfile is slim, non-root and healthchecks /readyz, and the
Helm templates, rendered by the Go-template subset below, pass the Kubernetes schemas."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "docs" / "deploy"
COMPOSE = DEPLOY / "compose"
CHART = DEPLOY / "helm" / "litegate"
K8S_VERSION = "1.30.0"


def test_every_yaml_file_outside_the_helm_templates_parses() -> None:
    files = [p for p in DEPLOY.rglob("*.y*ml") if "templates" not in p.parts]
    assert len(files) >= 6
    for path in files:
        assert yaml.safe_load(path.read_text()) is not None, path


def test_compose_runs_replicas_with_redis_postgres_prometheus_and_grafana() -> None:
    doc = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    services = doc["services"]
    assert set(services) == {"redis", "postgres", "migrate", "gateway", "lb", "prometheus",
                             "grafana"}
    gateway = services["gateway"]
    assert gateway["deploy"]["replicas"] == "${LITEGATE_REPLICAS:-3}"
    assert gateway["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    env = gateway["environment"]
    assert env["LITEGATE_REDIS"] == "redis://redis:6379/0"
    assert env["LITEGATE_DB"].startswith("postgresql+asyncpg://litegate:${POSTGRES_PASSWORD")
    build = gateway["build"]
    assert (COMPOSE / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    for name, service in services.items():  # every bind mount's source is in the repo
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name}: {source}"
    grafana = {v.split(":")[0]: v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert (COMPOSE / "../../../litegate/ops/grafana-dashboard.json").resolve() == \
        ROOT / "litegate" / "ops" / "grafana-dashboard.json"
    provider = yaml.safe_load(
        (COMPOSE / "grafana/provisioning/dashboards/litegate.yml").read_text())["providers"][0]
    assert grafana["../../../litegate/ops/grafana-dashboard.json"].startswith(
        provider["options"]["path"] + "/")
    datasource = yaml.safe_load(
        (COMPOSE / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert datasource[0]["url"] == "http://prometheus:9090" and datasource[0]["isDefault"]


def test_compose_prometheus_config_passes_promtool_with_the_shipped_rules(tmp_path) -> None:
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    mounts = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["prometheus"]
    assert "../../../litegate/ops/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts["volumes"]
    shutil.copy(ROOT / "litegate" / "ops" / "alerts.yml", tmp_path)
    config["rule_files"] = ["alerts.yml"]  # where the mount puts it, relative here
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    out = subprocess.run(["promtool", "check", "config", "prometheus.yml"], check=False, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 8 rules found" in out.stdout


def test_dockerfile_is_slim_non_root_and_healthchecks_readyz() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in re.sub(r"\\\n\s*", " ", text).splitlines()
                    if line.strip() and not line.startswith("#")]
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert froms and all("-slim" in f for f in froms)
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    health = [arg for op, arg in instructions if op == "HEALTHCHECK"]
    assert len(health) == 1 and "/readyz" in health[0]
    exec_form = json.loads(health[0].split("CMD", 1)[1])
    assert exec_form[0] == "python"  # no curl in a slim image
    compile(exec_form[2], "healthcheck", "exec")
    for op, arg in instructions:  # COPY sources exist (build context: the repo root)
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert (ROOT / source).exists(), source
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1:][:5] == ["!pyproject.toml", "!README.md", "!litegate/",
                                                   "!admin/", "!migrations/"]


# -- a Go-template subset: what the chart uses, and an error for anything else ----------

_ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.DOTALL)


class _Template:
    def __init__(self, values: dict[str, Any], chart: dict[str, Any]) -> None:
        self.scope = {"Values": values, "Release": {"Name": "prod", "Namespace": "default",
                                                    "Service": "Helm"},
                      "Chart": {"Name": chart["name"], "Version": chart["version"],
                                "AppVersion": chart["appVersion"]}}
        self.defines: dict[str, list[Any]] = {}

    def parse(self, text: str) -> list[Any]:
        parts: list[Any] = []
        pos = 0
        for m in _ACTION.finditer(text):
            chunk = text[pos:m.start()]
            if m.group(1):
                chunk = chunk.rstrip()
            parts.append(chunk)
            parts.append(("action", m.group(2), bool(m.group(3))))
            pos = m.end()
        parts.append(text[pos:])
        for i, p in enumerate(parts):  # "-}}" trims the text after it
            if isinstance(p, tuple) and p[2] and isinstance(parts[i + 1], str):
                parts[i + 1] = parts[i + 1].lstrip()
        tree, rest = self._block(iter(parts))
        assert rest is None, "unbalanced {{ end }}"
        return tree

    def _block(self, it: Any) -> tuple[list[Any], str | None]:
        out: list[Any] = []
        for p in it:
            if isinstance(p, str):
                out.append(p)
                continue
            expr = p[1]
            if expr in ("end", "else"):
                return out, expr
            if expr.startswith("define "):
                body, end = self._block(it)
                assert end == "end"
                self.defines[json.loads(expr.split(None, 1)[1])] = body
            elif expr.startswith("if "):
                then, end = self._block(it)
                other: list[Any] = []
                if end == "else":
                    other, end = self._block(it)
                assert end == "end"
                out.append(("if", expr[3:], then, other))
            else:
                out.append(("expr", expr))
        return out, None

    def render(self, tree: list[Any]) -> str:
        out = []
        for node in tree:
            if isinstance(node, str):
                out.append(node)
            elif node[0] == "if":
                out.append(self.render(node[2] if self._cond(node[1]) else node[3]))
            else:
                out.append(self._pipeline(node[1]))
        return "".join(out)

    def _lookup(self, ref: str) -> Any:
        value: Any = self.scope
        for part in ref.lstrip(".").split("."):
            value = value[part]
        return value

    def _cond(self, expr: str) -> bool:
        return not self._lookup(expr[4:]) if expr.startswith("not ") else bool(self._lookup(expr))

    def _pipeline(self, expr: str) -> str:
        head, *filters = [s.strip() for s in expr.split("|")]
        words = head.split()
        if words[0] == "include" and words[2] == ".":
            value: Any = self.render(self.defines[json.loads(words[1])])
        elif words[0] == "toYaml":
            value = yaml.safe_dump(self._lookup(words[1]), sort_keys=False).rstrip()
        elif len(words) == 1 and words[0].startswith("."):
            value = self._lookup(words[0])
        else:
            raise AssertionError(f"template action outside the tested subset: {expr!r}")
        for f in filters:
            name, *args = f.split()
            if name == "quote":
                value = json.dumps(str(value))
            elif name == "nindent":
                pad = " " * int(args[0])
                value = "\n" + "\n".join(pad + line if line else line
                                         for line in str(value).splitlines())
            else:
                raise AssertionError(f"template function outside the tested subset: {name!r}")
        return str(value)


def render_chart(**overrides: Any) -> dict[str, dict[str, Any]]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for dotted, value in overrides.items():
        node = values
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    t = _Template(values, yaml.safe_load((CHART / "Chart.yaml").read_text()))
    t.parse((CHART / "templates" / "_helpers.tpl").read_text())
    rendered: dict[str, dict[str, Any]] = {}
    for path in sorted((CHART / "templates").glob("*.yaml")):
        for doc in yaml.safe_load_all(t.render(t.parse(path.read_text()))):
            if doc:
                rendered[doc["kind"]] = doc
    return rendered


def test_helm_chart_renders_to_valid_kubernetes_objects() -> None:
    objects = render_chart(secrets__dbUrl="postgresql+asyncpg://u:p@db:5432/litegate",
                           secrets__redisUrl="redis://redis:6379/0")
    assert set(objects) == {"Secret", "Deployment", "Service", "HorizontalPodAutoscaler",
                            "ServiceMonitor", "Job"}
    for kind, doc in objects.items():
        if kind != "ServiceMonitor":  # a CRD: not in the Kubernetes schemas
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}
    assert env["LITEGATE_DB"] == {"name": "prod-litegate", "key": "db-url"}
    assert env["LITEGATE_REDIS"] == {"name": "prod-litegate", "key": "redis-url"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "replicas" not in objects["Deployment"]["spec"]  # the HPA owns the count
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu" and hpa["minReplicas"] == 3
    assert objects["Secret"]["stringData"]["redis-url"] == "redis://redis:6379/0"
    monitor = objects["ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert monitor["spec"]["selector"]["matchLabels"] == objects["Service"]["spec"]["selector"]
    assert objects["Job"]["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["db",
                                                                                        "upgrade"]


def test_helm_chart_options_switch_objects_and_a_schema_error_is_caught() -> None:
    objects = render_chart(autoscaling__enabled=False, serviceMonitor__enabled=False,
                           secrets__create=False, secrets__existingSecret="mine",
                           replicaCount=5)
    assert set(objects) == {"Deployment", "Service", "Job"}
    assert objects["Deployment"]["spec"]["replicas"] == 5
    container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "mine"
    broken = objects["Deployment"]
    broken["spec"]["replicas"] = "five"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
