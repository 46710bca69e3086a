"""Miss explanations: the closest recording and JSON paths of every difference."""

from __future__ import annotations

import json

from server.loader import load_paths
from server.matching import MatchRules
from server.models import ReceivedRequest
from server.nearmiss import ABSENT, Difference, near_misses, render_difference

from .conftest import interaction


def chat(*messages: str, model: str = "gpt-4o-mini") -> str:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": m} for m in messages]})


def received(body: str, path: str = "/v1/chat/completions", query: str = "", method: str = "POST") -> ReceivedRequest:
    return ReceivedRequest(method, path, query, {}, body.encode())


def test_closest_names_json_paths(write_cassette, cassette_dir) -> None:
    write_cassette("chat", interaction(chat("hello", "how are you?")), interaction(chat("totally", "different", "talk")))
    interactions = load_paths([cassette_dir]).cassettes[0].interactions
    [best] = near_misses(received(chat("hello", "how are you??")), interactions, MatchRules(), limit=1)
    assert best.interaction.label == "chat#0"
    assert [(d.where, d.recorded, d.received) for d in best.differences] == [
        ("messages[1].content", "how are you?", "how are you??")
    ]


def test_method_path_query_and_missing_items(write_cassette, cassette_dir) -> None:
    write_cassette("g", interaction(chat("a"), url="https://x/v1beta/models/m:streamGenerateContent?alt=sse"))
    interactions = load_paths([cassette_dir]).cassettes[0].interactions
    [best] = near_misses(received(chat("a", "b"), path="/v1/models/m:streamGenerateContent"), interactions, MatchRules())
    wheres = {d.where: (d.recorded, d.received) for d in best.differences}
    assert wheres["path"] == ("/v1beta/models/m:streamGenerateContent", "/v1/models/m:streamGenerateContent")
    assert wheres["query alt"] == ("sse", ABSENT)
    assert wheres["messages[1]"] == (ABSENT, {"role": "user", "content": "b"})


def test_same_endpoint_preferred(write_cassette, cassette_dir) -> None:
    write_cassette("mix", interaction(chat("x"), url="https://a/v1/embeddings"), interaction(chat("y", "z")))
    interactions = load_paths([cassette_dir]).cassettes[0].interactions
    [best] = near_misses(received(chat("x")), interactions, MatchRules(), limit=1)
    assert best.interaction.request.path == "/v1/chat/completions"


def test_ignored_fields_are_not_differences(write_cassette, cassette_dir) -> None:
    write_cassette("c", interaction('{"user":"u1","model":"a"}'))
    interactions = load_paths([cassette_dir]).cassettes[0].interactions
    rules = MatchRules.build(ignore_fields=("user",))
    [best] = near_misses(received('{"user":"u2","model":"b"}'), interactions, rules)
    assert [d.where for d in best.differences] == ["model"]


def test_long_strings_are_cut_around_the_difference() -> None:
    prefix = "You are a very helpful assistant. " * 20
    text = render_difference(Difference("body", "messages[0].content", prefix + "Answer in French.", prefix + "Answer in German."))
    assert "French" in text and "German" in text
    assert len(text) < 300 and "…" in text


def test_non_json_body_difference(write_cassette, cassette_dir) -> None:
    write_cassette("f", interaction("a=1&b=2", url="https://x/form"))
    interactions = load_paths([cassette_dir]).cassettes[0].interactions
    [best] = near_misses(received("a=1&b=3", path="/form"), interactions, MatchRules())
    assert [(d.where, d.recorded, d.received) for d in best.differences] == [("body", "a=1&b=2", "a=1&b=3")]
