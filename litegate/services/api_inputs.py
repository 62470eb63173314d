"""Request bodies of the admin HTTP API that are not configuration documents (those are
:mod:`litegate.services.schema`'s ``UpstreamIn`` and ``RouteIn``). They are decoded with
msgspec in ``admin/api_views.py`` and described from the same classes in the OpenAPI
document (``litegate/openapi_admin.py``), so the two cannot drift apart."""

from __future__ import annotations

from datetime import datetime

import msgspec

from litegate.services.schema import BudgetIn


class KeyCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new API key; the answer carries its secret, the only time it is shown."""

    name: str
    routes: list[str] = []
    limits: list[str] = []
    token_limits: list[str] = []
    expires_at: datetime | None = None
    budget: BudgetIn | None = None
    is_admin: bool = False


class KeyUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Absent fields are left alone; ``routes: []`` means every route, ``expires_at:
    null`` never expires, ``budget: null`` removes the budget."""

    routes: list[str] | msgspec.UnsetType = msgspec.UNSET
    limits: list[str] | msgspec.UnsetType = msgspec.UNSET
    token_limits: list[str] | msgspec.UnsetType = msgspec.UNSET
    expires_at: datetime | None | msgspec.UnsetType = msgspec.UNSET
    budget: BudgetIn | None | msgspec.UnsetType = msgspec.UNSET


class QuotaCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A limit for a key (``key_id``), a route (``route``), or a key on a route."""

    rate: str
    kind: str = "requests"
    key_id: int | None = None
    route: str | None = None


class ModelActivate(msgspec.Struct, forbid_unknown_fields=True):
    """The version to serve; ``row_version`` (optional) is the model's as last read."""

    version: str
    row_version: int | None = None


class ModelRollback(msgspec.Struct, forbid_unknown_fields=True):
    """``row_version`` (optional) is the model's as last read."""

    row_version: int | None = None
