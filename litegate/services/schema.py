"""Input shapes shared by ``config apply``, the CLI and the admin console.

Validation collects *every* problem with its path (``routes[0].variants[1].weight``)
instead of stopping at the first one, so a user can fix a file in one go.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import msgspec
from limits import parse_many

from litegate.origins import parse_base_url

UPSTREAM_KINDS = ("openai", "v2", "onnx")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}\Z")
r"""``\Z``, not ``$``: ``$`` also matches before a trailing newline."""
HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,100}\Z")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""C0 and C1 control characters and DEL: a free-text name (a key's) must have none, so it
cannot drive the terminal a CLI table or a log is read in."""


def printable(value: str) -> bool:
    """Whether a free-text name is free of control characters (``CONTROL_RE``)."""
    return CONTROL_RE.search(value) is None


def escape_control(value: str) -> str:
    r"""``value`` with each control character written as its escape (``\x1b``, ``\n``), for
    human-readable output of rows stored before names had to be printable."""
    return CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], value)


class PriceIn(msgspec.Struct, forbid_unknown_fields=True):
    """USD per 1M tokens, prompt (input) and completion (output)."""

    input_per_1m: float = 0.0
    output_per_1m: float = 0.0


MAX_PRICE_PER_1M = 1_000_000.0


class VariantIn(msgspec.Struct, forbid_unknown_fields=True):
    upstream: str
    model: str
    weight: int = 1
    name: str | None = None
    price: PriceIn | None = None


class BudgetIn(msgspec.Struct, forbid_unknown_fields=True):
    """A key's spend budget: ``max_usd`` per ``period`` (fixed windows aligned to the Unix
    epoch); a warning is logged once per period when ``alert_at`` × budget is reached."""

    max_usd: float
    period: str = "30d"
    alert_at: float | None = None


PERIOD_UNITS = {"m": 60, "h": 3600, "d": 86400}


def parse_period(value: str) -> int:
    """``30d`` / ``12h`` / ``90m`` as seconds; ValueError otherwise."""
    unit = PERIOD_UNITS.get(value[-1:]) if value else None
    if unit is None or not value[:-1].isdigit() or int(value[:-1]) <= 0:
        raise ValueError(f"expected a period like 30d, 12h or 90m, got {value!r}")
    return int(value[:-1]) * unit


EXPIRY_DURATION = re.compile(r"^(\d+)([smhdw])$")
EXPIRY_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(value: str) -> datetime:
    """``30d`` / ``12h`` from now, or an ISO-8601 timestamp (UTC if no zone); ValueError
    otherwise."""
    m = EXPIRY_DURATION.match(value)
    if m:
        return datetime.now(UTC) + timedelta(**{EXPIRY_UNITS[m.group(2)]: int(m.group(1))})
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"expected e.g. 30d, 12h or 2027-01-01T00:00:00, got {value!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def check_budget(b: BudgetIn, path: str = "budget") -> list[str]:
    errors = []
    if not 0 < b.max_usd <= 1e9:  # also refuses NaN
        errors.append(f"{path}.max_usd: must be > 0 (USD)")
    try:
        parse_period(b.period)
    except ValueError as exc:
        errors.append(f"{path}.period: {exc}")
    if b.alert_at is not None and not 0 < b.alert_at < 1:
        errors.append(f"{path}.alert_at: must be a fraction between 0 and 1, e.g. 0.8")
    return errors


class CacheIn(msgspec.Struct, forbid_unknown_fields=True):
    ttl_s: float


ADAPTIVE_METRICS = ("errors", "latency", "feedback")


class AdaptiveIn(msgspec.Struct, forbid_unknown_fields=True):
    """Adaptive A/B: shares move toward the variant that does best on ``metric``
    (Thompson sampling, ``litegate.policies.bandit``), never below ``min_share`` each,
    recomputed at most every ``cooldown_s`` once ``min_samples`` outcomes are in."""

    metric: str = "errors"
    min_share: float = 0.05
    cooldown_s: float = 30.0
    min_samples: int = 20


def check_adaptive(a: AdaptiveIn, path: str, variants: int) -> list[str]:
    """``variants``: how many variants have a weight > 0 (the ones the bandit shares)."""
    errors = []
    if a.metric not in ADAPTIVE_METRICS:
        errors.append(f"{path}.metric: must be one of {', '.join(ADAPTIVE_METRICS)}")
    if not 0 <= a.min_share < 1:  # also refuses NaN
        errors.append(f"{path}.min_share: must be a fraction >= 0 and < 1, e.g. 0.05")
    elif a.min_share * variants > 1:
        errors.append(f"{path}.min_share: {a.min_share:g} × {variants} variants is more than 1; "
                      f"at most {1 / variants:.4g} for {variants} variants")
    if not 0 <= a.cooldown_s <= 86400:
        errors.append(f"{path}.cooldown_s: must be between 0 and 86400 seconds")
    if not 1 <= a.min_samples <= 1_000_000:
        errors.append(f"{path}.min_samples: must be between 1 and 1000000")
    if variants < 2:
        errors.append(f"{path}: adaptive A/B needs at least two variants with a weight > 0")
    return errors


MAX_SEMANTIC_ENTRIES = 100_000
"""Per route: 100k MiniLM vectors are ~150 MiB before answers; more belongs in a vector DB."""
MAX_SEMANTIC_TTL_S = 30 * 86400


class SemanticCacheIn(msgspec.Struct, forbid_unknown_fields=True):
    """Answer a chat request from an earlier answer to a request that means the same
    (cosine similarity of ``embedding_model``'s vectors >= ``threshold``);
    ``policies.semantic_cache`` says what else must match exactly."""

    embedding_model: str
    threshold: float = 0.9
    max_entries: int = 10_000
    ttl_s: float = 3600.0
    shared_across_keys: bool = False


def check_semantic_cache(sc: SemanticCacheIn, path: str) -> list[str]:
    """The rules that need no database (the model's existence is checked on save)."""
    errors = []
    if not NAME_RE.match(sc.embedding_model):
        errors.append(f"{path}.embedding_model: expected the name of a local embedding model "
                      f"or of a route serving one, got {sc.embedding_model!r}")
    if not 0 < sc.threshold <= 1:  # also refuses NaN
        errors.append(f"{path}.threshold: must be a cosine similarity in (0, 1], e.g. 0.9")
    if not 1 <= sc.max_entries <= MAX_SEMANTIC_ENTRIES:
        errors.append(f"{path}.max_entries: must be between 1 and {MAX_SEMANTIC_ENTRIES}")
    if not 0 < sc.ttl_s <= MAX_SEMANTIC_TTL_S:
        errors.append(f"{path}.ttl_s: must be > 0 and at most {MAX_SEMANTIC_TTL_S} (30 days)")
    return errors


class UpstreamIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    kind: Literal["openai", "v2", "onnx"] = "openai"
    base_url: str = ""
    api_key_env: str | None = None
    timeout_s: float = 30.0
    connect_timeout_s: float = 5.0
    max_retries: int = 1


class RouteIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    variants: list[VariantIn]
    sticky: str = "key"
    cache: CacheIn | None = None
    limits: list[str] = []
    token_limits: list[str] = []
    fallback: str | None = None
    shadow: str | None = None
    description: str = ""
    adaptive: AdaptiveIn | None = None
    semantic_cache: SemanticCacheIn | None = None


class ConfigDocument(msgspec.Struct, forbid_unknown_fields=True):
    upstreams: list[UpstreamIn] = []
    routes: list[RouteIn] = []


class ValidationFailed(ValueError):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


def variant_name(v: VariantIn) -> str:
    return v.name or v.model


def check_rates(rates: list[str], path: str) -> list[str]:
    errors = []
    for i, rate in enumerate(rates):
        try:
            if not parse_many(rate):
                raise ValueError(rate)
        except ValueError:
            errors.append(
                f"{path}[{i}]: invalid rate {rate!r} (expected e.g. '100/minute' or '10/second;1000/hour')"
            )
    return errors


QUOTA_KINDS = ("requests", "tokens")


def check_quota(*, rate: str, kind: str, key_id: int | None, route: str | None) -> list[str]:
    """The rules of one quota that need no database (CLI and console alike)."""
    errors = check_rates([rate], "rate")
    if kind not in QUOTA_KINDS:
        errors.append(f"kind: must be one of {QUOTA_KINDS}")
    if key_id is None and route is None:
        errors.append("scope: choose a key, a route, or both")
    return errors


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def usable_api_key_env(name: str) -> bool:
    """Whether an upstream may send the variable ``name`` as its API key: a plain
    variable name, never one of litegate's own settings (``litegate serve`` exports them
    all as ``LITEGATE_*``: the database and Redis URLs with their passwords, the
    console's secret), which whoever edits upstreams could otherwise read upstream."""
    return bool(_ENV_NAME.fullmatch(name)) and not name.upper().startswith("LITEGATE_")


def check_upstream(u: UpstreamIn, path: str) -> list[str]:
    errors = []
    if not NAME_RE.match(u.name):
        errors.append(f"{path}.name: invalid name {u.name!r}")
    if u.kind not in UPSTREAM_KINDS:
        errors.append(f"{path}.kind: must be one of {', '.join(UPSTREAM_KINDS)}")
    if u.kind in ("openai", "v2"):
        try:
            parse_base_url(u.base_url)
        except ValueError as exc:
            errors.append(f"{path}.base_url: {exc} (kind {u.kind!r})")
    if u.api_key_env is not None and not usable_api_key_env(u.api_key_env):
        errors.append(f"{path}.api_key_env: must be an environment variable name (letters, "
                      "digits, '_') that is not one of litegate's own LITEGATE_* settings")
    if u.timeout_s <= 0:
        errors.append(f"{path}.timeout_s: must be > 0")
    if u.connect_timeout_s <= 0:
        errors.append(f"{path}.connect_timeout_s: must be > 0")
    if not 0 <= u.max_retries <= 10:
        errors.append(f"{path}.max_retries: must be between 0 and 10")
    return errors


def check_route(r: RouteIn, path: str, upstreams: set[str]) -> list[str]:
    errors = []
    if not NAME_RE.match(r.name):
        errors.append(f"{path}.name: invalid name {r.name!r}")
    if not r.variants:
        errors.append(f"{path}.variants: at least one variant is required")
    seen: set[str] = set()
    for j, v in enumerate(r.variants):
        vp = f"{path}.variants[{j}]"
        if v.upstream not in upstreams:
            errors.append(f"{vp}.upstream: unknown upstream {v.upstream!r}")
        if not v.model:
            errors.append(f"{vp}.model: must not be empty")
        if v.weight < 0:
            errors.append(f"{vp}.weight: must be >= 0")
        if v.price is not None:
            for field in ("input_per_1m", "output_per_1m"):
                value = getattr(v.price, field)
                if not (0 <= value <= MAX_PRICE_PER_1M):  # also refuses NaN
                    errors.append(f"{vp}.price.{field}: must be between 0 and {MAX_PRICE_PER_1M:g}")
        name = variant_name(v)
        if not printable(v.model) or not printable(name):
            errors.append(f"{vp}: the model and the name must not contain control characters")
        if name in seen:
            errors.append(f"{vp}.name: duplicate variant {name!r} (set a distinct 'name')")
        seen.add(name)
    if r.variants and all(v.weight <= 0 for v in r.variants):
        errors.append(f"{path}.variants: at least one weight must be > 0")
    if r.sticky not in ("key", "none"):
        header = r.sticky[7:] if r.sticky.startswith("header:") else ""
        if not HEADER_RE.match(header):
            errors.append(f"{path}.sticky: expected 'key', 'none' or 'header:<Header-Name>'")
    if r.cache is not None and r.cache.ttl_s <= 0:
        errors.append(f"{path}.cache.ttl_s: must be > 0")
    errors += check_rates(r.limits, f"{path}.limits")
    errors += check_rates(r.token_limits, f"{path}.token_limits")
    if r.shadow is not None and r.shadow not in seen:
        errors.append(f"{path}.shadow: {r.shadow!r} is not a variant of this route")
    if r.fallback == r.name:
        errors.append(f"{path}.fallback: a route cannot fall back to itself")
    if r.semantic_cache is not None:
        errors += check_semantic_cache(r.semantic_cache, f"{path}.semantic_cache")
    if r.adaptive is not None:
        errors += check_adaptive(r.adaptive, f"{path}.adaptive",
                                 sum(1 for v in r.variants if v.weight > 0))
    return errors


_S = TypeVar("_S", bound=msgspec.Struct)


def _convert_section(
    raw: dict[str, Any], section: str, cls: type[_S], errors: list[str]
) -> list[_S]:
    """The section's items converted to ``cls``; each failure is one error with its path."""
    items = raw.get(section) or []
    if not isinstance(items, list):
        errors.append(f"{section}: expected a list")
        return []
    out: list[_S] = []
    for i, item in enumerate(items):
        try:
            out.append(msgspec.convert(item, cls))
        except msgspec.ValidationError as exc:
            where = str(exc).rsplit(" - at `$", 1)
            detail = where[0]
            suffix = where[1].rstrip("`") if len(where) > 1 else ""
            errors.append(f"{section}[{i}]{suffix}: {detail}")
    return out


def parse_document(
    raw: Any, *, known_upstreams: set[str] | None = None, known_routes: set[str] | None = None
) -> ConfigDocument:
    """Convert and validate a decoded YAML/JSON document; raise ValidationFailed with all
    errors. ``known_*``: names that exist already (a patch may refer to them)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValidationFailed(["$: expected a mapping with 'upstreams' and 'routes'"])
    errors: list[str] = []
    for key in raw:
        if key not in ("upstreams", "routes"):
            errors.append(f"{key}: unknown section (expected 'upstreams', 'routes')")
    ups = _convert_section(raw, "upstreams", UpstreamIn, errors)
    routes = _convert_section(raw, "routes", RouteIn, errors)
    names: set[str] = set()
    for i, u in enumerate(ups):
        errors += check_upstream(u, f"upstreams[{i}]")
        if u.name in names:
            errors.append(f"upstreams[{i}].name: duplicate upstream {u.name!r}")
        names.add(u.name)
    all_upstreams = names | (known_upstreams or set())
    route_names = {r.name for r in routes} | (known_routes or set())
    seen: set[str] = set()
    for i, r in enumerate(routes):
        errors += check_route(r, f"routes[{i}]", all_upstreams)
        if r.name in seen:
            errors.append(f"routes[{i}].name: duplicate route {r.name!r}")
        seen.add(r.name)
        if r.fallback and r.fallback not in route_names:
            errors.append(f"routes[{i}].fallback: unknown route {r.fallback!r}")
    if errors:
        raise ValidationFailed(errors)
    return ConfigDocument(upstreams=ups, routes=routes)
