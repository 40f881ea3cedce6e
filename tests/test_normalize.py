"""The normaliser: content and value_json rules, and the integrity hash."""

from __future__ import annotations

import json
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from engramdb.engine.normalize import (
    canonical_json,
    content_from_value,
    integrity_hash,
    normalize_content,
    normalize_value,
)
from engramdb.models import Scope

json_leaf = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=20) \
    | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)
scopes = st.none() | st.sampled_from(list(Scope))


def test_content_rules() -> None:
    assert normalize_content("  hello   world \r\n\r\n\r\n\r\nbye\t ") == "hello world\n\nbye"
    assert normalize_content("e\u0301") == "\u00e9"  # NFC
    assert normalize_content("a\u200bb\x00c") == "abc"  # zero-width and NUL removed


@given(st.text(max_size=200))
def test_content_normalisation_is_idempotent(text: str) -> None:
    once = normalize_content(text)
    assert normalize_content(once) == once
    assert once == once.strip()
    assert unicodedata.is_normalized("NFC", once)
    assert "\r" not in once and "\x00" not in once


@given(json_values, scopes)
def test_value_normalisation_is_idempotent(value: object, scope: Scope | None) -> None:
    once = normalize_value(value, scope)
    assert normalize_value(once, scope) == once
    json.dumps(once)  # still JSON


@given(st.lists(st.text(max_size=10), max_size=12), scopes)
def test_arrays_are_deduplicated_keeping_order(items: list[str], scope: Scope | None) -> None:
    out = normalize_value(items, scope)
    assert len(out) == len(set(out))
    # every original item is represented by its normal form, first occurrence first
    firsts: list[str] = []
    for item in items:
        n = normalize_value(item, scope)
        if n not in firsts:
            firsts.append(n)
    assert out == firsts


@given(json_values)
def test_hash_ignores_key_order_and_duplicates(value: object) -> None:
    n = normalize_value(value, Scope.PREFERENCES)
    if isinstance(n, dict):
        reordered = dict(reversed(list(n.items())))
        assert integrity_hash("c", reordered) == integrity_hash("c", n)
    if isinstance(n, list):
        assert normalize_value(n + n, Scope.PREFERENCES) == n


def test_scope_rules_casefold_vocabulary_but_keep_schedule_case() -> None:
    v = {"Likes": ["Pizza", " pizza ", "SUSHI"], "dislikes": ["Broccoli", None], "x": None}
    assert normalize_value(v, Scope.PREFERENCES) == {
        "likes": ["pizza", "sushi"], "dislikes": ["broccoli", None]
    }
    sched = {"TimeZone": "Europe/Berlin", "days": ["Monday", "Monday", "Friday"]}
    assert normalize_value(sched, Scope.SCHEDULE) == {
        "timezone": "Europe/Berlin", "days": ["Monday", "Friday"]
    }
    for scope in (Scope.CONSTRAINTS, Scope.COMMUNICATION, Scope.ACCESSIBILITY, Scope.ATTENTION):
        assert normalize_value(["Large  Text", "large text"], scope) == ["large text"]


def test_numbers_are_canonical() -> None:
    assert canonical_json(normalize_value({"a": 1.0, "b": 2.5}, None)) == '{"a":1,"b":2.5}'


def test_content_from_value_is_readable() -> None:
    text = content_from_value({"likes": ["pizza", "sushi"], "dislikes": ["broccoli"]},
                              Scope.PREFERENCES, "food")
    assert text == "preferences / food: dislikes: broccoli; likes: pizza, sushi"


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=50), st.text(min_size=1, max_size=50))
def test_hash_separates_different_contents(a: str, b: str) -> None:
    if a != b:
        assert integrity_hash(a) != integrity_hash(b)
    assert len(integrity_hash(a)) == 64
