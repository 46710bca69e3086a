"""The HTTP surface, in-process: replay, scoping, control headers, errors, admin."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from server import Settings, create_app
from server.matching.index import Exhausted

from .conftest import BUNDLED, interaction


def call(settings: Settings, *requests: tuple[str, str, dict]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(settings))
        # a loopback name: the server bound to loopback refuses admin calls to any other (DNS rebinding)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
            return [await client.request(method, url, **kw) for method, url, kw in requests]

    return asyncio.run(run())


def seed_request(number: int) -> bytes:
    import yaml

    data = yaml.safe_load((BUNDLED / "weather.yaml").read_text())
    return data["interactions"][number]["request"]["body"].encode()


FAST = Settings(paths=(BUNDLED,), speed=0)


def test_replays_recorded_body_and_headers_exactly() -> None:
    [response] = call(FAST, ("POST", "/v1/chat/completions", {"content": seed_request(0)}))
    import yaml

    recorded = yaml.safe_load((BUNDLED / "weather.yaml").read_text())["interactions"][0]["response"]
    assert response.status_code == 200
    assert response.content == recorded["body"].encode()
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert "x-accel-buffering" not in response.headers and "cache-control" not in response.headers


def test_body_matched_by_value_not_bytes() -> None:
    reordered = json.dumps(json.loads(seed_request(1)), indent=2, sort_keys=True)
    [response] = call(FAST, ("POST", "/v1/chat/completions", {"content": reordered}))
    assert response.status_code == 200 and "\"content\":\"°C\"".encode() in response.content


def test_non_streaming_has_content_length() -> None:
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Write a haiku about cassette tapes."}]}'
    [response] = call(FAST, ("POST", "/v1/chat/completions", {"content": body}))
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.json()["choices"][0]["message"]["content"].startswith("Magnetic ribbon")


def test_error_responses_are_replayed_with_their_status() -> None:
    body = b'{"model":"gpt-5-turbo","messages":[{"role":"user","content":"Hello"}]}'
    [response] = call(FAST, ("POST", "/v1/chat/completions", {"content": body}))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert "x-should-retry" not in response.headers  # as recorded: not one of our misses


def test_miss_is_404_json_with_diff_and_no_retry() -> None:
    body = seed_request(0).replace(b"Florence,Italy", b"Paris")
    [response] = call(FAST, ("POST", "/v1/chat/completions", {"content": body}))
    assert response.status_code == 404
    assert response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["type"] == "not_found_error" and error["code"] == "cassette_miss" and error["status"] == "NOT_FOUND"
    assert "weather#0" in error["message"]
    assert 'messages[1].content: recorded "What\'s the weather in Florence,Italy?", received "What\'s the weather in Paris?"' in error["message"]


def test_scope_by_prefix_and_header(write_cassette, cassette_dir: Path) -> None:
    write_cassette("team/a", interaction(response_body="from a"))
    write_cassette("b", interaction(response_body="from b"))
    settings = Settings(paths=(cassette_dir,), speed=0)
    body = {"content": interaction()["request"]["body"]}
    responses = call(
        settings,
        ("POST", "/__cassette/b/v1/chat/completions", body),
        ("POST", "/__cassette/team/a/v1/chat/completions", body),
        ("POST", "/v1/chat/completions", {**body, "headers": {"X-Cassette": "b"}}),
        ("POST", "/__cassette/nope/v1/chat/completions", body),
        ("POST", "/__cassette/b/v1/chat/completions", {**body, "headers": {"X-Cassette": "team/a"}}),
        ("POST", "/v1/chat/completions", {**body, "headers": {"X-Cassette": "nope"}}),
    )
    assert [r.content for r in responses[:3]] == [b"from b", b"from a", b"from b"]
    assert responses[3].status_code == 404 and responses[3].json()["error"]["code"] == "unknown_cassette"
    assert "(2 cassettes loaded; none has a name close to it)" in responses[3].json()["error"]["message"]
    assert responses[4].status_code == 400
    assert responses[5].status_code == 404 and responses[5].json()["error"]["code"] == "unknown_cassette"


def test_scoped_miss_mentions_identical_request_elsewhere(write_cassette, cassette_dir: Path) -> None:
    write_cassette("a", interaction())
    write_cassette("b", interaction('{"other":1}'))
    [response] = call(Settings(paths=(cassette_dir,), speed=0),
                      ("POST", "/__cassette/b/v1/chat/completions", {"content": interaction()["request"]["body"]}))
    assert "An identical request is recorded in a#0" in response.json()["error"]["message"]


def test_sessions_over_http(write_cassette, cassette_dir: Path) -> None:
    write_cassette("s", interaction(response_body="one"), interaction(response_body="two"))
    settings = Settings(paths=(cassette_dir,), speed=0, exhausted=Exhausted.ERROR)
    body = interaction()["request"]["body"]
    as_session = lambda s: ("POST", "/v1/chat/completions", {"content": body, "headers": {"X-Cassette-Session": s}})  # noqa: E731
    responses = call(settings, as_session("x"), as_session("y"), as_session("x"), as_session("x"))
    assert [r.content for r in responses[:3]] == [b"one", b"one", b"two"]
    assert responses[3].status_code == 404
    message = responses[3].json()["error"]["message"]
    assert "all 2 recorded interactions matching POST /v1/chat/completions were already served in session 'x' (s#0, s#1)" \
        in message
    write_cassette("s", interaction(response_body="one"))
    _, again = call(settings, as_session("x"), as_session("x"))
    assert "the one recorded interaction matching POST /v1/chat/completions was already served in session 'x' (s#0)" \
        in again.json()["error"]["message"]


@pytest.mark.parametrize("speed", ["fast", "-1", "nan", "inf", "1e-300"])
def test_bad_speed_header_is_a_clear_400(speed: str) -> None:
    [response] = call(FAST, ("POST", "/v1/chat/completions", {"content": seed_request(0), "headers": {"X-Replay-Speed": speed}}))
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(f"x-replay-speed: '{speed}' is not a speed")


def test_non_ascii_cassette_names_in_header_and_prefix(write_cassette, cassette_dir: Path) -> None:
    write_cassette("café/ü", interaction(response_body="accented"))
    body = interaction()["request"]["body"]
    by_header, by_prefix = call(
        Settings(paths=(cassette_dir,), speed=0),
        ("POST", "/v1/chat/completions", {"content": body, "headers": {"X-Cassette": "café/ü".encode()}}),
        ("POST", "/__cassette/caf%C3%A9/%C3%BC/v1/chat/completions", {"content": body}),
    )
    assert by_header.content == by_prefix.content == b"accented"


def test_deeply_nested_bodies_are_compared_as_bytes_not_crashes(write_cassette, cassette_dir: Path) -> None:
    deep = "[" * 5000 + "]" * 5000
    write_cassette("deep", interaction(deep, response_body="deep"))
    hit, miss = call(Settings(paths=(cassette_dir,), speed=0),
                     ("POST", "/v1/chat/completions", {"content": deep}),
                     ("POST", "/v1/chat/completions", {"content": "[" * 5001 + "]" * 5001}))
    assert hit.content == b"deep"
    assert miss.status_code == 404 and miss.json()["error"]["code"] == "cassette_miss"


def test_percent_encoded_paths_match(write_cassette, cassette_dir: Path) -> None:
    write_cassette("bedrock", interaction(url="https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-v1%3A0/invoke"))
    body = interaction()["request"]["body"]
    responses = call(Settings(paths=(cassette_dir,), speed=0),
                     ("POST", "/model/us.anthropic.claude-v1:0/invoke", {"content": body}),
                     ("POST", "/model/us.anthropic.claude-v1%3A0/invoke", {"content": body}))
    assert [r.status_code for r in responses] == [200, 200]


def test_admin_health_and_cassettes(write_cassette, cassette_dir: Path) -> None:
    write_cassette("good", interaction())
    write_cassette("bad", "version: 2\ninteractions:\n  - [unclosed\n")
    health, listing = call(Settings(paths=(cassette_dir,)), ("GET", "/__admin/health", {}), ("GET", "/__admin/cassettes", {}))
    assert health.status_code == 200 and health.json()["cassettes"] == 1 and health.json()["load_errors"] == 1
    good, bad = listing.json()
    assert good == {"name": "good", "file": str(cassette_dir / "good.yaml"), "format": "go-vcr v2", "interactions": 1,
                    "endpoints": ["POST /v1/chat/completions"], "providers": ["openai"], "models": ["m"],
                    "streaming": False, "served": [{"id": 0, "times": 0}], "load_errors": []}
    assert bad["name"] == "bad" and bad["interactions"] == 0
    assert bad["load_errors"][0]["line"] == 4 and "invalid YAML" in bad["load_errors"][0]["reason"]


def test_admin_openapi_docs() -> None:
    [docs] = call(FAST, ("GET", "/__admin/docs", {}))
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


@pytest.mark.parametrize("path", ["/", "/v1/models", "/__administrator"])
def test_unknown_paths_are_misses_not_crashes(path: str) -> None:
    [response] = call(FAST, ("GET", path, {}))
    assert response.status_code == 404 and response.json()["error"]["code"] == "cassette_miss"


def test_lone_surrogates_in_requests_match_or_miss_cleanly(write_cassette, cassette_dir: Path) -> None:
    cut = '{"messages":[{"role":"user","content":"cut \\ud83d"}]}'  # JSON escape of half an emoji
    write_cassette("cut", interaction(cut, response_body="served"))
    hit, miss, journal = call(Settings(paths=(cassette_dir,), speed=0),
                              ("POST", "/v1/chat/completions", {"content": cut}),
                              ("POST", "/v1/chat/completions", {"content": cut.replace("cut", "cat")}),
                              ("GET", "/__admin/requests/unmatched", {}))
    assert hit.content == b"served"
    assert journal.status_code == 200 and journal.json()[0]["near_misses"][0]["interaction"] == "cut#0"
    assert miss.status_code == 404
    assert 'messages[0].content: recorded "cut \\\\ud83d", received "cat \\\\ud83d"' in miss.json()["error"]["message"]


def test_a_header_recorded_with_several_values_matches_the_same_values_sent_repeated_or_joined(write_cassette, cassette_dir: Path) -> None:
    write_cassette("beta", interaction(url="https://api.anthropic.com/v1/messages", response_body='{"beta":"both"}',
                                       request_headers={"Anthropic-Beta": ["tools-2024", "caching-2024"]}))
    settings = Settings(paths=(cassette_dir,), speed=0, match_headers=("anthropic-beta",))
    body = interaction()["request"]["body"]
    repeated, joined, first_only = call(
        settings,
        ("POST", "/v1/messages", {"content": body, "headers": [("anthropic-beta", "tools-2024"), ("anthropic-beta", "caching-2024")]}),
        ("POST", "/v1/messages", {"content": body, "headers": {"anthropic-beta": "tools-2024, caching-2024"}}),
        ("POST", "/v1/messages", {"content": body, "headers": {"anthropic-beta": "tools-2024"}}),
    )
    assert (repeated.status_code, repeated.json()) == (200, {"beta": "both"})
    assert (joined.status_code, joined.json()) == (200, {"beta": "both"})
    assert first_only.status_code == 404
    assert 'header anthropic-beta: recorded "tools-2024, caching-2024", received "tools-2024"' in first_only.json()["error"]["message"]


def test_unquoted_yaml_header_values_are_sent_and_matched_as_written(write_cassette, cassette_dir: Path) -> None:
    write_cassette("typed", """\
version: 2
interactions:
- id: 0
  request:
    url: https://api.openai.com/v1/files
    method: GET
    headers: {X-Mode: [0755]}
  response:
    code: 200
    headers: {Content-Type: [text/plain], x-should-retry: [false], x-reset: [12:30]}
    body: 12:30
""")
    settings = Settings(paths=(cassette_dir,), speed=0, match_headers=("x-mode",))
    [response] = call(settings, ("GET", "/v1/files", {"headers": {"x-mode": "0755"}}))
    assert response.status_code == 200
    assert (response.headers["x-should-retry"], response.headers["x-reset"], response.text) == ("false", "12:30", "12:30")
