"""The admin HTTP API's part of the OpenAPI 3.1 document (``/openapi.json``).

Request bodies are generated from the msgspec classes the API decodes them with
(``UpstreamIn``, ``RouteIn``, ``KeyCreate``…), so the document and the handlers in
``admin/api_views.py`` cannot drift apart; answers and errors are written here. Paths
live under the configured admin path (``/admin/api`` by default). Nothing here imports
Litestar: serving the document never loads the console.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from litegate.services.api_inputs import (
    KeyCreate,
    KeyUpdate,
    ModelActivate,
    ModelRollback,
    QuotaCreate,
)
from litegate.services.schema import RouteIn, UpstreamIn

MAX_PAGE = 500
_REF = "#/components/schemas/{name}"
_ERROR = {"$ref": "#/components/schemas/AdminError"}
_SECURITY: list[dict[str, list[str]]] = [{"adminToken": []}]
_ERRORS = {
    "400": "Malformed JSON, a body that is not the expected object, or invalid fields "
           "(`errors` lists every problem).",
    "401": "Missing, unknown, revoked or expired admin token (a console cookie is not "
           "accepted).",
    "403": "A `read` token asked for a write.",
    "404": "No such entry.",
    "409": "Stale `row_version` (someone else changed it), a name in use, or a change the "
           "current state refuses (an upstream still used, an active model version).",
    "413": "Body too large (JSON: 1 MiB).",
    "503": "Database or usage counters unavailable.",
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"description": _ERRORS[code],
                   "content": {"application/json": {"schema": _ERROR}}}
            for code in ("401", *codes)}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(name=name)}


def _body(name: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


def _path(name: str, kind: str = "string", description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if kind == "integer":
        schema |= {"minimum": 1, "maximum": 2**31 - 1}
    return {"name": name, "in": "path", "required": True, "schema": schema,
            "description": description}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_IF_MATCH = {"name": "If-Match", "in": "header", "required": False,
             "schema": {"type": "string"},
             "description": "The `row_version` you read (its `ETag`), e.g. `\"3\"`. A stale "
                            "one is refused with 409. The body's `row_version` does the same."}
_PAGE = [_query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, "Rows per page."),
         _query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, "Rows to skip.")]
_NAME = _path("name", description="The entry's name.")
_ETAG = {"ETag": {"schema": {"type": "string"}, "description": "The `row_version`, quoted."}}
_NO_CONTENT = {"description": "Done (no body)."}


def _op(summary: str, responses: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, tag: str) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [f"admin: {tag}"], "security": _SECURITY,
                          "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


def _crud(prefix: str, plural: str, one: str, schema: str, body_in: str) -> dict[str, Any]:
    """List/create/read/replace/delete of an entry with a ``row_version``."""
    return {
        f"{prefix}/{plural}": {
            "get": _op(f"Every {one}.", {"200": _json({"type": "array", "items": _ref(schema)}),
                                         **_errors()}, tag=plural),
            "post": _op(f"Create a {one} (a name in use is a 400).",
                        {"201": _json(_ref(schema), "Created.") | {"headers": _ETAG},
                         **_errors("400", "403", "413")}, body=_body(body_in), tag=plural),
        },
        f"{prefix}/{plural}/{{name}}": {
            "get": _op(f"One {one}, with its `row_version` (also as `ETag`).",
                       {"200": _json(_ref(schema)) | {"headers": _ETAG}, **_errors("404")},
                       params=[_NAME], tag=plural),
            "put": _op(f"Replace a {one}'s settings (the name comes from the path). Send the "
                       "`row_version` you read to be refused (409) if someone changed it since.",
                       {"200": _json(_ref(schema)) | {"headers": _ETAG},
                        **_errors("400", "403", "404", "409", "413")},
                       params=[_NAME, _IF_MATCH], body=_body(f"{body_in}Update"), tag=plural),
            "delete": _op(f"Delete a {one}; with `If-Match`, refused (409) if someone "
                          "changed it since.", {"204": _NO_CONTENT,
                                                **_errors("400", "403", "404", "409")},
                          params=[_NAME, _IF_MATCH], tag=plural),
        },
    }


def _update_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A configuration document as a PUT body: the name is optional (the path's wins),
    ``id`` and ``row_version`` from a GET may be sent back."""
    out = copy.deepcopy(schema)
    out["title"] = f"{schema['title']}Update"
    out["required"] = [r for r in out.get("required", []) if r != "name"]
    out["properties"] |= {"id": {"type": "integer"},
                          "row_version": {"type": "integer", "minimum": 0,
                                          "description": "The row_version you read."}}
    return out


def _with_ids(name: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["id", "name", "row_version"],
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                           "row_version": {"type": "integer"}, **extra},
            "description": f"The stored {name} (the input's fields, plus id and row_version)."}


_KEY = {
    "type": "object", "required": ["id", "name", "prefix", "routes"],
    "description": "An API key; its secret is never shown again after creation.",
    "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "prefix": {"type": "string"},
        "routes": {"type": "array", "items": {"type": "string"},
                   "description": "Routes it may use; empty: every route."},
        "is_admin": {"type": "boolean"},
        "created_at": {"type": ["string", "null"]}, "expires_at": {"type": ["string", "null"]},
        "revoked_at": {"type": ["string", "null"]}, "last_used_at": {"type": ["string", "null"]},
        "budget": {"anyOf": [_ref("BudgetIn"), {"type": "null"}]},
        "limits": {"type": "array", "items": {"type": "string"}},
        "token_limits": {"type": "array", "items": {"type": "string"}},
    },
}

_RESPONSES: dict[str, Any] = {
    "AdminError": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "string"}, "code": {"type": ["string", "null"]},
                       "errors": {"type": "array", "items": {"type": "string"},
                                  "description": "Every validation problem, with its path."}},
    },
    "Upstream": _with_ids("upstream", {"kind": {"type": "string"},
                                       "base_url": {"type": "string"}}),
    "Route": _with_ids("route", {"variants": {"type": "array", "items": {"type": "object"}}}),
    "ApiKey": _KEY,
    "ApiKeyCreated": {"allOf": [_ref("ApiKey"), {
        "type": "object", "required": ["secret"],
        "properties": {"secret": {"type": "string", "description": "Shown only now."}}}]},
    "ApiKeyPage": {"type": "object", "required": ["keys", "total"],
                   "properties": {"keys": {"type": "array", "items": _ref("ApiKey")},
                                  "total": {"type": "integer"}}},
    "Quota": {"type": "object", "required": ["id", "kind", "rate"],
              "properties": {"id": {"type": "integer"}, "key": {"type": ["string", "null"]},
                             "key_id": {"type": ["integer", "null"]},
                             "route": {"type": ["string", "null"]},
                             "kind": {"type": "string"}, "rate": {"type": "string"}}},
    "ModelVersion": {"type": "object", "required": ["version", "sha256"],
                     "properties": {"version": {"type": "string"}, "sha256": {"type": "string"},
                                    "size_bytes": {"type": "integer"},
                                    "signature": {"type": "object"},
                                    "created_at": {"type": ["string", "null"]}}},
    "Model": _with_ids("model", {
        "active_version": {"type": ["string", "null"]},
        "history": {"type": "array", "items": {"type": "string"}},
        "versions": {"type": "array", "items": _ref("ModelVersion")}}),
    "AuditPage": {"type": "object", "required": ["entries", "total"], "properties": {
        "total": {"type": "integer"},
        "entries": {"type": "array", "items": {
            "type": "object", "required": ["id", "at", "actor", "action", "entity_type"],
            "properties": {"id": {"type": "integer"}, "at": {"type": ["string", "null"]},
                           "actor": {"type": "string", "description": "token:NAME, admin:USER, "
                                                                      "cli:USER"},
                           "action": {"type": "string"}, "entity_type": {"type": "string"},
                           "entity_name": {"type": "string"}, "before": {}, "after": {}}}}}},
    "UsageReport": {"type": "object", "required": ["since", "usage", "budgets"],
                    "description": "What `litegate usage --json` prints.",
                    "properties": {"since": {"type": "string"},
                                   "days": {"type": "array", "items": {"type": "string"}},
                                   "usage": {"type": "array", "items": {"type": "object"}},
                                   "daily": {"type": "array", "items": {"type": "object"}},
                                   "budgets": {"type": "array", "items": {"type": "object"}}}},
}


def admin_components() -> dict[str, Any]:
    """The schemas the admin paths refer to (inputs generated from the msgspec classes)."""
    _, inputs = msgspec.json.schema_components(
        [UpstreamIn, RouteIn, KeyCreate, KeyUpdate, QuotaCreate, ModelActivate, ModelRollback],
        ref_template=_REF,
    )
    for name in ("UpstreamIn", "RouteIn"):
        inputs[f"{name}Update"] = _update_schema(inputs[name])
    return {**inputs, **_RESPONSES}


def admin_paths(prefix: str) -> dict[str, Any]:
    """Every admin API operation under ``prefix`` (e.g. ``/admin/api``)."""
    key_id = _path("key_id", "integer", "The key's id.")
    model_ops = {
        f"{prefix}/models": {"get": _op("Every local ONNX model with its versions.", {
            "200": _json({"type": "array", "items": _ref("Model")}), **_errors()}, tag="models")},
        f"{prefix}/models/{{name}}": {"get": _op("One model (its `row_version` also as `ETag`).", {
            "200": _json(_ref("Model")) | {"headers": _ETAG}, **_errors("404")},
            params=[_NAME], tag="models")},
        f"{prefix}/models/{{name}}/versions": {"post": _op(
            "Upload a version: the request body is the .onnx file. It is validated like "
            "`litegate models add` (a real ONNX Runtime session) before anything is stored; "
            "the first version of a model is activated.",
            {"201": _json(_ref("ModelVersion"), "Stored."), **_errors("400", "403", "409", "413")},
            params=[_NAME, _query("version", {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"},
                                  "Version number (default: the next one)."),
                    _query("activate", {"type": "boolean"}, "Serve it at once.")],
            body={"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}, tag="models")},
        f"{prefix}/models/{{name}}/activate": {"post": _op(
            "Serve another stored version (instant; the previous one goes to the history).",
            {"200": _json(_ref("Model")), **_errors("400", "403", "404", "409", "413")},
            params=[_NAME, _IF_MATCH], body=_body("ModelActivate"), tag="models")},
        f"{prefix}/models/{{name}}/rollback": {"post": _op(
            "Serve the previously active version again.",
            {"200": _json(_ref("Model")), **_errors("400", "403", "404", "409", "413")},
            params=[_NAME, _IF_MATCH], body=_body("ModelRollback", required=False), tag="models")},
        f"{prefix}/models/{{name}}/versions/{{version}}": {"delete": _op(
            "Remove an inactive version (its files go too).",
            {"204": _NO_CONTENT, **_errors("403", "404", "409")},
            params=[_NAME, _path("version", description="The version number.")],
            tag="models")},
    }
    return {
        **_crud(prefix, "upstreams", "upstream", "Upstream", "UpstreamIn"),
        **_crud(prefix, "routes", "route", "Route", "RouteIn"),
        f"{prefix}/keys": {
            "get": _op("A page of API keys (never their secrets), newest first.", {
                "200": _json(_ref("ApiKeyPage")), **_errors("400")},
                params=[_query("q", {"type": "string", "maxLength": 200},
                               "Part of the name or prefix."),
                        _query("status", {"type": "string",
                                          "enum": ["all", "active", "revoked", "expired"]},
                               "Which keys."), *_PAGE], tag="keys"),
            "post": _op("Create a key; the answer has its secret, shown only this once.", {
                "201": _json(_ref("ApiKeyCreated"), "Created."),
                **_errors("400", "403", "413")}, body=_body("KeyCreate"), tag="keys"),
        },
        f"{prefix}/keys/{{key_id}}": {
            "get": _op("One key.", {"200": _json(_ref("ApiKey")), **_errors("404")},
                       params=[key_id], tag="keys"),
            "patch": _op("Change a key's scopes, own limits, expiry or budget (absent fields "
                         "stay).", {"200": _json(_ref("ApiKey")),
                                    **_errors("400", "403", "404", "409", "413")},
                         params=[key_id], body=_body("KeyUpdate"), tag="keys"),
        },
        f"{prefix}/keys/{{key_id}}/revoke": {"post": _op(
            "Revoke a key (gateways refuse it within a second).",
            {"200": _json(_ref("ApiKey")), **_errors("403", "404")}, params=[key_id],
            tag="keys")},
        f"{prefix}/quotas": {
            "get": _op("Every quota (limit) by id.", {
                "200": _json({"type": "array", "items": _ref("Quota")}), **_errors("400")},
                params=_PAGE, tag="quotas"),
            "post": _op("Add a quota for a key, a route, or a key on a route.", {
                "201": _json(_ref("Quota"), "Created."), **_errors("400", "403", "413")},
                body=_body("QuotaCreate"), tag="quotas"),
        },
        f"{prefix}/quotas/{{quota_id}}": {"delete": _op(
            "Delete a quota.", {"204": _NO_CONTENT, **_errors("403", "404")},
            params=[_path("quota_id", "integer", "The quota's id.")], tag="quotas")},
        **model_ops,
        f"{prefix}/audit": {"get": _op(
            "The audit log, newest first: every change, who (token:NAME for this API), what, "
            "before and after.", {"200": _json(_ref("AuditPage")), **_errors("400")},
            params=[_query("actor", {"type": "string"}, "Exact actor, e.g. token:ci."),
                    _query("entity_type", {"type": "string"}, "upstream, route, api_key, "
                                                              "quota, model…"),
                    _query("action", {"type": "string"}, "create, update, delete…"),
                    _query("q", {"type": "string"}, "Part of the entity name or actor."),
                    *_PAGE], tag="audit")},
        f"{prefix}/usage": {"get": _op(
            "Usage and cost per key, route and variant, per day, and each budget's spend "
            "(the gateway's counters: shared by every replica with Redis).",
            {"200": _json(_ref("UsageReport")), **_errors("400", "503")},
            params=[_query("since", {"type": "string", "pattern": "^[0-9]+[mhd]$"},
                           "How far back: 30d (default), 7d, 1d.")], tag="usage")},
    }
