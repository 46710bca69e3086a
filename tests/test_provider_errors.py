"""Provider-shaped error answers: which provider a request is for, and the body and headers each
kind of fault answers with. What the SDKs make of them is in test_faults_sdks.py."""

from __future__ import annotations

import json

import pytest

from server.replay.faults import parse_header
from server.replay.provider_errors import Provider, error_answer, provider_for

OPENAI = "https://api.openai.com/v1/chat/completions"
ANTHROPIC = "https://api.anthropic.com/v1/messages"
GEMINI = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"


@pytest.mark.parametrize("path, url, provider", [
    ("/v1/chat/completions", OPENAI, Provider.OPENAI),
    ("/v1/messages", ANTHROPIC, Provider.ANTHROPIC),
    ("/messages", ANTHROPIC, Provider.ANTHROPIC),  # a relaxed path: the recording's host decides
    ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", GEMINI, Provider.GEMINI),
    ("/v1/models/gemini-2.5-flash:generateContent", "http://127.0.0.1:9/x", Provider.GEMINI),
    ("/v1beta/openai/chat/completions", "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
     Provider.OPENAI),  # Gemini's OpenAI-compatible API answers in OpenAI's shape
    ("/v1/projects/p/locations/l/publishers/google/models/g:generateContent",
     "https://us-east5-aiplatform.googleapis.com/v1/projects/p", Provider.GEMINI),
    ("/v1/messages", "http://127.0.0.1:8999/v1/messages", Provider.ANTHROPIC),  # unknown host: the path
    ("/v1beta/models", "http://localhost/v1beta/models", Provider.GEMINI),
    ("/api/v1/chat/completions", "https://openrouter.ai/api/v1/chat/completions", Provider.OPENAI),
    ("/v1/embeddings", "http://127.0.0.1/v1/embeddings", Provider.OPENAI),
    ("/openai/v1/messages", "https://api.groq.com/openai/v1/messages", Provider.OPENAI),  # a known host wins
    ("/v1/messages", "https://api.openai.com/v1/messages", Provider.OPENAI),
])
def test_provider_for(path: str, url: str, provider: Provider) -> None:
    assert provider_for(path, url) is provider


def answer(spec: str, provider: Provider) -> tuple[int, dict[str, str], dict]:
    made = error_answer(parse_header(spec), provider, "f7")
    headers = {name.decode(): value.decode() for name, value in made.headers}
    assert headers["content-length"] == str(len(made.body))
    return made.status, headers, json.loads(made.body)


def test_openai_rate_limit() -> None:
    status, headers, body = answer("rate_limit; retry_after=2", Provider.OPENAI)
    assert status == 429
    assert body["error"]["type"] == "requests" and body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["param"] is None and "fault rule f7" in body["error"]["message"]
    assert headers["retry-after"] == "2" and headers["retry-after-ms"] == "2000"
    assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-reset-requests"] == "2s"
    assert headers["x-request-id"].startswith("req_") and headers["content-type"] == "application/json"


def test_a_fraction_of_a_second_goes_out_in_milliseconds() -> None:
    _, headers, _ = answer("rate_limit; retry_after=0.25", Provider.OPENAI)
    assert headers["retry-after-ms"] == "250" and headers["retry-after"] == "1"  # whole seconds, rounded up
    assert headers["x-ratelimit-reset-requests"] == "250ms"
    _, headers, _ = answer("rate_limit; retry_after=0.25", Provider.ANTHROPIC)
    assert headers["retry-after-ms"] == "250"
    _, headers, _ = answer("rate_limit; retry_after=3", Provider.ANTHROPIC)
    assert "retry-after-ms" not in headers and headers["retry-after"] == "3"


def test_openai_server_errors() -> None:
    for spec, status in (("server_error", 500), ("overloaded", 503), ("status; status=502", 502)):
        got, headers, body = answer(spec, Provider.OPENAI)
        assert got == status and body["error"]["type"] == "server_error" and body["error"]["code"] is None
        assert "retry-after" not in headers  # only when a delay is given


def test_anthropic_shapes() -> None:
    status, headers, body = answer("overloaded", Provider.ANTHROPIC)
    assert status == 529 and body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    assert body["request_id"] == headers["request-id"] and headers["x-should-retry"] == "true"
    status, headers, body = answer("rate_limit", Provider.ANTHROPIC)
    assert status == 429 and body["error"]["type"] == "rate_limit_error" and headers["retry-after"] == "1"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert answer("server_error", Provider.ANTHROPIC)[2]["error"]["type"] == "api_error"
    assert answer("status; status=404", Provider.ANTHROPIC)[2]["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("spec, status, name", [
    ("rate_limit", 429, "RESOURCE_EXHAUSTED"), ("server_error", 500, "INTERNAL"), ("overloaded", 503, "UNAVAILABLE"),
    ("status; status=400", 400, "INVALID_ARGUMENT"), ("status; status=403", 403, "PERMISSION_DENIED"),
    ("status; status=404", 404, "NOT_FOUND"), ("status; status=504", 504, "DEADLINE_EXCEEDED"),
    ("status; status=418", 418, "UNKNOWN"),
])
def test_gemini_status_names(spec: str, status: int, name: str) -> None:
    got, headers, body = answer(spec, Provider.GEMINI)
    assert got == status and body["error"]["code"] == status and body["error"]["status"] == name
    assert headers["content-type"].startswith("application/json")


def test_gemini_retry_info() -> None:
    _, headers, body = answer("rate_limit; retry_after=1.5", Provider.GEMINI)
    assert body["error"]["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]
    assert headers["retry-after"] == "2"
