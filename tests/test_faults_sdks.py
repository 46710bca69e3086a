"""Faults through the official SDKs, unchanged, against a live server on the bundled cassettes:
each raises its own typed exception, retries as it does in production, and gets the recorded
answer on the retry."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import httpx
import httpx2
import openai
import pytest
from google import genai
from google.genai import types as genai_types

from server import Settings

from .conftest import BUNDLED, go_vcr, interaction, live_server
from .test_sdks import QUESTION, SEED_OPTIONS, SYSTEM, collect_text

HAIKU = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "Write a haiku about cassette tapes."}])
HAIKU_TEXT = "Magnetic ribbon,"
PORTUGUESE = dict(model="claude-haiku-4-5", max_tokens=256, messages=[{"role": "user", "content": "Say hi in Portuguese"}])
# (the bundled anthropic/hello-streaming recording is streamed: messages.create(stream=True) or messages.stream)
# An Anthropic stream without `ping` events (the SDK skips those), so events sent = events seen.
COUNTING = dict(model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "Count to four"}],
                stream=True)
ANTHROPIC_EVENTS = [
    ("message_start", '{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
                      '"model":"claude-haiku-4-5","content":[],"stop_reason":null,"stop_sequence":null,'
                      '"usage":{"input_tokens":5,"output_tokens":1}}}'),
    ("content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'),
    *[("content_block_delta", f'{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{n} "}}}}')
      for n in range(1, 5)],
    ("content_block_stop", '{"type":"content_block_stop","index":0}'),
    ("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
                      '"usage":{"output_tokens":8}}'),
    ("message_stop", '{"type":"message_stop"}'),
]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    extra = tmp_path_factory.mktemp("faults-cassettes")
    stream = "".join(f"event: {name}\ndata: {data}\n\n" for name, data in ANTHROPIC_EVENTS)
    body = '{"max_tokens":64,"messages":[{"role":"user","content":"Count to four"}],"model":"claude-haiku-4-5","stream":true}'
    (extra / "counting.yaml").write_text(go_vcr(interaction(
        body, url="https://api.anthropic.com/v1/messages", response_body=stream, content_type="text/event-stream")))
    with live_server(Settings(paths=(BUNDLED, extra), speed=0)) as (url, _):
        yield url


@pytest.fixture
def url(server_url: str) -> Iterator[str]:
    """The module's server, with no fault rule and every sequence rewound after each test."""
    yield server_url
    httpx.post(server_url + "/__admin/reset").raise_for_status()


def add(url: str, **rule) -> dict:
    response = httpx.post(url + "/__admin/faults", json=rule)
    assert response.status_code == 201, response.text
    return response.json()


def rules(url: str) -> list[dict]:
    return httpx.get(url + "/__admin/faults").json()


def openai_client(url: str, *, max_retries: int, sent: list | None = None, **options) -> openai.OpenAI:
    hooks = {"request": [sent.append]} if sent is not None else {}
    return openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=max_retries,
                         http_client=httpx2.Client(event_hooks=hooks, **options))


# --- OpenAI -----------------------------------------------------------------------------------


def test_openai_retries_a_rate_limit_once_and_gets_the_recorded_answer(url: str) -> None:
    add(url, kind="rate_limit", times=1, retry_after=0.3)
    sent: list = []
    with openai_client(url, max_retries=2, sent=sent) as client:
        start = time.monotonic()
        completion = client.chat.completions.create(**HAIKU)
    assert completion.choices[0].message.content.startswith(HAIKU_TEXT)
    assert len(sent) == 2 and time.monotonic() - start >= 0.3  # it waited as Retry-After said
    assert rules(url)[0]["fired"] == 1


def test_openai_without_retries_raises_rate_limit_error_carrying_retry_after(url: str) -> None:
    rule = add(url, kind="rate_limit")
    with openai_client(url, max_retries=0) as client, pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(**HAIKU)
    error = raised.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded" and error.type == "requests"
    assert error.response.headers["retry-after"] == "1" and error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert f"fault rule {rule['id']}" in error.message


@pytest.mark.parametrize("rule, exception, status", [
    ({"kind": "server_error"}, openai.InternalServerError, 500),
    ({"kind": "overloaded"}, openai.InternalServerError, 503),
    ({"kind": "status", "status": 401}, openai.AuthenticationError, 401),
    ({"kind": "status", "status": 418}, openai.APIStatusError, 418),
])
def test_openai_typed_errors(url: str, rule: dict, exception: type, status: int) -> None:
    add(url, **rule)
    with openai_client(url, max_retries=0) as client, pytest.raises(exception) as raised:
        client.chat.completions.create(**HAIKU)
    assert raised.value.status_code == status


def test_openai_stream_cut_after_three_events(url: str) -> None:
    add(url, kind="cut_stream", after_events=3, times=1)
    chunks = []
    with openai_client(url, max_retries=2) as client:  # a stream that broke is not retried
        stream = client.chat.completions.create(messages=[SYSTEM, QUESTION], **SEED_OPTIONS)
        with pytest.raises(openai.APIConnectionError):
            for chunk in stream:
                chunks.append(chunk)
    assert len(chunks) == 3 and chunks[0].choices[0].delta.tool_calls[0].function.name == "weather"
    with openai_client(url, max_retries=0) as client:  # the cut did not use the recording up: asked again, it comes whole
        assert len(list(client.chat.completions.create(messages=[SYSTEM, QUESTION], **SEED_OPTIONS))) == 11


def test_openai_disconnect_is_a_connection_error_and_retried(url: str) -> None:
    add(url, kind="disconnect", times=1)
    with openai_client(url, max_retries=0) as client, pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(**HAIKU)
    add(url, kind="disconnect", times=1)
    sent: list = []
    with openai_client(url, max_retries=2, sent=sent) as client:
        assert client.chat.completions.create(**HAIKU).choices[0].message.content.startswith(HAIKU_TEXT)
    assert len(sent) == 2


def test_openai_read_timeout_on_a_stall_then_the_retry_gets_the_answer(url: str) -> None:
    add(url, kind="stall", seconds=3, times=1)
    sent: list = []
    with openai_client(url, max_retries=1, sent=sent, timeout=httpx2.Timeout(5, read=0.3)) as client:
        assert client.chat.completions.create(**HAIKU).choices[0].message.content.startswith(HAIKU_TEXT)
    assert len(sent) == 2
    with openai_client(url, max_retries=0, timeout=httpx2.Timeout(5, read=0.3)) as client:
        add(url, kind="stall", seconds=3, times=1)
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(**HAIKU)


def outcomes(url: str, seed: int, count: int = 24) -> list[bool]:
    """Which of ``count`` identical requests a probability rule with ``seed`` fired on."""
    httpx.post(url + "/__admin/reset").raise_for_status()
    add(url, kind="server_error", probability=0.5, seed=seed)
    fired = []
    with openai_client(url, max_retries=0) as client:
        for _ in range(count):
            try:
                client.chat.completions.create(**HAIKU)
                fired.append(False)
            except openai.InternalServerError:
                fired.append(True)
    return fired


def test_a_seeded_probability_fires_on_the_same_requests_on_every_run(url: str) -> None:
    first = outcomes(url, seed=42)
    assert outcomes(url, seed=42) == first
    assert 0 < sum(first) < len(first)
    assert outcomes(url, seed=43) != first


# --- Anthropic --------------------------------------------------------------------------------


def test_anthropic_overloaded_raises_its_529_error(url: str) -> None:
    add(url, kind="overloaded")
    with anthropic.Anthropic(base_url=url, api_key="test", max_retries=0) as client:
        with pytest.raises(anthropic.APIStatusError) as raised:
            client.messages.create(**PORTUGUESE, stream=True)
    error = raised.value
    assert isinstance(error, anthropic.OverloadedError) and isinstance(error, anthropic.InternalServerError)
    assert error.status_code == 529 and error.type == "overloaded_error"
    assert error.request_id == error.response.headers["request-id"]


def test_anthropic_retries_an_overload_and_gets_the_recorded_answer(url: str) -> None:
    add(url, kind="overloaded", times=2, retry_after=0.1)
    sent: list = []
    with httpx2.Client(event_hooks={"request": [sent.append]}) as http, \
            anthropic.Anthropic(base_url=url, api_key="test", max_retries=2, http_client=http) as client:
        with client.messages.stream(**PORTUGUESE) as stream:
            assert list(stream.text_stream) == ["Olá!", " Tudo bem?"]
    assert len(sent) == 3


@pytest.mark.parametrize("status, exception", [(404, anthropic.NotFoundError), (418, anthropic.APIStatusError)])
def test_anthropic_typed_errors(url: str, status: int, exception: type) -> None:
    add(url, kind="status", status=status)
    with anthropic.Anthropic(base_url=url, api_key="test", max_retries=0) as client, pytest.raises(exception) as raised:
        client.messages.create(**PORTUGUESE, stream=True)
    assert raised.value.status_code == status


def test_anthropic_rate_limit(url: str) -> None:
    add(url, kind="rate_limit", retry_after=7)
    with anthropic.Anthropic(base_url=url, api_key="test", max_retries=0) as client:
        with pytest.raises(anthropic.RateLimitError) as raised:
            client.messages.create(**PORTUGUESE, stream=True)
    assert raised.value.type == "rate_limit_error" and raised.value.response.headers["retry-after"] == "7"
    assert raised.value.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_anthropic_stream_cut_after_three_events(url: str) -> None:
    add(url, kind="cut_stream", after_events=3, cassette="counting")
    events = []
    with anthropic.Anthropic(base_url=url, api_key="test") as client:  # retries on: a broken stream is not retried
        # anthropic 2.x lets the transport's error out of its stream iterator unwrapped (openai wraps it)
        with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
            for event in client.messages.create(**COUNTING):
                events.append(event.type)
    assert events == ["message_start", "content_block_start", "content_block_delta"]


# --- Gemini -----------------------------------------------------------------------------------


def gemini(url: str, retry: genai_types.HttpRetryOptions | None = None) -> genai.Client:
    return genai.Client(api_key="test", http_options=genai_types.HttpOptions(
        base_url=url, api_version="v1beta", retry_options=retry))


def test_gemini_sees_its_429_shape(url: str) -> None:
    rule = add(url, kind="rate_limit")
    with gemini(url) as client, pytest.raises(genai.errors.ClientError) as raised:
        list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Say hi in Portuguese"))
    error = raised.value
    assert error.code == 429 and error.status == "RESOURCE_EXHAUSTED" and f"fault rule {rule['id']}" in error.message
    assert error.details["error"]["details"][0]["retryDelay"] == "1s"


def test_gemini_overloaded_is_a_server_error(url: str) -> None:
    add(url, kind="overloaded")
    with gemini(url) as client, pytest.raises(genai.errors.ServerError) as raised:
        list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Say hi in Portuguese"))
    assert raised.value.code == 503 and raised.value.status == "UNAVAILABLE"


def test_gemini_with_retries_gets_the_recorded_answer(url: str) -> None:
    add(url, kind="rate_limit", times=1)
    retry = genai_types.HttpRetryOptions(attempts=2, initial_delay=0.05, max_delay=0.1, jitter=0)
    with gemini(url, retry) as client:
        chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Say hi in Portuguese"))
    assert [chunk.text for chunk in chunks] == ["Olá", "! Tudo bem?"]


def test_the_journal_shows_each_fault_beside_its_request(url: str) -> None:
    rule = add(url, kind="rate_limit", times=1, retry_after=0.05)
    with openai_client(url, max_retries=1) as client:
        assert collect_text(client.chat.completions.create(messages=[SYSTEM, QUESTION], **SEED_OPTIONS)) == ""
    entries = httpx.get(url + "/__admin/requests").json()
    assert [(e["interaction"], e["status"], e["outcome"], e["fault"]) for e in entries] == [
        ("weather#0", 200, "complete", None),
        ("weather#0", 429, "replaced_by_fault", {"kind": "rate_limit", "rule": rule["id"]}),
    ]


# --- what the rest of the kinds raise ---------------------------------------------------------


def test_openai_truncated_body_and_delay(url: str) -> None:
    truncated = openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0,
                              default_headers={"X-Replay-Fault": "truncate; after_bytes=20"})
    with truncated, pytest.raises(openai.APIConnectionError):
        truncated.chat.completions.create(**HAIKU)
    delayed = openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0, timeout=httpx2.Timeout(5, read=0.3),
                            default_headers={"X-Replay-Fault": "delay; seconds=2"})
    with delayed, pytest.raises(openai.APITimeoutError):
        delayed.chat.completions.create(**HAIKU)


def test_anthropic_disconnect(url: str) -> None:
    with anthropic.Anthropic(base_url=url, api_key="test", max_retries=0,
                             default_headers={"X-Replay-Fault": "disconnect"}) as client:
        with pytest.raises(anthropic.APIConnectionError):
            client.messages.create(**PORTUGUESE, stream=True)


@pytest.mark.parametrize("spec, words", [
    ("disconnect", "Server disconnected without sending a response"),
    ("cut_stream; after_events=1", "incomplete chunked read"),
])
def test_gemini_connection_faults_reach_it_as_httpx_errors(url: str, spec: str, words: str) -> None:
    options = genai_types.HttpOptions(base_url=url, api_version="v1beta", headers={"X-Replay-Fault": spec})
    received = []
    with genai.Client(api_key="test", http_options=options) as client, \
            pytest.raises(httpx2.RemoteProtocolError, match=words):
        for chunk in client.models.generate_content_stream(model="gemini-2.5-flash", contents="Say hi in Portuguese"):
            received.append(chunk.text)
    assert received == (["Olá"] if spec.startswith("cut_stream") else [])
