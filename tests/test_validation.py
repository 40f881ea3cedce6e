"""Every input limit: a clear error naming the field, and nothing stored."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engramdb import Engram, FrozenClock, ValidationError


def _rejects(engram: Engram, field: str, fragment: str, **kwargs: object) -> None:
    kwargs.setdefault("content", "a perfectly fine memory")
    before = engram.list(limit=1000).total
    with pytest.raises(ValidationError) as info:
        engram.add(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field, info.value.message
    assert fragment in info.value.message, info.value.message
    assert field in info.value.message
    assert engram.list(limit=1000).total == before


@pytest.mark.parametrize("content", ["", "   ", "\n\t \r\n", "\u200b\u200b", "\x00\x01"])
def test_empty_content_after_stripping(engram: Engram, content: str) -> None:
    _rejects(engram, "content", "1..10000", content=content)


def test_content_length_limit_counts_after_stripping(engram: Engram) -> None:
    ok = "  " + "x" * 10_000 + "  "
    assert engram.add(ok).status.value == "saved"
    _rejects(engram, "content", "got 10001", content="y" * 10_001)


def test_content_must_be_text(engram: Engram) -> None:
    _rejects(engram, "content", "string", content=123)
    _rejects(engram, "content", "required", content=None)


@pytest.mark.parametrize("field", ["user_id", "agent_id", "session_id", "namespace"])
def test_identifier_limits(engram: Engram, field: str) -> None:
    assert engram.add(f"memory for {field}", **{field: "i" * 255}).status.value == "saved"
    _rejects(engram, field, "at most 255", **{field: "i" * 256})
    _rejects(engram, field, "empty", **{field: "  "})
    _rejects(engram, field, "string", **{field: 42})
    _rejects(engram, field, "control", **{field: "a\x00b"})


def test_metadata_limits(engram: Engram) -> None:
    assert engram.add("twenty keys", metadata={f"k{i}": i for i in range(20)}).id
    _rejects(engram, "metadata", "at most 20 keys", metadata={f"k{i}": i for i in range(21)})
    assert engram.add("three levels", metadata={"a": {"b": {"c": 1}}}).id
    _rejects(engram, "metadata", "3 levels", metadata={"a": {"b": {"c": {"d": 1}}}})
    _rejects(engram, "metadata", "3 levels", metadata={"a": [[[1]]]})
    _rejects(engram, "metadata", "4096 bytes", metadata={"big": "x" * 4100})
    _rejects(engram, "metadata", "JSON object", metadata=["not", "an", "object"])
    _rejects(engram, "metadata", "NaN", metadata={"x": float("nan")})


@pytest.mark.parametrize("field", ["importance", "confidence"])
@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan"), float("inf"), "0.5", True])
def test_unit_interval_scores(engram: Engram, field: str, bad: object) -> None:
    _rejects(engram, field, "between 0 and 1", **{field: bad})


@pytest.mark.parametrize("field", ["importance", "confidence"])
def test_unit_interval_bounds_are_allowed(engram: Engram, field: str) -> None:
    assert engram.add(f"{field} zero", **{field: 0}).memory.__getattribute__(field) == 0.0
    assert engram.add(f"{field} one", **{field: 1.0}).memory.__getattribute__(field) == 1.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("memory_type", "gossip"), ("content_type", "video"), ("tier", "eternal"),
     ("memory_nature", "dreamy"), ("scope", "likes")],
)
def test_closed_vocabularies(engram: Engram, field: str, value: str) -> None:
    _rejects(engram, field, "must be one of", **{field: value})


def test_enums_accept_any_case(engram: Engram) -> None:
    rec = engram.add("typed", memory_type="Semantic", tier=" LONG ").memory
    assert rec.memory_type.value == "semantic" and rec.tier.value == "long"


@pytest.mark.parametrize("ttl", [0, 3651, -1, 1.5, "7", True])
def test_ttl_days_range(engram: Engram, ttl: object) -> None:
    _rejects(engram, "ttl_days", "", ttl_days=ttl)


def test_ttl_days_sets_expiry(engram: Engram, clock: FrozenClock) -> None:
    rec = engram.add("expires in a week", ttl_days=7).memory
    assert rec.expires_at == clock.now() + timedelta(days=7)
    rec = engram.add("expires in ten years", ttl_days=3650).memory
    assert rec.expires_at == clock.now() + timedelta(days=3650)


def test_expires_at_must_lie_in_the_future(engram: Engram, clock: FrozenClock) -> None:
    past = (clock.now() - timedelta(seconds=1)).isoformat()
    _rejects(engram, "expires_at", "future", expires_at=past)
    _rejects(engram, "expires_at", "future", expires_at=clock.now().isoformat())
    _rejects(engram, "expires_at", "ISO 8601", expires_at="next tuesday")
    future = engram.add("later", expires_at="2030-01-01T00:00:00Z").memory
    assert future.expires_at is not None and future.expires_at.year == 2030
    _rejects(engram, "ttl_days", "not both", ttl_days=3, expires_at="2030-01-01T00:00:00Z")


def test_tags(engram: Engram) -> None:
    assert engram.add("tagged", tags=["a", "b", "a"]).memory.tags == ["a", "b"]
    _rejects(engram, "tags", "list", tags="a,b")
    _rejects(engram, "tags", "at most 50", tags=[f"t{i}" for i in range(51)])
    _rejects(engram, "tags[1]", "at most 100", tags=["ok", "t" * 101])


def test_parent_must_exist_in_tenant(engram: Engram) -> None:
    parent = engram.add("parent memory").id
    assert engram.add("child memory", parent_memory_id=parent).memory.parent_memory_id == parent
    _rejects(engram, "parent_memory_id", "no memory",
             parent_memory_id="01890000-0000-7000-8000-000000000000")
    _rejects(engram, "parent_memory_id", "UUID", parent_memory_id="not-a-uuid")


def test_value_json_limits(engram: Engram) -> None:
    _rejects(engram, "value_json", "16384 bytes", value_json={"x": "y" * 17_000})
    deep: dict[str, object] = {}
    node = deep
    for _ in range(7):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    _rejects(engram, "value_json", "levels", value_json=deep)
    _rejects(engram, "content", "required", content=None, value_json=None)


def test_unknown_fields_are_named(engram: Engram) -> None:
    with pytest.raises(ValidationError) as info:
        engram.add("x", colour="blue")
    assert info.value.field == "colour"


def test_batch_errors_name_the_item_and_store_nothing(engram: Engram) -> None:
    items = [{"content": "fine one"}, {"content": "fine two"}, {"content": "  "}]
    with pytest.raises(ValidationError) as info:
        engram.add_many(items)
    assert info.value.field == "items[2].content"
    assert "items[2].content" in info.value.message
    assert engram.list().total == 0
    with pytest.raises(ValidationError) as info:
        engram.add_many([{"content": "x", "importance": 3}])
    assert info.value.field == "items[0].importance"


def test_search_and_list_limits(engram: Engram) -> None:
    for bad in (0, 101, -1, "10", True):
        with pytest.raises(ValidationError) as info:
            engram.search("anything", limit=bad)  # type: ignore[arg-type]
        assert info.value.field == "limit"
    with pytest.raises(ValidationError) as info:
        engram.search("   ")
    assert info.value.field == "query"
    with pytest.raises(ValidationError) as info:
        engram.search("x" * 10_001)
    assert info.value.field == "query"
    with pytest.raises(ValidationError) as info:
        engram.list(limit=0)
    assert info.value.field == "limit"
    with pytest.raises(ValidationError) as info:
        engram.list(offset=-1)
    assert info.value.field == "offset"
    with pytest.raises(ValidationError) as info:
        engram.search("x", memory_types=["nope"])
    assert info.value.field == "memory_types"
    with pytest.raises(ValidationError) as info:
        engram.search("x", colour="blue")
    assert info.value.field == "colour"
