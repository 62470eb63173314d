"""Dashboard data: rolling stats buckets turned into charts and summary rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from markupsafe import Markup

from litegate.policies.stats import Stats

from .charts import line_chart
from .config import ModelStatus

UNROUTED = "(unrouted)"
NO_VARIANT = "(none)"
WINDOWS = {"10m": (10, 60), "1h": (60, 60)}


def _points(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, Sequence) and not isinstance(raw, str | bytes):
        return [p if isinstance(p, Mapping) else {} for p in raw]  # type: ignore[misc]
    return []


def _flatten(raw: Any, sep: str = " / ") -> dict[str, list[dict[str, Any]]]:
    """``{name: [points]}``; nested ``{route: {variant: [points]}}`` and tuple keys are joined."""
    out: dict[str, list[dict[str, Any]]] = {}
    if not isinstance(raw, Mapping):
        return out
    for key, value in raw.items():
        label = sep.join(map(str, key)) if isinstance(key, tuple) else str(key)
        if isinstance(value, Mapping):
            for sub, pts in value.items():
                out[f"{label}{sep}{sub}"] = _points(pts)
        else:
            out[label] = _points(value)
    return out


def normalize(raw: Any) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Per-route and per-variant point lists from ``Stats.series()``."""
    if not isinstance(raw, Mapping):
        return {}, {}
    routes = raw.get("routes", raw.get("per_route", {}))
    variants = raw.get("variants", raw.get("per_variant", {}))
    return (
        {_label(k): v for k, v in _flatten(routes).items()},
        {_label(k): v for k, v in _flatten(variants).items()},
    )


def _label(name: str) -> str:
    """Stats use ``-`` for requests that never reached a route or variant (401, 404...)."""
    if name == "-":
        return UNROUTED
    if name.startswith("-/"):
        name = UNROUTED + name[1:]
    if name.endswith("/-"):
        name = name[:-1] + NO_VARIANT
    return name


def _n(point: Mapping[str, Any], name: str) -> float:
    value = point.get(name)
    return float(value) if isinstance(value, int | float) else 0.0


def _opt(point: Mapping[str, Any], name: str) -> float | None:
    value = point.get(name)
    return float(value) if isinstance(value, int | float) else None


PointValue = Callable[[Mapping[str, Any]], float | None]
"""What a chart plots for one stats point."""


def _series(
    data: Mapping[str, list[dict[str, Any]]], fn: PointValue
) -> dict[str, list[tuple[float, float | None]]]:
    return {name: [(_n(p, "t"), fn(p)) for p in pts] for name, pts in data.items()}


def summarize(name: str, points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    requests = sum(_n(p, "requests") for p in points)
    errors = sum(_n(p, "errors") for p in points)
    hits = sum(_n(p, "cache_hits") for p in points)
    misses = sum(_n(p, "cache_misses") for p in points)
    limited = sum(_n(p, "limited") for p in points)
    weighted = [(_opt(p, "p50_ms"), _n(p, "requests")) for p in points]
    p50_total = sum(v * w for v, w in weighted if v is not None)
    p50_weight = sum(w for v, w in weighted if v is not None)
    p99s = [v for v in (_opt(p, "p99_ms") for p in points) if v is not None]
    return {
        "name": name,
        "requests": int(requests),
        "errors": int(errors),
        "error_rate": errors / requests if requests else None,
        "p50_ms": p50_total / p50_weight if p50_weight else None,
        "p99_ms": max(p99s) if p99s else None,
        "cache_hit_rate": hits / (hits + misses) if hits + misses else None,
        "limited": int(limited),
    }


def _ratio(num: str, den: Sequence[str]) -> PointValue:
    def fn(p: Mapping[str, Any]) -> float | None:
        total = sum(_n(p, d) for d in den)
        return _n(p, num) / total if total else None

    return fn


def _split_rows(
    routes: Mapping[str, Any], variants: Mapping[str, list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The observed A/B split, and apart from it what never reached a variant.

    Rate-limited requests, cache hits and errors before routing carry no variant;
    counting them in the split would skew it, so they get their own rows.
    """
    rows, outside = [], []
    totals: dict[str, int] = {}
    for label, pts in variants.items():
        owners = [r for r in routes if label.startswith(r + "/")]
        route = max(owners, key=len) if owners else label.split("/", 1)[0]
        row = summarize(label, pts)
        row["route"], row["variant"] = route, label[len(route) + 1:]
        if row["variant"] == NO_VARIANT:
            row["cache_hits"] = int(sum(_n(p, "cache_hits") for p in pts))
            row["other"] = max(0, row["requests"] - row["limited"] - row["cache_hits"])
            if row["requests"]:
                outside.append(row)
            continue
        totals[route] = totals.get(route, 0) + row["requests"]
        rows.append(row)
    for row in rows:
        total = totals.get(row["route"])
        row["share"] = row["requests"] / total if total else None
    return rows, outside


PERCENT: dict[str, Any] = {"unit": "%", "y_max": 1.0}
MS: dict[str, Any] = {"unit": " ms"}


def _charts(
    data: Mapping[str, list[dict[str, Any]]],
    per: str,
    specs: Sequence[tuple[str, PointValue, Mapping[str, Any]]],
) -> list[Markup]:
    """One line chart per ``(title, value, options)``, one line per route or variant."""
    return [
        line_chart(f"{title} (per {per})", _series(data, value), **options)
        for title, value, options in specs
    ]


def build(
    stats: Stats | None, models: ModelStatus | None, *, window: str = "10m"
) -> dict[str, Any]:
    if window not in WINDOWS:
        window = "10m"
    bucket_s, buckets = WINDOWS[window]
    raw = stats.series(bucket_s=bucket_s, buckets=buckets) if stats is not None else {}
    routes, variants = normalize(raw)
    variant_rows, outside_rows = _split_rows(routes, variants)
    split = {k: v for k, v in variants.items() if not k.endswith("/" + NO_VARIANT)}

    def per_second(p: Mapping[str, Any]) -> float | None:
        return _n(p, "requests") / bucket_s

    def p99(p: Mapping[str, Any]) -> float | None:
        return _opt(p, "p99_ms")

    error_rate = _ratio("errors", ["requests"])
    charts = _charts(routes, "route", [
        ("Requests / s", per_second, {}),
        ("Error rate", error_rate, PERCENT),
        ("p50 latency", lambda p: _opt(p, "p50_ms"), MS),
        ("p99 latency", p99, MS),
        ("Cache hit rate", _ratio("cache_hits", ["cache_hits", "cache_misses"]), PERCENT),
        ("Limit rejections / bucket", lambda p: _n(p, "limited"), {}),
    ])
    variant_charts = _charts(split, "variant", [
        ("Requests / s", per_second, {}),
        ("Error rate", error_rate, PERCENT),
        ("p99 latency", p99, MS),
    ])
    return {
        "window": window,
        "windows": list(WINDOWS),
        "bucket_s": bucket_s,
        "charts": charts,
        "variant_charts": variant_charts,
        "route_rows": [summarize(name, pts) for name, pts in routes.items()],
        "variant_rows": variant_rows,
        "outside_rows": outside_rows,
        "providers": model_status(models),
        "stats_available": stats is not None,
        "share_rows": share_rows(stats),
    }


def share_rows(stats: Stats | None) -> list[dict[str, Any]]:
    """The A/B shares in force per route and variant: the adaptive bandit's, or the
    configured weights (``Stats.shares``, kept by ``policies.bandit``)."""
    rows = []
    for route, info in sorted((stats.shares if stats is not None else {}).items()):
        rates = info.get("success_rate") or {}
        for variant, share in info.get("shares", {}).items():
            rows.append({
                "route": route, "variant": variant, "share": share,
                "adaptive": info.get("adaptive"), "success_rate": rates.get(variant),
                "samples": info.get("samples"), "updated_at": info.get("updated_at"),
            })
    return rows


def model_status(models: ModelStatus | None) -> list[dict[str, Any]]:
    """One row per (model, version) the ONNX manager knows, with the providers in use."""
    raw = manager_status(models)
    rows = []
    for name, info in sorted(raw.items()):
        loaded = info.get("loaded") or {}
        active = info.get("active_version")
        if not loaded:
            rows.append({"name": name, "version": active or "", "providers": "",
                         "state": "not loaded", "active": True})
        for version, detail in sorted(loaded.items()):
            detail = detail if isinstance(detail, Mapping) else {}
            fell_back = detail.get("fell_back") or []
            rows.append({
                "name": name,
                "version": version,
                "providers": ", ".join(map(str, detail.get("providers") or [])),
                "state": "loaded" + (f" (fell back from {', '.join(map(str, fell_back))})"
                                     if fell_back else ""),
                "active": version == active,
            })
    return rows


def manager_status(models: ModelStatus | None) -> dict[str, dict[str, Any]]:
    """``{model: {active_version, loaded: {version: {providers, fell_back}}}}`` or ``{}``."""
    if models is None:
        return {}
    try:
        raw = models.status()
    except Exception:  # the console must render even if the manager misbehaves
        return {}
    inner = raw.get("models", {}) if isinstance(raw, Mapping) else {}
    if not isinstance(inner, Mapping):
        return {}
    return {str(k): dict(v) for k, v in inner.items() if isinstance(v, Mapping)}
