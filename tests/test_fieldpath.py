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
