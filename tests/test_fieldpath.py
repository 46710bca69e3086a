from __future__ import annotations

import pytest

from server.matching.fieldpath import ANY_DEPTH, ANY_INDEX, ANY_KEY, format_field_path, parse_field_path, remove_field


@pytest.mark.parametrize(
    "text, segments",
    [
        ("metadata.user_id", ("metadata", "user_id")),
        ("messages[2].content", ("messages", 2, "content")),
        ("messages[*].cache_control", ("messages", ANY_INDEX, "cache_control")),
        ("tools[*].*", ("tools", ANY_INDEX, ANY_KEY)),
        ("**.id", (ANY_DEPTH, "id")),
        ('$.a["b.c"][0]', ("a", "b.c", 0)),
    ],
)
def test_parse(text: str, segments: tuple) -> None:
    assert parse_field_path(text) == segments


@pytest.mark.parametrize("text", ["", "a..b", ".a", "a[x]", "a b", "$"])
def test_parse_errors(text: str) -> None:
    with pytest.raises(ValueError, match="bad field path"):
        parse_field_path(text)


def test_remove() -> None:
    value = {"metadata": {"user_id": "u1", "keep": 1}, "messages": [{"content": "a", "id": 1}, {"content": "b", "id": 2}],
             "deep": {"x": {"id": 3}}}
    remove_field(value, parse_field_path("metadata.user_id"))
    remove_field(value, parse_field_path("messages[*].content"))
    remove_field(value, parse_field_path("**.id"))
    remove_field(value, parse_field_path("not.there[3]"))
    assert value == {"metadata": {"keep": 1}, "messages": [{}, {}], "deep": {"x": {}}}


def test_remove_array_element() -> None:
    value = {"messages": ["a", "b", "c"]}
    remove_field(value, parse_field_path("messages[1]"))
    assert value == {"messages": ["a", "c"]}


def test_format() -> None:
    assert format_field_path(("messages", 2, "content")) == "messages[2].content"
    assert format_field_path(("a", "b.c", "x-y")) == 'a["b.c"].x-y'
    assert format_field_path(()) == "$"



def _sample() -> dict:
    return {"*": 1, "**": {"id": 2}, "[*]": 3, "a": {"*": 4, "b": 5}, "c": [6, 7], "d": {"id": 8}}


@pytest.mark.parametrize(
    "path, removed",
    [
        ('["*"]', ["*"]),
        ('a["*"]', ["a.*"]),
        ('["**"].id', ["**.id"]),
        ('["[*]"]', ["[*]"]),
        ('c["[*]"]', []),  # a key: an array has none
        ("a.*", ["a.*", "a.b"]),  # unquoted: still wildcards
        ("**.id", ["**.id", "d.id"]),
        ("c[*]", ["c.0", "c.1"]),
    ],
)
def test_a_quoted_key_is_the_literal_key_not_a_wildcard(path: str, removed: list[str]) -> None:
    value = _sample()
    remove_field(value, parse_field_path(path))
    assert sorted(set(_leaves(_sample())) - set(_leaves(value))) == removed


def _leaves(value, prefix: str = "") -> list[str]:
    """Every leaf as ``key.key`` (array elements by position), to see what a removal took."""
    if isinstance(value, dict) and value:
        return [leaf for key, item in value.items() for leaf in _leaves(item, f"{prefix}{key}.")]
    if isinstance(value, list) and value:
        return [leaf for i, item in enumerate(value) for leaf in _leaves(item, f"{prefix}{i}.")]
    return [prefix.rstrip(".")]
