"""Miss explanations: the closest recording and JSON paths of every difference."""

from __future__ import annotations

import hashlib
import json

import pytest

from server.loader import load_paths
from server.matching.index import Exhausted, Index
from server.matching.keys import MatchRules
from server.matching.nearmiss import (
    ABSENT,
    KEPT_NEAR_MISS_LENGTH,
    KEPT_VALUE_LENGTH,
    Difference,
    common_prefix_length,
    near_misses,
    render_difference,
)
from server.models import ReceivedRequest

from .conftest import interaction


def chat(*messages: str, model: str = "gpt-4o-mini") -> str:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": m} for m in messages]})


def recorded(cassette_dir, rules: MatchRules = MatchRules()) -> list:
    """The loaded interactions with their match keys, as the index hands them to near_misses."""
    return list(Index(load_paths([cassette_dir]).cassettes, rules, Exhausted.ERROR).recorded())


def received(body: str, path: str = "/v1/chat/completions", query: str = "", method: str = "POST") -> ReceivedRequest:
    return ReceivedRequest(method, path, query, {}, body.encode())


def test_closest_names_json_paths(write_cassette, cassette_dir) -> None:
    write_cassette("chat", interaction(chat("hello", "how are you?")), interaction(chat("totally", "different", "talk")))
    [best] = near_misses(received(chat("hello", "how are you??")), recorded(cassette_dir), MatchRules(), limit=1)
    assert best.interaction.label == "chat#0"
    assert [(d.where, d.recorded, d.received) for d in best.differences] == [
        ("messages[1].content", "how are you?", "how are you??")
    ]


def test_method_path_query_and_missing_items(write_cassette, cassette_dir) -> None:
    write_cassette("g", interaction(chat("a"), url="https://x/v1beta/models/m:streamGenerateContent?alt=sse"))
    [best] = near_misses(received(chat("a", "b"), path="/v1/models/m:streamGenerateContent"), recorded(cassette_dir), MatchRules())
    wheres = {d.where: (d.recorded, d.received) for d in best.differences}
    assert wheres["path"] == ("/v1beta/models/m:streamGenerateContent", "/v1/models/m:streamGenerateContent")
    assert wheres["query alt"] == ("sse", ABSENT)
    assert wheres["messages[1]"] == (ABSENT, {"role": "user", "content": "b"})


def test_a_query_parameter_given_several_times_shows_all_its_values(write_cassette, cassette_dir) -> None:
    write_cassette("files", interaction(None, method="GET", url="https://x/v1/files?purpose=a&purpose=b&limit=2"))
    interactions = recorded(cassette_dir)

    def query_differences(query: str) -> dict:
        [best] = near_misses(received("", method="GET", path="/v1/files", query=query), interactions, MatchRules())
        return {d.where: (d.recorded, d.received) for d in best.differences}

    assert query_differences("purpose=a&limit=2") == {"query purpose": (["a", "b"], "a")}
    assert query_differences("purpose=b&purpose=a&purpose=b&limit=2") == {"query purpose": (["a", "b"], ["a", "b", "b"])}
    assert query_differences("purpose=b&purpose=a&limit=3") == {"query limit": ("2", "3")}


def test_same_endpoint_preferred(write_cassette, cassette_dir) -> None:
    write_cassette("mix", interaction(chat("x"), url="https://a/v1/embeddings"), interaction(chat("y", "z")))
    [best] = near_misses(received(chat("x")), recorded(cassette_dir), MatchRules(), limit=1)
    assert best.interaction.request.path == "/v1/chat/completions"


def test_ignored_fields_are_not_differences(write_cassette, cassette_dir) -> None:
    write_cassette("c", interaction('{"user":"u1","model":"a"}'))
    rules = MatchRules.build(ignore_fields=("user",))
    [best] = near_misses(received('{"user":"u2","model":"b"}'), recorded(cassette_dir, rules), rules)
    assert [d.where for d in best.differences] == ["model"]


def test_long_strings_are_cut_around_the_difference() -> None:
    prefix = "You are a very helpful assistant. " * 20
    text = render_difference(Difference("body", "messages[0].content", prefix + "Answer in French.", prefix + "Answer in German."))
    assert "French" in text and "German" in text
    assert len(text) < 300 and "…" in text


def test_non_json_body_difference(write_cassette, cassette_dir) -> None:
    write_cassette("f", interaction("a=1&b=2", url="https://x/form"))
    [best] = near_misses(received("a=1&b=3", path="/form"), recorded(cassette_dir), MatchRules())
    assert [(d.where, d.recorded, d.received) for d in best.differences] == [("body", "a=1&b=2", "a=1&b=3")]


def test_kept_long_strings_stay_comparable_where_they_differ() -> None:
    prefix, suffix = "a" * 600_000, "z" * 400_000
    recorded, received = prefix + "Answer in French." + suffix, prefix + "Answer in German." + suffix
    full = Difference("body", "messages[0].content", recorded, received)
    kept = full.kept()
    assert kept.text == render_difference(full) and "German" in kept.text
    for value, original in ((kept.recorded, recorded), (kept.received, received)):
        assert len(value) <= KEPT_VALUE_LENGTH + 2 and value.startswith("…a") and value.endswith("z…")
        assert value.index("Answer in") == kept.recorded.index("Answer in")  # the same stretch of both
    data = kept.to_json()
    assert "French" in data["recorded"] and "German" in data["received"]
    assert data["received_length"] == len(received) == data["recorded_length"]
    assert data["received_sha256"] == hashlib.sha256(received.encode()).hexdigest()[:12] != data["recorded_sha256"]


def test_kept_values_that_fit_are_untouched() -> None:
    difference = Difference("body", "messages[1]", ABSENT, {"role": "user", "content": "hi"})
    assert difference.kept() == Difference("body", "messages[1]", ABSENT, {"role": "user", "content": "hi"},
                                           rendered=render_difference(difference))
    assert "received_length" not in difference.kept().to_json()


def test_kept_objects_and_lone_strings_keep_head_and_tail() -> None:
    message = {"role": "user", "content": "x" * 50_000 + "END"}
    kept = Difference("body", "messages[3]", ABSENT, message).kept()
    assert isinstance(kept.received, str) and kept.received.startswith('{"role":"user"') and kept.received.endswith('END"}')
    assert kept.received_cut is not None and kept.received_cut.length == len(json.dumps(message, separators=(",", ":")))
    assert len(kept.received) <= KEPT_VALUE_LENGTH + 1 and kept.recorded is ABSENT and kept.recorded_cut is None


def test_a_kept_near_miss_is_bounded_and_counts_what_it_left_out(write_cassette, cassette_dir) -> None:
    many = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"{n:05} " + "w" * 1000} for n in range(400)]})
    write_cassette("c", interaction(json.dumps({"model": "m", "messages": []})))
    [near] = near_misses(received(many), recorded(cassette_dir), MatchRules())
    kept = near.kept()
    assert len(near.differences) == 400 and 0 < len(kept.differences) < 400
    assert kept.omitted == 400 - len(kept.differences) and kept.to_json()["omitted_differences"] == kept.omitted
    assert sum(d.kept_length() for d in kept.differences) <= KEPT_NEAR_MISS_LENGTH
    assert kept.differences == tuple(d.kept() for d in near.differences[: len(kept.differences)])  # the first ones
    assert kept.score == near.score


def test_integers_beyond_64_bits_and_deep_values_are_shown() -> None:
    text = render_difference(Difference("body", "seed", 10**30, 2 * 10**30))
    assert text == "seed: recorded 1000000000000000000000000000000, received 2000000000000000000000000000000"
    deep: object = 1
    for _ in range(300):  # deeper than orjson writes
        deep = [deep]
    assert render_difference(Difference("body", "a", 1, deep)) == "a: recorded 1, received " + "[" * 99 + "…"
    for _ in range(50_000):  # deeper than json writes on any Python (3.13 writes 9 000 levels, 3.11 under 1 000)
        deep = [deep]
    assert render_difference(Difference("body", "a", 1, deep)) == "a: recorded 1, received (JSON nested too deeply to show)"


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("", "", 0), ("abc", "abc", 3), ("abc", "abd", 2), ("abc", "abcdef", 3), ("xbc", "abc", 0),
    (b"\x00\x01\x02", b"\x00\x01\x03", 2), ("é" * 1000 + "a", "é" * 1000 + "b", 1000),
])
def testcommon_prefix_length(a, b, expected) -> None:
    assert common_prefix_length(a, b) == expected == common_prefix_length(b, a)


def test_form_bodies_differ_part_by_part_and_other_bodies_whole(write_cassette, cassette_dir) -> None:
    recorded_body = (b'--rec\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
                     b'--rec\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n\xff\xfe\r\n--rec--\r\n')
    write_cassette("upload", interaction(recorded_body, url="https://api.openai.com/v1/audio/transcriptions",
                                         request_headers={"Content-Type": ["multipart/form-data; boundary=rec"]}))
    interactions = recorded(cassette_dir)
    sent = recorded_body.replace(b"--rec", b"--sent").replace(b"whisper-1", b"whisper-2")

    def closest(body: bytes, content_type: str) -> list[tuple[str, object, object]]:
        request = ReceivedRequest("POST", "/v1/audio/transcriptions", "", {"content-type": content_type}, body)
        [best] = near_misses(request, interactions, MatchRules(), limit=1)
        return [(d.where, d.recorded, d.received) for d in best.differences]

    assert closest(sent, "multipart/form-data; boundary=sent") == [("part model", "whisper-1", "whisper-2")]
    assert closest(sent.replace(b"whisper-2", b"whisper-1"), "multipart/form-data; boundary=sent") == []
    [(where, recorded_value, _)] = closest(sent, "application/octet-stream")  # not a form: the bodies, whole
    assert where == "body" and recorded_value == recorded_body


def test_a_json_value_short_enough_is_kept_whole(write_cassette, cassette_dir) -> None:
    objects = {"tools": [{"name": f"t{n}", "parameters": {"n": n}} for n in range(300)]}
    write_cassette("c", interaction(json.dumps({"model": "m"})))
    [near] = near_misses(received(json.dumps({"model": "m", **objects})), recorded(cassette_dir), MatchRules())
    assert near.kept().differences[0].received == objects["tools"]
