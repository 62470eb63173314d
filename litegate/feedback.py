"""``POST /v1/feedback``: a client scores an answer, by the request id the gateway gave
it (``X-Request-ID``), and the score feeds the adaptive A/B bandit of that route.

Body: ``{"request_id": "...", "score": 0.0..1.0}`` or ``{"request_id": "...", "thumbs":
"up"|"down"}``. Only requests of routes with ``adaptive: {metric: feedback}`` are
remembered (``PendingFeedback``: bounded, with a time to live), each may be scored once,
by the key that made it only: request ids are sequential within a process, so another
key (even one allowed on the route) could guess them. The request passes the same
authentication and key limits as any other.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from litegate.asgi_types import Receive, Scope, Send
from litegate.errors import BadRequest, Conflict, MethodNotAllowed, NotFound, Unauthorized
from litegate.jsonbody import parse_json
from litegate.policies.bandit import Bandit, PendingFeedback
from litegate.policies.metrics import Metrics
from litegate.request import get_info, read_body
from litegate.responses import send_response

FEEDBACK_PATH = "/v1/feedback"
MAX_FEEDBACK_BODY = 4096
THUMBS = {"up": 1.0, "down": 0.0}
_UNKNOWN = ("unknown or expired request id {!r}: feedback is accepted once per request, "
            "for routes with adaptive metric 'feedback', by the key that made the request")


def parse_feedback(data: Any) -> tuple[str, float]:
    """(request id, score in [0, 1]) from a decoded body; BadRequest naming the field."""
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object", code="invalid_json")
    unknown = set(data) - {"request_id", "score", "thumbs"}
    if unknown:
        raise BadRequest(f"unknown field(s) {sorted(unknown)}; expected request_id and "
                         "score (0..1) or thumbs ('up'/'down')", code="invalid_feedback")
    request_id = data.get("request_id")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= 128:
        raise BadRequest("'request_id' is required: the X-Request-ID of the answer",
                         code="invalid_feedback")
    if ("score" in data) == ("thumbs" in data):
        raise BadRequest("give exactly one of 'score' (0..1) or 'thumbs' ('up'/'down')",
                         code="invalid_feedback")
    if "thumbs" in data:
        thumbs = data["thumbs"]
        if thumbs not in THUMBS:
            raise BadRequest("'thumbs' must be 'up' or 'down'", code="invalid_feedback")
        return request_id, THUMBS[thumbs]
    score = data["score"]
    if isinstance(score, bool) or not isinstance(score, int | float) or not (
        math.isfinite(score) and 0 <= score <= 1
    ):
        raise BadRequest("'score' must be a number between 0 and 1", code="invalid_feedback")
    return request_id, float(score)


class FeedbackHandler:
    def __init__(self, *, bandit: Bandit, pending: PendingFeedback, metrics: Metrics) -> None:
        self.bandit = bandit
        self.pending = pending
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"{FEEDBACK_PATH} accepts POST only", headers={"Allow": "POST"})
        info = get_info(scope)
        key = info.key if info is not None else None
        if key is None:
            raise Unauthorized("feedback needs the API key that made the request")
        request_id, score = parse_feedback(
            parse_json(await read_body(scope, receive, MAX_FEEDBACK_BODY)))
        # Another key's request reads as unknown: ids are not confirmed to outsiders.
        entry = self.pending.peek(request_id, key.id)
        if entry is None:
            raise NotFound(_UNKNOWN.format(request_id), code="request_not_found")
        self.pending.take(request_id, key.id)
        route, variant = entry
        if not self.bandit.feedback(route, variant, score):
            raise Conflict(f"route {route!r} no longer collects feedback (its adaptive "
                           "metric changed)", code="feedback_not_collected")
        self.metrics.feedback.labels(route, variant).observe(score)
        body = {"request_id": request_id, "route": route, "variant": variant, "score": score}
        await send_response(send, 200, msgspec.json.encode(body),
                            [(b"content-type", b"application/json")])
