"""Translate a LiteLLM proxy ``config.yaml`` into litegate's configuration document.

``model_list`` entries become routes (one per ``model_name``) whose variants are the
entries' deployments; each distinct provider endpoint + key variable becomes an
``openai``-kind upstream. Everything that has no litegate equivalent is reported with
the line it came from, so nothing is dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

# LiteLLM providers that speak the OpenAI API, with their default endpoint (None: the
# entry must give api_base). Anything else (anthropic, bedrock, vertex_ai, azure, ...)
# has its own wire protocol and is reported instead of guessed.
OPENAI_COMPATIBLE: dict[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "text-completion-openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "together_ai": "https://api.together.xyz/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "perplexity": "https://api.perplexity.ai",
    "openrouter": "https://openrouter.ai/api/v1",
    "xai": "https://api.x.ai/v1",
    "deepinfra": "https://api.deepinfra.com/v1/openai",
    "hosted_vllm": None,
    "openai_like": None,
    "lm_studio": None,
    "ollama": None,
    "ollama_chat": None,
}
OLLAMA = ("ollama", "ollama_chat")
ENV_PREFIX = "os.environ/"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SLUG = re.compile(r"[^a-z0-9]+")

# Settings that have a litegate equivalent outside the config file: (what to do instead).
ELSEWHERE = {
    "general_settings.master_key": "litegate has no master key: create admin keys with "
                                   "`litegate keys create --name ops --admin`",
    "general_settings.database_url": "pass it as `litegate --db URL` or LITEGATE_DB "
                                     "(postgresql+asyncpg://...)",
    "router_settings.redis_host": "pass `--redis redis://HOST:PORT/0` or LITEGATE_REDIS",
    "router_settings.redis_port": "part of `--redis redis://HOST:PORT/0`",
    "router_settings.redis_password": "part of `--redis redis://:PASSWORD@HOST:PORT/0`",
    "router_settings.redis_url": "pass it as `--redis URL` or LITEGATE_REDIS",
    "litellm_settings.cache_params.host": "pass `--redis redis://HOST:PORT/0` or LITEGATE_REDIS",
    "litellm_settings.cache_params.port": "part of `--redis redis://HOST:PORT/0`",
    "litellm_settings.cache_params.password": "part of `--redis redis://:PASSWORD@HOST:PORT/0`",
    "router_settings.routing_strategy": "litegate splits a route's traffic by variant weight "
                                        "(sticky per key); there is no latency/usage-based routing",
    "environment_variables": "set these variables in the gateway's environment",
}
HANDLED = {
    "model_list", "router_settings.fallbacks", "litellm_settings.fallbacks",
    "router_settings.num_retries", "litellm_settings.num_retries",
    "router_settings.timeout", "litellm_settings.request_timeout",
    "litellm_settings.cache", "litellm_settings.cache_params.ttl",
    "litellm_settings.cache_params.type",
}


@dataclass
class Translation:
    document: dict[str, Any]
    report: list[str] = field(default_factory=list)
    """One line each: ``LINE: PATH: what happened / what to do``, in file order."""


class _Lines:
    """YAML path -> line number, from the composed node tree."""

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[Any, ...], int] = {}
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            self._walk(node, ())

    def _walk(self, node: yaml.Node, path: tuple[Any, ...]) -> None:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                self._walk(value, (*path, key.value))
                self.lines[(*path, key.value)] = key.start_mark.line + 1  # the key's line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, (*path, i))

    def at(self, *path: Any) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Importer:
    def __init__(self, raw: dict[str, Any], lines: _Lines) -> None:
        self.raw = raw
        self.lines = lines
        self.report: list[tuple[int, str]] = []
        self.upstreams: dict[tuple[str, str | None], dict[str, Any]] = {}
        self.routes: dict[str, dict[str, Any]] = {}
        self.rpm: dict[str, int] = {}
        self.tpm: dict[str, int] = {}

    def note(self, path: tuple[Any, ...], text: str) -> None:
        line = self.lines.at(*path)
        self.report.append((line, f"{line}: {_dotted(path)}: {text}"))

    # ------------------------------------------------------------------ model_list
    def model_list(self) -> None:
        entries = self.raw.get("model_list")
        if not isinstance(entries, list):
            self.note(("model_list",), "missing or not a list: nothing to translate")
            return
        for i, entry in enumerate(entries):
            self.entry(("model_list", i), entry)
        for route_name, route in self.routes.items():
            if route_name in self.rpm:
                route["limits"] = [f"{self.rpm[route_name]}/minute"]
            if route_name in self.tpm:
                route["token_limits"] = [f"{self.tpm[route_name]}/minute"]

    def entry(self, path: tuple[Any, ...], entry: Any) -> None:
        if not isinstance(entry, dict) or not isinstance(entry.get("litellm_params"), dict):
            self.note(path, "not translated: expected model_name and litellm_params")
            return
        name = str(entry.get("model_name") or "")
        params: dict[str, Any] = entry["litellm_params"]
        model = str(params.get("model") or "")
        provider, _, upstream_model = model.partition("/")
        if not upstream_model:  # "gpt-4o" without a provider means OpenAI in LiteLLM
            provider, upstream_model = "openai", model
        if "*" in name or "*" in model:
            self.note(path, f"not translated: wildcard {name or model!r}; litegate routes are "
                            "explicit: add one route per model clients may name")
            return
        if not name or not upstream_model:
            self.note(path, "not translated: model_name and litellm_params.model are required")
            return
        if provider not in OPENAI_COMPATIBLE:
            self.note((*path, "litellm_params", "model"),
                      f"not translated: provider {provider!r} does not speak the OpenAI API; put "
                      "an OpenAI-compatible endpoint in front of it and add it as an upstream")
            return
        base = params.get("api_base") or OPENAI_COMPATIBLE[provider]
        if not base:
            self.note((*path, "litellm_params"),
                      f"not translated: provider {provider!r} needs api_base")
            return
        base = str(base).rstrip("/")
        if provider in OLLAMA and not base.endswith("/v1"):
            base += "/v1"  # Ollama's OpenAI-compatible API lives under /v1
        upstream = self.upstream(path, provider, base, params)
        variant: dict[str, Any] = {"upstream": upstream, "model": upstream_model}
        # LiteLLM weights may be fractions (0.9 / 0.1): litegate's are integers, so x100.
        weight = params.get("weight", entry.get("weight", 1))
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            self.note((*path, "litellm_params", "weight"), f"ignored: {weight!r} is not a number >= 0")
            weight = 1
        variant["weight"] = round(weight * 100)
        route = self.routes.setdefault(name, {"name": name, "variants": []})
        taken = {v.get("name", v["model"]) for v in route["variants"]}
        if upstream_model in taken:  # the same model twice (two regions, two keys)
            variant["name"] = f"{upstream_model}@{upstream}"
            n = 2
            while variant["name"] in taken:
                variant["name"], n = f"{upstream_model}@{upstream}-{n}", n + 1
        route["variants"].append(variant)
        for limit, totals, target in (("rpm", self.rpm, "limits"), ("tpm", self.tpm, "token_limits")):
            value = params.get(limit, entry.get(limit))
            if value is None:
                continue
            if isinstance(value, int) and value > 0:
                totals[name] = totals.get(name, 0) + value
                self.note((*path, "litellm_params", limit),
                          f"{limit} {value} -> route {name!r} {target} (summed over its "
                          "deployments; litegate counts per API key and route)")
            else:
                self.note((*path, "litellm_params", limit), f"ignored: {value!r} is not a positive integer")
        known = {"model", "api_base", "api_key", "weight", "rpm", "tpm", "timeout",
                 "stream_timeout", "max_retries"}
        for key in params:
            if key not in known:
                self.note((*path, "litellm_params", key),
                          f"not translated: {key!r} has no litegate equivalent")
        for key in entry:
            if key not in ("model_name", "litellm_params", "rpm", "tpm", "weight"):
                self.note((*path, key), f"not translated: {key!r} has no litegate equivalent")

    def upstream(self, path: tuple[Any, ...], provider: str, base: str,
                 params: dict[str, Any]) -> str:
        env: str | None = None
        key = params.get("api_key")
        if isinstance(key, str) and key.startswith(ENV_PREFIX) and ENV_NAME.match(key[len(ENV_PREFIX):]):
            env = key[len(ENV_PREFIX):]
        elif key and str(key).lower() != "none":  # "none": the docs' way to say no key
            self.note((*path, "litellm_params", "api_key"),
                      "not copied: a literal key does not belong in config; export it as a "
                      "variable and set api_key_env on the upstream")
        found = self.upstreams.get((base, env))
        if found is None:
            slug = SLUG.sub("-", provider.lower()).strip("-") or "upstream"
            names = {u["name"] for u in self.upstreams.values()}
            name, n = slug, 2
            while name in names:
                name, n = f"{slug}-{n}", n + 1
            found = self.upstreams[(base, env)] = {"name": name, "kind": "openai", "base_url": base}
            if env:
                found["api_key_env"] = env
        timeout = params.get("timeout") or params.get("stream_timeout")
        if isinstance(timeout, (int, float)) and timeout > 0:
            found["timeout_s"] = float(timeout)
        retries = params.get("max_retries")
        if isinstance(retries, int) and retries >= 0:
            found["max_retries"] = min(retries, 10)
        return str(found["name"])

    # ------------------------------------------------------------------ settings
    def settings(self) -> None:
        router = self.raw.get("router_settings") or {}
        lsettings = self.raw.get("litellm_settings") or {}
        for section, fallbacks in (("router_settings", router.get("fallbacks")),
                                   ("litellm_settings", lsettings.get("fallbacks"))):
            if fallbacks is not None:
                self.fallbacks((section, "fallbacks"), fallbacks)
        retries = router.get("num_retries", lsettings.get("num_retries"))
        timeout = router.get("timeout", lsettings.get("request_timeout"))
        for u in self.upstreams.values():
            if isinstance(retries, int) and retries >= 0:
                u.setdefault("max_retries", min(retries, 10))
            if isinstance(timeout, (int, float)) and timeout > 0:
                u.setdefault("timeout_s", float(timeout))
        if lsettings.get("cache"):
            params = lsettings.get("cache_params") or {}
            ttl = params.get("ttl", 600)  # LiteLLM's default cache TTL
            if params.get("type", "redis") not in ("redis", "local"):
                self.note(("litellm_settings", "cache_params", "type"),
                          f"cache type {params['type']!r} -> litegate's own cache "
                          "(memory, or Redis with --redis)")
            for route in self.routes.values():
                route["cache"] = {"ttl_s": float(ttl)}
            self.note(("litellm_settings", "cache"),
                      f"cache -> every route caches non-streamed answers for {ttl} s")
        for section in ("general_settings", "router_settings", "litellm_settings",
                        "environment_variables"):
            self.leftovers((section,), self.raw.get(section))
        for key in self.raw:
            if key not in ("model_list", "general_settings", "router_settings",
                           "litellm_settings", "environment_variables"):
                self.note((key,), "not translated: unknown LiteLLM section")

    def fallbacks(self, path: tuple[Any, ...], items: Any) -> None:
        if not isinstance(items, list):
            self.note(path, "ignored: expected a list of {model_name: [fallbacks]}")
            return
        for i, item in enumerate(items):
            for name, targets in (item.items() if isinstance(item, dict) else ()):
                targets = targets if isinstance(targets, list) else [targets]
                route = self.routes.get(name)
                usable = [t for t in targets if t in self.routes and t != name]
                if route is None or not usable:
                    self.note((*path, i, name), f"not translated: no translated route for "
                                                f"{name!r} -> {targets!r}")
                    continue
                if route.get("fallback") not in (None, usable[0]):
                    self.note((*path, i, name), f"ignored: {name!r} already falls back to "
                                                f"{route['fallback']!r}")
                    continue
                route["fallback"] = usable[0]
                if len(targets) > 1:
                    self.note((*path, i, name), f"fallback -> {usable[0]!r} only; litegate falls "
                                                f"back to one route (dropped: {targets[1:]!r})")

    def leftovers(self, path: tuple[Any, ...], value: Any) -> None:
        dotted = _dotted(path)
        if dotted in HANDLED or value in (None, {}, []):
            return
        if dotted in ELSEWHERE:
            self.note(path, f"not in the config file: {ELSEWHERE[dotted]}")
        elif isinstance(value, dict) and value:
            for key, child in value.items():
                self.leftovers((*path, key), child)
        else:
            self.note(path, "not translated: no litegate equivalent")


def translate(text: str) -> Translation:
    """``text``: a LiteLLM config.yaml. Raises ValueError when it is not one at all."""
    try:
        raw = yaml.safe_load(text)
        lines = _Lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ValueError(f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("expected a LiteLLM config (a mapping with model_list)")  # noqa: TRY004 (bad input, shown as one line)
    importer = _Importer(raw, lines)
    importer.model_list()
    importer.settings()
    document = {"upstreams": list(importer.upstreams.values()),
                "routes": list(importer.routes.values())}
    return Translation(document, [text for _, text in sorted(importer.report,
                                                             key=lambda r: r[0])])
