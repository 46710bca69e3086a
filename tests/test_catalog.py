"""What listings show: provider, model, last user message, usage and unused interactions."""

from __future__ import annotations

import pytest

from server.catalog import last_user_message, model_of, provider_of, shorten, summarise, unused
from server.loader import load_paths
from server.matching.index import Exhausted, Index
from server.matching.keys import MatchRules

from .conftest import interaction


@pytest.mark.parametrize(("url", "provider"), [
    ("https://api.openai.com/v1/chat/completions", "openai"),
    ("https://my-team.openai.azure.com/openai/deployments/d/chat/completions", "azure-openai"),
    ("https://api.anthropic.com/v1/messages", "anthropic"),
    ("https://generativelanguage.googleapis.com/v1beta/models/m:generateContent", "gemini"),
    ("https://us-east5-aiplatform.googleapis.com/v1/projects/p/locations/l/publishers/google/models/m:rawPredict", "vertex-ai"),
    ("https://bedrock-runtime.us-east-1.amazonaws.com/model/m/invoke", "bedrock"),
    ("https://s3.amazonaws.com/bucket", "s3.amazonaws.com"),
    ("http://localhost:11434/api/chat", "localhost"),
])
def test_provider_from_the_recorded_host(url: str, provider: str) -> None:
    assert provider_of(url) == provider


def test_model_from_body_or_path() -> None:
    assert model_of({"model": "gpt-4o"}, "/v1/chat/completions") == "gpt-4o"
    assert model_of({}, "/v1beta/models/gemini-2.5-flash:streamGenerateContent") == "gemini-2.5-flash"
    assert model_of({}, "/model/us.anthropic.claude-v1:0/invoke") == "us.anthropic.claude-v1:0"
    assert model_of({}, "/v1/embeddings") is None


@pytest.mark.parametrize(("body", "message"), [
    ({"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
                   {"role": "user", "content": "second"}]}, "second"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url"}]}]}, "look [image_url]"),
    ({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]}, "[tool_result]"),
    ({"input": "plain"}, "plain"),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": "q"}]},
                {"type": "function_call", "name": "f"}, {"type": "function_call_output", "output": "1"}]}, "q"),
    ({"contents": [{"parts": [{"text": "hallo"}]}]}, "hallo"),
    ({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f"}}]}]}, "[functionResponse]"),
    ({"prompt": "once upon"}, "once upon"),
    ({"model": "m"}, None),
])
def test_last_user_message_across_providers(body: dict, message: str | None) -> None:
    assert last_user_message(body) == message


def test_shorten_collapses_whitespace_and_cuts() -> None:
    assert shorten("a\n  b", 10) == "a b"
    assert shorten("x" * 20, 10) == "x" * 9 + "…"


def test_summary_of_an_error_response_and_a_non_json_request(write_cassette, cassette_dir) -> None:
    write_cassette("c", interaction("plain text", code=429, duration="250ms", response_body="slow down", content_type="text/plain"))
    summary = summarise(load_paths([cassette_dir]).cassettes[0].interactions[0])
    assert (summary.model, summary.last_user_message, summary.stream, summary.events) == (None, None, False, None)
    assert (summary.status, summary.content_type, summary.duration) == (429, "text/plain", 0.25)


def test_unused_per_session_and_cassette(write_cassette, cassette_dir) -> None:
    write_cassette("a", interaction('{"n":1}'), interaction('{"n":2}'))
    write_cassette("b", interaction('{"n":3}'))
    rules = MatchRules()
    index = Index(load_paths([cassette_dir]).cassettes, rules, Exhausted.REPEAT_LAST)
    index.take(rules.key("POST", "/v1/chat/completions", "", {}.get, b'{"n":2}'), session="s")
    labels = lambda found: [i.label for i in found]  # noqa: E731
    usage = index.usage()
    assert labels(unused(index, usage)) == ["a#0", "b#0"]
    assert labels(unused(index, usage, session="other")) == ["a#0", "a#1", "b#0"]
    assert labels(unused(index, usage, cassette="b")) == ["b#0"]
