"""The OpenAPI 3.1 document of the standalone gateway's JSON surface (``GET /openapi.json``).

Written once, as data: the ``/v1`` OpenAI-compatible operations, ``/v1/aggregate``, the
Open Inference Protocol v2 operations and the health probes, with their request
schemas, the API-key security schemes and every error status with its body shape.
The test suite runs schemathesis against a live gateway from this document.
With the console on, :func:`document_json` adds the admin HTTP API under the configured
admin path (:mod:`litegate.openapi_admin`); ``/docs`` renders the result offline.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import msgspec

from litegate.aggregate import MAX_BRANCHES, MAX_TIMEOUT_S

_OPENAI_ERROR = {"$ref": "#/components/schemas/OpenAIError"}
_V2_ERROR = {"$ref": "#/components/schemas/V2Error"}
_ANY_OBJECT = {"type": "object"}

# What each error status means, for every operation that can answer it.
_ERRORS = {
    "400": "Malformed request: bad JSON, JSON nested too deeply, a broken multipart form, "
           "missing or invalid fields.",
    "401": "Missing, unknown, revoked or expired API key.",
    "403": "The API key may not use this route (or model control needs an admin key).",
    "404": "Unknown route, model or endpoint (or request id, for feedback).",
    "405": "Method not allowed.",
    "408": "The request head or body did not arrive in time (``litegate serve``).",
    "409": "Conflict: the route no longer collects feedback.",
    "413": "Request body too large.",
    "429": "Rate limit or token quota exceeded; see ``Retry-After``.",
    "502": "The upstream failed or answered more than the gateway buffers.",
    "503": "Upstream circuit open, model queue full, or too many connections.",
    "504": "The upstream did not answer in time.",
}
_V1_ERRORS = ("400", "401", "403", "404", "413", "429", "502", "503", "504")
_V2_INFER_ERRORS = ("400", "401", "403", "404", "405", "413", "429", "502", "503", "504")
_V2_GET_ERRORS = ("400", "401", "403", "404", "405", "429", "502", "503", "504")


def _errors(codes: tuple[str, ...], schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code in codes:
        out[code] = {"description": _ERRORS[code],
                     "content": {"application/json": {"schema": schema}}}
        if code == "429":
            out[code]["headers"] = {"Retry-After": {"schema": {"type": "integer"},
                                                    "description": "Seconds to wait."}}
    return out


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _v1_post(summary: str, body_ref: str) -> dict[str, Any]:
    ok = _json(_ANY_OBJECT, "The upstream's (or local model's) answer.")
    ok["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{body_ref}"}}}},
        "responses": {"200": ok, **_errors(_V1_ERRORS, _OPENAI_ERROR)},
    }}


def _v1_upload(summary: str, body_ref: str) -> dict[str, Any]:
    """An upload endpoint: a multipart form whose ``model`` field names the route."""
    operation = _v1_post(summary, body_ref)
    body = operation["post"]["requestBody"]
    body["content"] = {"multipart/form-data": body["content"].pop("application/json")}
    ok = operation["post"]["responses"]["200"]
    ok["description"] = "The upstream's answer: JSON, text (text, srt, vtt) or events (stream)."
    ok["content"]["text/plain"] = {"schema": {"type": "string"}}
    return operation


_MODEL = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_EMPTY_OK = {"description": "Ready (an empty body)."}
_NOT_READY = {"description": "Not ready (an empty body)."}


def _v2_model_paths(prefix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        prefix: {"get": {
            "summary": "Model metadata (inputs, outputs, versions).",
            "parameters": params,
            "responses": {"200": _json({"$ref": "#/components/schemas/V2ModelMetadata"}),
                          **_errors(_V2_GET_ERRORS, _V2_ERROR)},
        }},
        prefix + "/ready": {"get": {
            "summary": "Whether the model (version) is ready.",
            "parameters": params,
            "responses": {"200": _EMPTY_OK, **_errors(_V2_GET_ERRORS, _V2_ERROR),
                          "503": _NOT_READY},
        }},
        prefix + "/infer": {"post": {
            "summary": "Inference: JSON tensors, or a JSON header plus binary tensors.",
            "parameters": [*params, {
                "name": "Inference-Header-Content-Length", "in": "header", "required": False,
                "schema": {"type": "integer", "minimum": 0},
                "description": "Length of the JSON header when binary tensors follow it."}],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}}}},
            "responses": {"200": _json({"$ref": "#/components/schemas/V2InferResponse"}),
                          **_errors(_V2_INFER_ERRORS, _V2_ERROR)},
        }},
    }


_TENSOR_IN = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": [
            "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
            "FP16", "FP32", "FP64", "BYTES"]},
        "parameters": _ANY_OBJECT,
        "data": {"type": "array"},
    },
}

_FILE = {"type": "string", "format": "binary", "description": "A file part."}

_SCHEMAS: dict[str, Any] = {
    "OpenAIError": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message", "type"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "code": {"type": ["string", "null"]}}}},
    },
    "V2Error": {"type": "object", "required": ["error"],
                "properties": {"error": {"type": "string"}}},
    "ChatCompletionRequest": {
        "type": "object", "required": ["model", "messages"],
        "examples": [{"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A route name."},
            "messages": {"type": "array", "items": _ANY_OBJECT},
            "stream": {"type": "boolean"},
        },
    },
    "ModelRequest": {
        "type": "object", "required": ["model"],
        "description": "The OpenAI request body, passed on with `model` set to the variant's.",
        "properties": {"model": {"type": "string", "minLength": 1, "description": "A route name."}},
    },
    "CompletionRequest": {
        "type": "object", "required": ["model", "prompt"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A route name."},
            "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "stream": {"type": "boolean"},
        },
    },
    "EmbeddingRequest": {
        "type": "object", "required": ["model", "input"],
        "examples": [{"model": "minilm", "input": "hello"}],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A route name."},
            "input": {"oneOf": [
                {"type": "string"},
                {"type": "array", "minItems": 1, "items": {"type": "string"}},
                {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                {"type": "array", "minItems": 1,
                 "items": {"type": "array", "minItems": 1, "items": {"type": "integer"}}},
            ]},
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1},
        },
    },
    "TranscriptionRequest": {
        "type": "object", "required": ["model", "file"],
        "description": "The OpenAI form, passed on with `model` set to the variant's and "
                       "every file unchanged.",
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A route name."},
            "file": _FILE,
            "language": {"type": "string"},
            "prompt": {"type": "string"},
            "response_format": {"type": "string",
                                "enum": ["json", "text", "srt", "verbose_json", "vtt"]},
            "temperature": {"type": "number"},
            "stream": {"type": "boolean"},
        },
    },
    "ImageEditRequest": {
        "type": "object", "required": ["model", "image", "prompt"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A route name."},
            "image": _FILE, "mask": _FILE, "prompt": {"type": "string"},
            "n": {"type": "integer", "minimum": 1}, "size": {"type": "string"},
        },
    },
    "ImageVariationRequest": {
        "type": "object", "required": ["model", "image"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "A route name."},
            "image": _FILE, "n": {"type": "integer", "minimum": 1}, "size": {"type": "string"},
        },
    },
    "AggregateRequest": {
        "type": "object", "required": ["routes", "request"], "additionalProperties": False,
        "properties": {
            "routes": {"type": "array", "minItems": 1, "maxItems": MAX_BRANCHES,
                       "uniqueItems": True, "items": {"type": "string"}},
            "request": {"type": "object", "description": "The body each branch sends, less `model`."},
            "endpoint": {"type": "string", "enum": ["chat/completions", "completions", "embeddings"]},
            "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_S},
        },
    },
    "AggregateResponse": {
        "type": "object", "required": ["object", "results"],
        "properties": {
            "object": {"const": "aggregate"},
            "results": {"type": "array", "items": {
                "type": "object", "required": ["route", "status", "body"],
                "properties": {"route": {"type": "string"}, "status": {"type": "integer"},
                               "body": {}, "variant": {"type": ["string", "null"]},
                               "cache": {"type": ["string", "null"]},
                               "latency_ms": {"type": "number"}}}},
        },
    },
    "FeedbackRequest": {
        "type": "object", "required": ["request_id"], "additionalProperties": False,
        "examples": [{"request_id": "3f2a9c1000000001", "score": 0.8},
                     {"request_id": "3f2a9c1000000002", "thumbs": "down"}],
        "properties": {
            "request_id": {"type": "string", "minLength": 1, "maxLength": 128,
                           "description": "The X-Request-ID header of the answer."},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "thumbs": {"type": "string", "enum": ["up", "down"]},
        },
        "oneOf": [{"required": ["score"]}, {"required": ["thumbs"]}],
    },
    "FeedbackResponse": {
        "type": "object", "required": ["request_id", "route", "variant", "score"],
        "properties": {"request_id": {"type": "string"}, "route": {"type": "string"},
                       "variant": {"type": "string"}, "score": {"type": "number"}},
    },
    "ModelList": {
        "type": "object", "required": ["object", "data"],
        "properties": {"object": {"const": "list"},
                       "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}},
    },
    "Model": {
        "type": "object", "required": ["id", "object"],
        "properties": {"id": {"type": "string"}, "object": {"const": "model"},
                       "created": {"type": "integer"}, "owned_by": {"type": "string"}},
    },
    "V2InferRequest": {
        "type": "object", "required": ["inputs"],
        "examples": [{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                  "data": [1.0, 2.0, 3.0, 4.0]}]}],
        "properties": {
            "id": {"type": "string"},
            "parameters": _ANY_OBJECT,
            "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_IN},
            "outputs": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": _ANY_OBJECT}}},
        },
    },
    "V2InferResponse": {
        "type": "object", "required": ["model_name", "outputs"],
        "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                       "id": {"type": "string"}, "outputs": {"type": "array", "items": _ANY_OBJECT}},
    },
    "V2ModelMetadata": {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"},
                       "versions": {"type": "array", "items": {"type": "string"}},
                       "platform": {"type": "string"},
                       "inputs": {"type": "array", "items": _ANY_OBJECT},
                       "outputs": {"type": "array", "items": _ANY_OBJECT}},
    },
}

_PUBLIC: list[dict[str, Any]] = []  # an empty security requirement list: no key needed

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "litegate", "version": "1",
             "description": "Inference gateway: OpenAI-compatible /v1 and Open Inference "
                            "Protocol v2 (/v2). Errors on /v1 use the OpenAI error shape, "
                            "on /v2 {\"error\": \"...\"}."},
    "security": [{"bearer": []}, {"apiKey": []}],
    "paths": {
        "/healthz": {"get": {"summary": "The process is alive.", "security": _PUBLIC,
                             "responses": {"200": _json(_ANY_OBJECT)}}},
        "/readyz": {"get": {"summary": "Database reachable and hot models warmed.",
                            "security": _PUBLIC,
                            "responses": {"200": _json(_ANY_OBJECT),
                                          "503": _json(_ANY_OBJECT, "Not ready.")}}},
        "/v1/models": {"get": {
            "summary": "The routes this key may use.",
            "responses": {"200": _json({"$ref": "#/components/schemas/ModelList"}),
                          **_errors(("401", "429"), _OPENAI_ERROR)},
        }},
        "/v1/models/{model}": {"get": {
            "summary": "One route, if this key may use it.",
            "parameters": [_MODEL],
            "responses": {"200": _json({"$ref": "#/components/schemas/Model"}),
                          **_errors(("401", "403", "404", "429"), _OPENAI_ERROR)},
        }},
        "/v1/chat/completions": _v1_post("Chat completion, forwarded to the route's variant.",
                                         "ChatCompletionRequest"),
        "/v1/completions": _v1_post("Text completion, forwarded to the route's variant.",
                                    "CompletionRequest"),
        "/v1/embeddings": _v1_post("Embeddings, from an upstream or a local ONNX model.",
                                   "EmbeddingRequest"),
        "/v1/responses": _v1_post("Responses API (streamed too), forwarded to the route's variant.",
                                  "ModelRequest"),
        "/v1/moderations": _v1_post("Moderation, forwarded to the route's variant.", "ModelRequest"),
        "/v1/images/generations": _v1_post("Image generation, forwarded to the route's variant.",
                                           "ModelRequest"),
        "/v1/audio/speech": _v1_post("Text to speech (audio bytes back), forwarded to the route's "
                                     "variant.", "ModelRequest"),
        "/v1/audio/transcriptions": _v1_upload("Speech to text (multipart form), forwarded "
                                               "to the route's variant.", "TranscriptionRequest"),
        "/v1/audio/translations": _v1_upload("Speech to English text (multipart form), "
                                             "forwarded to the route's variant.",
                                             "TranscriptionRequest"),
        "/v1/images/edits": _v1_upload("Image edit (multipart form), forwarded to the route's "
                                       "variant.", "ImageEditRequest"),
        "/v1/images/variations": _v1_upload("Image variation (multipart form), forwarded to the "
                                            "route's variant.", "ImageVariationRequest"),
        "/v1/aggregate": {"post": {
            "summary": "One request fanned out to several routes in parallel.",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/AggregateRequest"}}}},
            "responses": {"200": _json({"$ref": "#/components/schemas/AggregateResponse"}),
                          **_errors(("400", "401", "413", "429"), _OPENAI_ERROR)},
        }},
        "/v1/feedback": {"post": {
            "summary": "Score an answer (by its X-Request-ID) for a route with adaptive "
                       "metric 'feedback'; once per request, by its key or one scoped to "
                       "the route.",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/FeedbackRequest"}}}},
            "responses": {"200": _json({"$ref": "#/components/schemas/FeedbackResponse"}),
                          **_errors(("400", "401", "404", "409", "413", "429"), _OPENAI_ERROR)},
        }},
        "/v2": {"get": {"summary": "Server metadata.", "security": _PUBLIC,
                        "responses": {"200": _json(_ANY_OBJECT)}}},
        "/v2/health/live": {"get": {"summary": "Liveness.", "security": _PUBLIC,
                                    "responses": {"200": _EMPTY_OK}}},
        "/v2/health/ready": {"get": {"summary": "Readiness.", "security": _PUBLIC,
                                     "responses": {"200": _EMPTY_OK, "503": _NOT_READY}}},
        **_v2_model_paths("/v2/models/{model}", [_MODEL]),
        **_v2_model_paths("/v2/models/{model}/versions/{version}", [_MODEL, _VERSION]),
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
        "schemas": _SCHEMAS,
    },
}


@lru_cache(maxsize=8)
def document_json(admin_path: str | None, *, health: bool = True) -> bytes:
    """The served document: :data:`DOCUMENT`, plus the admin API under ``admin_path``
    (``/admin``) when the console is on (``None``: off); ``health=False`` leaves out the
    probes (a mounted gateway whose host app keeps ``/healthz`` and ``/readyz``)."""
    return msgspec.json.encode(document(admin_path, health=health))


def document(admin_path: str | None, *, health: bool = True) -> dict[str, Any]:
    doc = _with_admin(admin_path)
    if health:
        return doc
    return {**doc, "paths": {p: item for p, item in doc["paths"].items() if p not in _HEALTH}}


_HEALTH = ("/healthz", "/readyz")


def _with_admin(admin_path: str | None) -> dict[str, Any]:
    if admin_path is None:
        return DOCUMENT
    from litegate.openapi_admin import admin_components, admin_paths

    doc = {**DOCUMENT, "paths": {**DOCUMENT["paths"], **admin_paths(admin_path + "/api")}}
    doc["info"] = {**DOCUMENT["info"], "description": DOCUMENT["info"]["description"]
                   + " The admin API (" + admin_path + "/api/…) takes an admin token "
                   "(`litegate admin create-token`), never an API key."}
    doc["components"] = {
        "securitySchemes": {**DOCUMENT["components"]["securitySchemes"], "adminToken": {
            "type": "http", "scheme": "bearer",
            "description": "An admin API token (lga-…), scoped read or write."}},
        "schemas": {**_SCHEMAS, **admin_components()},
    }
    return doc
