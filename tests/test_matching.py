"""Normalisation: which requests count as the same."""

from __future__ import annotations

import pytest

from server.matching.keys import MatchRules, normalise_path, normalise_query

RULES = MatchRules()


def body_key(body: str | bytes, rules: MatchRules = RULES) -> bytes:
    return rules.body_key(body.encode() if isinstance(body, str) else body)


@pytest.mark.parametrize(
    "recorded, received",
    [
        ('{"a":1,"b":[1,2]}', '{ "b" : [1, 2],\n "a": 1 }'),  # key order, whitespace
        ('{"city":"Montr\\u00e9al"}', '{"city":"Montréal"}'),  # unicode escapes
        ('{"t":1}', '{"t":1.0}'),  # number spelling
        ('{"t":100}', '{"t":1e2}'),
        ('{"s":"a\\r\\nb"}', '{"s":"a\\nb"}'),  # CRLF inside strings
    ],
)
def test_json_bodies_equal_by_value(recorded: str, received: str) -> None:
    assert body_key(recorded) == body_key(received)


@pytest.mark.parametrize(
    "recorded, received",
    [
        ('{"a":1}', '{"a":2}'),
        ('{"a":[1,2]}', '{"a":[2,1]}'),  # array order matters
        ('{"a":true}', '{"a":1}'),
        ('{"t":1.5}', '{"t":1}'),
        ('{"a":null}', "{}"),
    ],
)
def test_json_bodies_that_differ(recorded: str, received: str) -> None:
    assert body_key(recorded) != body_key(received)


def test_non_json_bodies_are_bytes() -> None:
    assert body_key(b"a=1&b=2") == b"a=1&b=2"
    assert body_key(b"a=1&b=2") != body_key(b"b=2&a=1")
    assert body_key(b"") == b""


def test_exact_body_mode_compares_bytes() -> None:
    rules = MatchRules(exact_body=True)
    no_header = lambda name: None  # noqa: E731
    a = rules.key("POST", "/x", "", no_header, b'{"a":1}')
    b = rules.key("POST", "/x", "", no_header, b'{"a": 1}')
    assert a != b


def test_ignore_fields() -> None:
    rules = MatchRules.build(ignore_fields=("metadata.user_id", "messages[*].cache_control"))
    recorded = '{"metadata":{"user_id":"u-1"},"messages":[{"role":"user","cache_control":{"type":"ephemeral"}}]}'
    received = '{"metadata":{"user_id":"u-2"},"messages":[{"role":"user"}]}'
    assert body_key(recorded, rules) == body_key(received, rules)
    assert body_key(recorded) != body_key(received)


def test_match_headers() -> None:
    rules = MatchRules.build(match_headers=("Anthropic-Beta",))
    with_beta = rules.key("POST", "/v1/messages", "", {"anthropic-beta": "tools"}.get, b"")
    other = rules.key("POST", "/v1/messages", "", {"anthropic-beta": "other"}.get, b"")
    assert with_beta != other
    assert MatchRules().key("POST", "/v1/messages", "", {"anthropic-beta": "tools"}.get, b"") == MatchRules().key(
        "post", "/v1/messages", "", {}.get, b""
    )


def test_query_and_path() -> None:
    assert normalise_query("b=2&a=1&alt=sse") == normalise_query("alt=sse&a=1&b=2")
    assert normalise_query("q=a%20b") == normalise_query("q=a+b")
    assert normalise_query("empty=") == (("empty", ""),)
    assert normalise_path("/model/us.anthropic.claude-v1%3A0/invoke") == "/model/us.anthropic.claude-v1:0/invoke"


def test_huge_integers_and_nan_do_not_crash() -> None:
    assert body_key('{"n": 123456789012345678901234567890}') == body_key('{"n":123456789012345678901234567890}')
    assert body_key('{"n": NaN}')


def test_integers_beyond_64_bits_compare_exactly() -> None:
    # orjson reads an integer past 64 bits as a float: two such ids (a seed, a snowflake) would
    # be equal, and the body key would depend on whether a fraction elsewhere made it normalise
    big = "12345678901234567890123"
    assert body_key(f'{{"n":{big},"x":1.0}}') == body_key(f'{{"x":1,"n":{big}}}')
    assert body_key(f'{{"n":{big}}}') != body_key('{"n":12345678901234567890124}')
    assert body_key('{"n":-9223372036854775809}') != body_key('{"n":-9223372036854775808}')
    assert body_key(f'{{"n":{big}}}') == f'{{"n":{big}}}'.encode()


def test_bad_ignore_path_is_rejected_up_front() -> None:
    with pytest.raises(ValueError, match="bad field path"):
        MatchRules.build(ignore_fields=("a..b",))


def test_non_finite_numbers_are_neither_null_nor_each_other() -> None:
    keys = [body_key(text) for text in ('{"a":null}', '{"a":NaN}', '{"a":Infinity}', '{"a":-Infinity}')]
    assert len(set(keys)) == 4
    assert body_key('{"a":1e400}') == body_key('{"a": Infinity}')


def test_lone_surrogates_compare_without_crashing() -> None:
    cut = '{"content":"cut \\ud83d"}'  # a string cut in the middle of an emoji by a JS client
    assert body_key(cut) == body_key('{ "content" : "cut \\ud83d" }')
    assert body_key(cut) != body_key('{"content":"cut "}')


def multipart_key(boundary: str, value: bytes = b"whisper-1", rules: MatchRules = RULES):
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n'.encode() + value + f"\r\n--{boundary}--\r\n".encode()
    return rules.key("POST", "/v1/audio/transcriptions", "", {"content-type": f"multipart/form-data; boundary={boundary}"}.get, body)


def test_multipart_bodies_match_whatever_the_boundary() -> None:
    assert multipart_key("a1b2") == multipart_key("c3d4")
    assert multipart_key("a1b2") != multipart_key("c3d4", b"whisper-2")
    assert multipart_key("a1b2", rules=MatchRules(exact_body=True)) != multipart_key("c3d4", rules=MatchRules(exact_body=True))


def test_urlencoded_bodies_match_in_any_order_json_labelled_urlencoded_still_by_value() -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}.get
    assert RULES.key("POST", "/token", "", form, b"b=2&a=1") == RULES.key("POST", "/token", "", form, b"a=1&b=2")
    curl = RULES.key("POST", "/v1/chat", "", form, b'{"model": "m", "n": 1.0}')  # curl -d '{…}' says urlencoded
    assert curl == RULES.key("POST", "/v1/chat", "", {}.get, b'{"n":1,"model":"m"}')


def test_matching_ignores_the_value_of_credential_parameters() -> None:
    rules = MatchRules()
    recorded = rules.key("POST", "/v1beta/models/m:generateContent", "alt=sse&key=REDACTED", lambda _: None, b"{}")
    sent = rules.key("POST", "/v1beta/models/m:generateContent", "key=AIza-real&alt=sse", lambda _: None, b"{}")
    other = rules.key("POST", "/v1beta/models/m:generateContent", "key=AIza-real&alt=json", lambda _: None, b"{}")
    assert recorded == sent and recorded != other
