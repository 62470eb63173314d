"""The JSON depth bound agrees with the real nesting of any document, strings included."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from litegate.errors import BadRequest
from litegate.jsonbody import nesting_within, parse_json

# Strings full of brackets, quotes and backslashes: they must not count as nesting.
tricky_text = st.text(alphabet='[]{}"\\ab', max_size=6)
documents = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(doc=documents, bound=st.integers(0, 8))
def test_bound_matches_the_real_depth(doc: Any, bound: int) -> None:
    assert nesting_within(json.dumps(doc).encode(), bound) == (depth(doc) <= bound)


def test_parse_json_refuses_too_deep_and_far_too_deep() -> None:
    assert parse_json(b"[" * 64 + b"]" * 64) is not None
    for levels in (65, 100_000):
        with pytest.raises(BadRequest, match="nested deeper than 64 levels"):
            parse_json(b"[" * levels + b"]" * levels)
    with pytest.raises(BadRequest, match="malformed JSON body"):
        parse_json(b"[1,")
