"""Form parsing for the console: user values kept for re-rendering, errors per field.

Parsing only turns text into the service layer's input types; the rules
themselves (names, weights, rates...) live in :mod:`litegate.services.schema`, so
the CLI, ``config apply`` and the console reject exactly the same things. Service
error messages carry a path (``route.variants[1].weight: must be >= 0``) that
:func:`map_errors` turns into a form field name (``variants-1-weight``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypedDict, TypeVar

import msgspec
from litestar.datastructures import FormMultiDict

from litegate.db.models import ApiKey, Quota, Route, Upstream
from litegate.services.schema import (
    UPSTREAM_KINDS,
    AdaptiveIn,
    CacheIn,
    PriceIn,
    RouteIn,
    SemanticCacheIn,
    UpstreamIn,
    VariantIn,
    check_quota,
)

ERROR_RE = re.compile(r"^(?:[a-z_]+\.)?([a-z_]+)(?:\[(\d+)\])?(?:\.([a-z0-9_.]+))?: (.*)$", re.DOTALL)
EXTRA_VARIANT_ROWS = 2
MAX_VARIANT_ROWS = 100
GENERAL = "__all__"
ROUTE_TEXT_FIELDS = (
    "name", "description", "sticky_mode", "sticky_header", "cache_ttl_s", "fallback", "shadow",
    "limits", "token_limits", "row_version",
    "adaptive_metric", "adaptive_min_share", "adaptive_cooldown_s", "adaptive_min_samples",
    "semantic_embedding_model", "semantic_threshold", "semantic_max_entries", "semantic_ttl_s",
)
ROUTE_SETTING_FIELDS = {
    "description": "description", "variants": "variant_rows", "sticky": "sticky_mode",
    "cache": "cache_ttl_s", "limits": "limits", "token_limits": "token_limits",
    "fallback": "fallback", "shadow": "shadow", "adaptive": "adaptive_metric",
    "semantic_cache": "semantic_embedding_model",
}
"""Each ``RouteIn`` setting -> the form field whose presence says the form shows it; a
setting whose field was not submitted is kept as stored when a route is edited."""
PRICE_FIELDS = ("input_per_1m", "output_per_1m")


class VariantRow(TypedDict):
    """One submitted row of the route form's variant table."""

    name: str
    upstream: str
    model: str
    weight: str
    input_per_1m: str
    output_per_1m: str
    remove: bool


class KeyInput(TypedDict):
    """The key form as ``create_key`` takes it (``update_key`` leaves the name alone)."""

    name: str
    routes: list[str]
    limits: list[str]
    token_limits: list[str]
    expires_at: datetime | None


class QuotaInput(TypedDict):
    """The quota form as ``add_quota`` takes it."""

    key_id: int | None
    route: str | None
    kind: str
    rate: str


D = TypeVar("D")


@dataclass
class FormResult(Generic[D]):
    """What the user typed (``values``, to re-render), the errors per field, and the
    parsed input for the service (``data``)."""

    values: dict[str, Any]
    errors: dict[str, list[str]] = field(default_factory=dict)
    data: D | None = None
    row_map: list[int] = field(default_factory=list)
    """Index in ``data.variants`` -> index of the submitted row (blank rows are dropped)."""
    submitted_rows: int = 0
    given: set[str] = field(default_factory=set)
    """The settings the submitted form carried (the others are kept when editing)."""
    prices_given: list[bool] = field(default_factory=list)
    """Per ``data.variants`` entry: whether the form carried that variant's price fields."""

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    @property
    def ok(self) -> bool:
        return not self.errors


def map_errors(
    messages: Sequence[str],
    result: FormResult[Any],
    *,
    aliases: Mapping[str, str] | None = None,
    only_new: bool = False,
) -> None:
    """Attach service validation messages to form fields.

    ``only_new`` skips fields that already carry an error from parsing.
    """
    aliases = aliases or {}
    if only_new:
        target: FormResult[Any] = FormResult(result.values, row_map=result.row_map)
        map_errors(messages, target, aliases=aliases)
        for name, texts in target.errors.items():
            if name not in result.errors and not (
                name == "variants" and any(k.startswith("variants-") for k in result.errors)
            ):
                result.errors[name] = texts
        return
    for message in messages:
        m = ERROR_RE.match(message)
        if m is None:
            result.add(GENERAL, message)
            continue
        head, index, sub, text = m.groups()
        if head == "variants" and index is not None:
            i = int(index)
            row = result.row_map[i] if i < len(result.row_map) else i
            result.add(f"variants-{row}-{(sub or 'model').removeprefix('price.')}", text)
        elif head in ("limits", "token_limits", "limit", "token_limit", "rate") and index is not None:
            result.add(aliases.get(head, head), text)
        elif head == "cache":
            result.add("cache_ttl_s", text)
        elif head in ("adaptive", "semantic_cache"):
            result.add(head, f"{sub}: {text}" if sub else text)
        else:
            result.add(aliases.get(head, head), text)


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace("\r", "").split("\n") if line.strip()]


def _int(
    result: FormResult[Any], name: str, text: str, *, default: int | None = None
) -> int | None:
    if text == "":
        if default is None:
            result.add(name, "required")
        return default
    try:
        return int(text)
    except ValueError:
        result.add(name, "must be a whole number")
        return default


def _float(result: FormResult[Any], name: str, text: str, *, required: bool) -> float | None:
    if text == "":
        if required:
            result.add(name, "required")
        return None
    try:
        value = float(text)
    except ValueError:
        result.add(name, "must be a number")
        return None
    if value != value or value in (float("inf"), float("-inf")):
        result.add(name, "must be a finite number")
        return None
    return value


def row_version(form: Mapping[str, Any]) -> int | None:
    try:
        return int(_text(form, "row_version"))
    except ValueError:
        return None


# -- routes ---------------------------------------------------------------------------


def route_values(route: Route | None, limits: Sequence[Quota] = ()) -> dict[str, Any]:
    """Form values for a stored route (or a blank new one)."""
    if route is None:
        return {
            "name": "", "description": "", "sticky_mode": "key", "sticky_header": "",
            "cache_ttl_s": "", "fallback": "", "shadow": "", "limits": "", "token_limits": "",
            "row_version": "", "variants": _pad_variants([]), **adaptive_values(None),
            **semantic_values(None),
        }
    sticky = route.sticky or "key"
    return {
        "name": route.name,
        "description": route.description or "",
        "sticky_mode": "header" if sticky.startswith("header:") else sticky,
        "sticky_header": sticky[7:] if sticky.startswith("header:") else "",
        "cache_ttl_s": _num(route.cache_ttl_s),
        "fallback": route.fallback or "",
        "shadow": route.shadow or "",
        "limits": "\n".join(q.rate for q in limits if q.kind == "requests"),
        "token_limits": "\n".join(q.rate for q in limits if q.kind == "tokens"),
        "row_version": str(route.row_version),
        **adaptive_values(route.adaptive),
        **semantic_values(route.semantic_cache),
        "variants": _pad_variants(
            [
                {
                    "name": v.name if v.name != v.model else "",
                    "upstream": v.upstream.name,
                    "model": v.model,
                    "weight": str(v.weight),
                    "input_per_1m": _price(v.price_input_per_1m, v.price_output_per_1m),
                    "output_per_1m": _price(v.price_output_per_1m, v.price_input_per_1m),
                }
                for v in route.variants
            ]
        ),
    }


def adaptive_values(adaptive: Mapping[str, Any] | None) -> dict[str, str]:
    """The adaptive A/B fields: blank metric = off (the weights stay fixed)."""
    try:
        a = msgspec.convert(adaptive or {}, AdaptiveIn)
    except msgspec.ValidationError:  # a hand-edited row: show the defaults
        a = AdaptiveIn()
    return {
        "adaptive_metric": a.metric if adaptive else "",
        "adaptive_min_share": _num(a.min_share),
        "adaptive_cooldown_s": _num(a.cooldown_s),
        "adaptive_min_samples": str(a.min_samples),
    }


def _parse_adaptive(result: FormResult[Any], text: Mapping[str, str]) -> AdaptiveIn | None:
    if not text["adaptive_metric"]:
        return None
    default = AdaptiveIn()
    share = _float(result, "adaptive", text["adaptive_min_share"], required=False)
    cooldown = _float(result, "adaptive", text["adaptive_cooldown_s"], required=False)
    samples = _int(result, "adaptive", text["adaptive_min_samples"], default=default.min_samples)
    return AdaptiveIn(
        metric=text["adaptive_metric"],
        min_share=default.min_share if share is None else share,
        cooldown_s=default.cooldown_s if cooldown is None else cooldown,
        min_samples=default.min_samples if samples is None else samples,
    )


def semantic_values(semantic: Mapping[str, Any] | None) -> dict[str, Any]:
    """The semantic cache fields: a blank embedding model = off."""
    try:
        sc = msgspec.convert(semantic, SemanticCacheIn) if semantic else None
    except msgspec.ValidationError:  # a hand-edited row: show it off
        sc = None
    default = SemanticCacheIn(embedding_model="")
    return {
        "semantic_embedding_model": sc.embedding_model if sc else "",
        "semantic_threshold": _num((sc or default).threshold),
        "semantic_max_entries": str((sc or default).max_entries),
        "semantic_ttl_s": _num((sc or default).ttl_s),
        "semantic_shared": bool(sc and sc.shared_across_keys),
    }


def _parse_semantic(
    result: FormResult[Any], text: Mapping[str, str], shared: bool
) -> SemanticCacheIn | None:
    if not text["semantic_embedding_model"]:
        return None
    default = SemanticCacheIn(embedding_model="")
    threshold = _float(result, "semantic_cache", text["semantic_threshold"], required=False)
    entries = _int(result, "semantic_cache", text["semantic_max_entries"],
                   default=default.max_entries)
    ttl = _float(result, "semantic_cache", text["semantic_ttl_s"], required=False)
    return SemanticCacheIn(
        embedding_model=text["semantic_embedding_model"],
        threshold=default.threshold if threshold is None else threshold,
        max_entries=default.max_entries if entries is None else entries,
        ttl_s=default.ttl_s if ttl is None else ttl,
        shared_across_keys=shared,
    )


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else str(value)


def _price(value: float | None, other: float | None) -> str:
    """A stored price as the form shows it: blank when the variant has no price at all."""
    if value is None and other is None:
        return ""
    return _num(value or 0.0)


def _pad_variants(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    blank = {"name": "", "upstream": "", "model": "", "weight": "", "input_per_1m": "",
             "output_per_1m": ""}
    return rows + [dict(blank) for _ in range(EXTRA_VARIANT_ROWS)]


def parse_route(
    form: Mapping[str, Any], *, fixed_name: str | None = None
) -> FormResult[RouteIn]:
    """Parse the route form; ``fixed_name`` is the stored name when editing."""
    count = _int(FormResult[None]({}), "variant_rows", _text(form, "variant_rows"), default=0) or 0
    count = max(0, min(count, MAX_VARIANT_ROWS))
    rows: list[VariantRow] = [
        {
            "name": _text(form, f"variants-{i}-name"),
            "upstream": _text(form, f"variants-{i}-upstream"),
            "model": _text(form, f"variants-{i}-model"),
            "weight": _text(form, f"variants-{i}-weight"),
            "input_per_1m": _text(form, f"variants-{i}-input_per_1m"),
            "output_per_1m": _text(form, f"variants-{i}-output_per_1m"),
            "remove": bool(form.get(f"variants-{i}-remove")),
        }
        for i in range(count)
    ]
    text = {name: _text(form, name) for name in ROUTE_TEXT_FIELDS}
    text["name"] = fixed_name if fixed_name is not None else text["name"]
    text["sticky_mode"] = text["sticky_mode"] or "key"
    shared = bool(form.get("semantic_shared"))
    values: dict[str, Any] = {**text, "semantic_shared": shared, "variants": rows}
    result: FormResult[RouteIn] = FormResult(values, submitted_rows=len(rows))
    result.given = {name for name, key in ROUTE_SETTING_FIELDS.items() if key in form}
    if not text["name"]:
        result.add("name", "required")
    variants: list[VariantIn] = []
    for i, row in enumerate(rows):
        if row["remove"] or not _filled(row):
            continue
        if not row["upstream"]:
            result.add(f"variants-{i}-upstream", "choose an upstream")
        if not row["model"]:
            result.add(f"variants-{i}-model", "required")
        weight = _int(result, f"variants-{i}-weight", row["weight"])
        variants.append(
            VariantIn(
                upstream=row["upstream"],
                model=row["model"],
                weight=weight if weight is not None else 0,
                name=row["name"] or None,
                price=_parse_price(result, i, row),
            )
        )
        result.row_map.append(i)
        result.prices_given.append(any(f"variants-{i}-{k}" in form for k in PRICE_FIELDS))
    mode = text["sticky_mode"]
    if mode == "header":
        sticky = f"header:{text['sticky_header']}"
        if not text["sticky_header"]:
            result.add("sticky_header", "required when stickiness is by header")
    elif mode in ("key", "none"):
        sticky = mode
    else:
        sticky = "key"
        result.add("sticky_mode", "choose key, header or none")
    ttl = _float(result, "cache_ttl_s", text["cache_ttl_s"], required=False)
    padding = _pad_variants([])[: max(0, EXTRA_VARIANT_ROWS - _blank_tail(rows))]
    values["variants"] = [*rows, *padding]
    result.data = RouteIn(
        name=text["name"],
        variants=variants,
        sticky=sticky,
        cache=CacheIn(ttl_s=ttl) if ttl is not None else None,
        limits=_lines(text["limits"]),
        token_limits=_lines(text["token_limits"]),
        fallback=text["fallback"] or None,
        shadow=text["shadow"] or None,
        description=text["description"],
        adaptive=_parse_adaptive(result, text),
        semantic_cache=_parse_semantic(result, text, shared),
    )
    return result


def _parse_price(result: FormResult[Any], i: int, row: VariantRow) -> PriceIn | None:
    """Both blank: no price; one blank: 0 (as in YAML, where a missing side is 0).
    The range (0 to ``MAX_PRICE_PER_1M``) is the service's rule (``check_route``)."""
    if not row["input_per_1m"] and not row["output_per_1m"]:
        return None
    input_ = _float(result, f"variants-{i}-input_per_1m", row["input_per_1m"], required=False)
    output = _float(result, f"variants-{i}-output_per_1m", row["output_per_1m"], required=False)
    return PriceIn(input_per_1m=input_ or 0.0, output_per_1m=output or 0.0)


def add_variant_row(result: FormResult[RouteIn]) -> None:
    """One more blank variant row (the form's "Add variant" without JavaScript)."""
    rows = result.values["variants"][: result.submitted_rows]
    if len(rows) < MAX_VARIANT_ROWS:
        rows.append(_pad_variants([])[0])
    result.values["variants"] = rows


def _filled(row: VariantRow) -> bool:
    """Whether the user typed anything but a weight into the row."""
    return bool(row["upstream"] or row["model"] or row["name"] or row["input_per_1m"]
                or row["output_per_1m"])


def _blank_tail(rows: Sequence[VariantRow]) -> int:
    n = 0
    for row in reversed(rows):
        if _filled(row) or row["weight"]:
            break
        n += 1
    return n


# -- upstreams ------------------------------------------------------------------------


def upstream_values(upstream: Upstream | None) -> dict[str, Any]:
    if upstream is None:
        return {
            "name": "", "kind": "openai", "base_url": "", "api_key_env": "",
            "timeout_s": "30", "connect_timeout_s": "5", "max_retries": "1", "row_version": "",
        }
    return {
        "name": upstream.name,
        "kind": upstream.kind,
        "base_url": upstream.base_url,
        "api_key_env": upstream.api_key_env or "",
        "timeout_s": _num(upstream.timeout_s),
        "connect_timeout_s": _num(upstream.connect_timeout_s),
        "max_retries": str(upstream.max_retries),
        "row_version": str(upstream.row_version),
    }


def parse_upstream(
    form: Mapping[str, Any], *, fixed_name: str | None = None,
    stored: Mapping[str, Any] | None = None,
) -> FormResult[UpstreamIn]:
    """The upstream form; when editing, ``stored`` (``upstream_values``) fills every field
    the submitted form lacks, so a setting the form does not show is kept."""
    keys = ("kind", "base_url", "api_key_env", "timeout_s", "connect_timeout_s", "max_retries")
    values = {k: _text(form, k) if stored is None or k in form else str(stored[k])
              for k in keys}
    values["name"] = fixed_name if fixed_name is not None else _text(form, "name")
    values["row_version"] = _text(form, "row_version")
    result: FormResult[UpstreamIn] = FormResult(values)
    if not values["name"]:
        result.add("name", "required")
    if values["kind"] not in UPSTREAM_KINDS:
        result.add("kind", f"choose {', '.join(UPSTREAM_KINDS)}")
    timeout = _float(result, "timeout_s", values["timeout_s"], required=True)
    connect = _float(result, "connect_timeout_s", values["connect_timeout_s"], required=True)
    retries = _int(result, "max_retries", values["max_retries"])
    if result.ok:
        result.data = UpstreamIn(
            name=values["name"],
            kind=values["kind"],  # type: ignore[arg-type]
            base_url=values["base_url"],
            api_key_env=values["api_key_env"] or None,
            timeout_s=timeout or 0.0,
            connect_timeout_s=connect or 0.0,
            max_retries=retries if retries is not None else 0,
        )
    return result


# -- keys -----------------------------------------------------------------------------


def key_values(key: ApiKey, limits: Mapping[str, list[str]]) -> dict[str, Any]:
    """Form values for editing a stored key (its name is fixed)."""
    expires = key.expires_at
    return {
        "name": key.name,
        "routes": list(key.routes or []),
        "limits": "\n".join(limits.get("requests", [])),
        "token_limits": "\n".join(limits.get("tokens", [])),
        "expires_at": expires.strftime("%Y-%m-%dT%H:%M") if expires else "",
    }


def parse_key(form: FormMultiDict, *, fixed_name: str | None = None) -> FormResult[KeyInput]:
    """The key form; ``fixed_name`` when editing (the name is not changed)."""
    routes = [r for r in form.getall("routes", []) if isinstance(r, str) and r]
    text = {name: _text(form, name) for name in ("name", "limits", "token_limits", "expires_at")}
    text["name"] = fixed_name if fixed_name is not None else text["name"]
    values: dict[str, Any] = {**text, "routes": routes}
    result: FormResult[KeyInput] = FormResult(values)
    if not text["name"]:
        result.add("name", "required")
    expires: datetime | None = None
    if text["expires_at"]:
        try:
            expires = datetime.fromisoformat(text["expires_at"])
        except ValueError:
            result.add("expires_at", "expected a date and time (YYYY-MM-DDTHH:MM)")
        else:
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=UTC)
    result.data = {
        "name": text["name"],
        "routes": routes,
        "limits": _lines(text["limits"]),
        "token_limits": _lines(text["token_limits"]),
        "expires_at": expires,
    }
    return result


KEY_ALIASES = {"limit": "limits", "token_limit": "token_limits"}


def key_changes(form: Mapping[str, Any], data: KeyInput, key: ApiKey) -> dict[str, Any]:
    """``update_key``'s arguments for the submitted key form: only the fields it carried
    (the others, and the budget the form does not show, are kept), and the expiry only
    when it differs from the one shown (the form shows minutes; the stored seconds stay)."""
    changes: dict[str, Any] = {"routes": data["routes"]}
    for name in ("limits", "token_limits"):
        if name in form:
            changes[name] = data[name]
    shown = key_values(key, {})["expires_at"]
    if "expires_at" in form and _text(form, "expires_at") != shown:
        changes["expires_at"] = data["expires_at"]
    return changes


# -- quotas ---------------------------------------------------------------------------


def parse_quota(form: Mapping[str, Any]) -> FormResult[QuotaInput]:
    values = {
        "key_id": _text(form, "key_id"),
        "route": _text(form, "route"),
        "kind": _text(form, "kind") or "requests",
        "rate": _text(form, "rate"),
    }
    result: FormResult[QuotaInput] = FormResult(values)
    key_id = _int(result, "key_id", values["key_id"]) if values["key_id"] else None
    if not values["rate"]:
        result.add("rate", "required")
    result.data = {
        "key_id": key_id,
        "route": values["route"] or None,
        "kind": values["kind"],
        "rate": values["rate"],
    }
    if "key_id" not in result.errors:
        # The service's own rules as well, so every problem shows in one round trip.
        map_errors(check_quota(**result.data), result, aliases=QUOTA_ALIASES, only_new=True)
    return result


QUOTA_ALIASES = {"key": "key_id"}
