"""``litegate config import-litellm`` on LiteLLM's documented example configs: the YAML
on stdout passes ``config apply``, and what did not translate is on stderr, one line each
with its line number."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml

from tests.helpers.cli import create_key, run_cli
from tests.helpers.servers import free_port
from tests.helpers.windows import clear_of_minute_edge

LITELLM = Path(__file__).resolve().parents[1] / "fixtures" / "litellm"


def _import(home: Path, path: Path) -> tuple[int, dict, list[str]]:
    code, out, err = run_cli("config", "import-litellm", str(path), home=home)
    return code, (yaml.safe_load(out) if out else {}), err.splitlines()


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _dry_run(home: Path, tmp_path: Path, doc: dict) -> None:
    (tmp_path / "ours.yaml").write_text(yaml.safe_dump(doc))
    code, _, err = run_cli("config", "apply", str(tmp_path / "ours.yaml"), "--dry-run", "--json",
                             home=home)
    assert code == 0, err


def test_quick_start_keeps_the_openai_compatible_entry_and_reports_the_rest(home, tmp_path) -> None:
    src = LITELLM / "proxy_quick_start.yaml"
    code, doc, report = _import(home, src)
    assert code == 0, report
    assert doc == {
        "upstreams": [{"name": "openai", "kind": "openai", "base_url": "http://0.0.0.0:4000/v1"}],
        "routes": [{"name": "vllm-models", "limits": ["1440/minute"],
                    "variants": [{"upstream": "openai", "model": "facebook/opt-125m",
                                  "weight": 100}]}],
    }
    lines = [int(r.split(":")[1]) for r in report]
    assert lines == sorted(lines)  # in file order
    azure = _line_of(src, "model: azure/gpt-turbo-small-eu")
    assert f"{src}:{azure}: model_list[0].litellm_params.model: not translated: provider 'azure'" \
        in "\n".join(report)
    for where, what in (("model: bedrock/anthropic.claude-instant-v1", "provider 'bedrock'"),
                        ('- model_name: "*"', "wildcard '*'"),
                        ("model_info:", "'model_info' has no litegate equivalent"),
                        ("drop_params: True", "litellm_settings.drop_params"),
                        ("success_callback:", "litellm_settings.success_callback"),
                        ("master_key: sk-1234", "litegate keys create --name ops --admin"),
                        ('alerting: ["slack"]', "general_settings.alerting")):
        line = _line_of(src, where)
        assert any(r.startswith(f"{src}:{line}: ") and what in r for r in report), (where, report)
    _dry_run(home, tmp_path, doc)


def test_weighted_deployments_become_weighted_variants_with_the_key_variable(home, tmp_path) -> None:
    code, doc, report = _import(home, LITELLM / "weighted_deployments.yaml")
    assert code == 0 and report == []
    assert doc["upstreams"] == [{"name": "openai", "kind": "openai",
                                 "base_url": "https://api.openai.com/v1",
                                 "api_key_env": "OPENAI_API_KEY"}]
    assert doc["routes"][0]["variants"] == [
        {"upstream": "openai", "model": "o1", "weight": 100},
        {"upstream": "openai", "model": "o1-preview", "weight": 200}]
    _dry_run(home, tmp_path, doc)


def test_reliability_settings_map_to_upstreams_and_unmappable_ones_are_named(home, tmp_path) -> None:
    src = LITELLM / "reliability_fallbacks.yaml"
    code, doc, report = _import(home, src)
    assert code == 0
    assert doc["upstreams"] == [{"name": "openai", "kind": "openai",
                                 "base_url": "https://api.openai.com/v1",
                                 "max_retries": 3, "timeout_s": 10.0}]
    assert [r["name"] for r in doc["routes"]] == ["gpt-3.5-turbo", "gpt-3.5-turbo-16k"]
    text = "\n".join(report)
    assert text.count("provider 'huggingface'") == 3
    assert text.count("a literal key does not belong in config") == 2
    assert f"{src}:{_line_of(src, 'fallbacks: [{')}: litellm_settings.fallbacks[0].zephyr-beta: " \
           "not translated: no translated route for 'zephyr-beta'" in text
    assert "litellm_settings.context_window_fallbacks: not translated" in text
    assert "litellm_settings.allowed_fails: not translated" in text
    _dry_run(home, tmp_path, doc)


def test_nothing_translatable_is_an_error_after_the_report(home) -> None:
    src = LITELLM / "load_balancing_redis.yaml"
    code, out, err = run_cli("config", "import-litellm", str(src), home=home)
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[-1] == f"error: {src}: no model_list entry could be translated (see above)"
    assert any("router_settings.redis_host: not in the config file: pass `--redis" in x for x in lines)
    assert any("router_settings.routing_strategy" in x for x in lines)


def test_bad_files_are_one_line(home, tmp_path) -> None:
    code, _, err = run_cli("config", "import-litellm", str(tmp_path / "missing.yaml"), home=home)
    assert (code, err.strip()) == (
        2, f"error: {tmp_path / 'missing.yaml'}: cannot read (No such file or directory)")
    (tmp_path / "bad.yaml").write_text("model_list: [\n")
    code, _, err = run_cli("config", "import-litellm", str(tmp_path / "bad.yaml"), home=home)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not valid YAML at line 2" in err
    (tmp_path / "list.yaml").write_text("- 1\n")
    code, _, err = run_cli("config", "import-litellm", str(tmp_path / "list.yaml"), home=home)
    assert code == 2 and "expected a LiteLLM config" in err


def test_an_imported_config_serves_requests(home, tmp_path, make_gateway, fake_upstream) -> None:
    """Translated, applied for real, and a request through the gateway reaches the upstream
    with the variant's model, the fallback and the limits in force."""
    (tmp_path / "litellm.yaml").write_text(yaml.safe_dump({
        "model_list": [
            {"model_name": "gpt-4o", "litellm_params": {
                "model": "openai/gpt-4o", "api_base": fake_upstream.base_url,
                "api_key": "os.environ/MOCK_KEY", "rpm": 2, "tpm": 1000}},
            {"model_name": "gpt-4o", "litellm_params": {
                "model": "openai/gpt-4o", "api_base": fake_upstream.base_url,
                "api_key": "os.environ/MOCK_KEY_2", "rpm": 1}},
            {"model_name": "backup", "litellm_params": {
                "model": "hosted_vllm/llama", "api_base": fake_upstream.base_url}},
            {"model_name": "broken", "litellm_params": {  # nothing listens there
                "model": "openai/m", "api_base": f"http://127.0.0.1:{free_port()}/v1"}},
        ],
        "router_settings": {"fallbacks": [{"broken": ["backup", "gpt-4o"]}]},
    }))
    code, out, err = run_cli("config", "import-litellm", str(tmp_path / "litellm.yaml"), home=home)
    assert code == 0, err
    doc = yaml.safe_load(out)
    route = doc["routes"][0]
    assert route["limits"] == ["3/minute"] and route["token_limits"] == ["1000/minute"]
    assert [v.get("name") for v in route["variants"]] == [None, "gpt-4o@openai-2"]
    assert doc["routes"][2]["fallback"] == "backup"
    assert "fallback -> 'backup' only; litegate falls back to one route" in err
    (tmp_path / "ours.yaml").write_text(out)
    code, _, err = run_cli("config", "apply", str(tmp_path / "ours.yaml"), "--json", home=home)
    assert code == 0, err
    key = create_key(home)
    server = make_gateway()
    clear_of_minute_edge()  # exact counts: not across a window boundary
    with httpx.Client(base_url=server.url, timeout=10,
                      headers={"Authorization": f"Bearer {key}"}) as c:
        def chat(model: str) -> httpx.Response:
            return c.post("/v1/chat/completions",
                          json={"model": model, "messages": [{"role": "user", "content": "hi"}]})

        assert chat("gpt-4o").json()["model"] == "gpt-4o"
        fell_back = chat("broken")
        assert fell_back.status_code == 200, fell_back.text
        assert json.loads(fell_back.text)["model"] == "llama"
        assert [chat("gpt-4o").status_code for _ in range(3)] == [200, 200, 429]
