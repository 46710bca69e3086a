"""Which upstream a recorded request goes to: routes given with --upstream, then the providers."""

from __future__ import annotations

import pytest

from server.record.upstreams import ANTHROPIC, GEMINI, OPENAI, Upstreams, parse_route


def no_headers(_: str) -> str | None:
    return None


@pytest.mark.parametrize(("path", "expected"), [
    ("/v1/chat/completions", OPENAI),
    ("/v1/responses", OPENAI),
    ("/v1/embeddings", OPENAI),
    ("/v1/models", OPENAI),  # OpenAI's model list
    ("/v1/messages", ANTHROPIC),
    ("/v1/messages/count_tokens", ANTHROPIC),
    ("/v1beta/models/gemini-2.5-flash:generateContent", GEMINI),
    ("/v1/models/gemini-2.5-flash:streamGenerateContent", GEMINI),
    ("/v1alpha/models", GEMINI),
    ("/nothing/known", None),
])
def test_the_provider_is_chosen_from_the_path(path: str, expected: str | None) -> None:
    assert Upstreams(()).origin_for(path, no_headers) == expected


def test_provider_headers_decide_paths_that_several_providers_have() -> None:
    anthropic = {"anthropic-version": "2023-06-01"}
    gemini = {"x-goog-api-key": "k"}
    assert Upstreams(()).origin_for("/v1/models", anthropic.get) == ANTHROPIC
    assert Upstreams(()).origin_for("/v1/models", gemini.get) == GEMINI


def test_routes_come_first_longest_prefix_winning() -> None:
    upstreams = Upstreams((parse_route("http://127.0.0.1:11434"), parse_route("/v1/messages=http://anthropic.test"),
                           parse_route("/v1/messages/batches=http://batches.test:8000/")))
    assert upstreams.origin_for("/v1/messages", no_headers) == "http://anthropic.test"
    assert upstreams.origin_for("/v1/messages/batches/x", no_headers) == "http://batches.test:8000"
    assert upstreams.origin_for("/v1/messagesX", no_headers) == "http://127.0.0.1:11434"
    assert upstreams.origin_for("/anything", no_headers) == "http://127.0.0.1:11434"


def test_prefix_routes_alone_leave_the_rest_to_the_providers() -> None:
    upstreams = Upstreams((parse_route("/v1/chat=http://local.test"),))
    assert upstreams.origin_for("/v1/chat/completions", no_headers) == "http://local.test"
    assert upstreams.origin_for("/v1/messages", no_headers) == ANTHROPIC


@pytest.mark.parametrize("spec", ["api.openai.com", "ftp://x", "https://api.openai.com/v1", "https://x?y=1",
                                  "v1=https://x", "https://host:99999"])
def test_bad_upstreams_are_refused_saying_what_is_expected(spec: str) -> None:
    with pytest.raises(ValueError, match="(?i)upstream|route|port"):
        parse_route(spec)
