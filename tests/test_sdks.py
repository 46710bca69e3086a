"""The official SDKs, unchanged, against a live server on the bundled cassettes."""

from __future__ import annotations

import asyncio
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

from .conftest import BUNDLED, live_server

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "strict": False,
        "description": "Get weather information for a location",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "the city"}},
            "required": ["location"],
        },
    },
}
SYSTEM = {"role": "system", "content": "You are a helpful assistant"}
QUESTION = {"role": "user", "content": "What's the weather in Florence,Italy?"}
SEED_OPTIONS = dict(model="gpt-4o-mini", max_tokens=4000, stream=True, stream_options={"include_usage": True},
                    tool_choice="auto", tools=[WEATHER_TOOL])


def tool_result_messages(call_id: str, arguments: str) -> list[dict]:
    return [
        SYSTEM,
        QUESTION,
        {"role": "assistant", "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "weather", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": call_id, "content": "40 C"},
    ]


def collect_tool_call(chunks) -> tuple[str, str, str, int]:
    call_id = name = arguments = ""
    count = 0
    for chunk in chunks:
        count += 1
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                call_id = call.id or call_id
                name = call.function.name or name
                arguments += call.function.arguments or ""
    return call_id, name, arguments, count


def collect_text(chunks) -> str:
    return "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)


@pytest.fixture
def openai_client(bundled_server: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{bundled_server}/v1", api_key="test", max_retries=0) as client:
        yield client


@pytest.fixture
def anthropic_client(bundled_server: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=bundled_server, api_key="test", max_retries=0) as client:
        yield client


def test_openai_seed_conversation_at_recorded_speed() -> None:
    """Streaming tool call, then the answer, with the recorded timing (2.46 s + 0.49 s)."""
    with live_server(Settings(paths=(BUNDLED,), speed=1)) as (url, _), \
            openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0) as client:
        start = time.monotonic()
        arrivals: list[float] = []
        stream = client.chat.completions.create(messages=[SYSTEM, QUESTION], **SEED_OPTIONS)
        call_id, name, arguments, count = collect_tool_call(c for c in stream if not arrivals.append(time.monotonic() - start))
        assert (call_id, name, arguments) == ("call_XErNUDi099mgWToFoqmibkKR", "weather", '{"location":"Florence, Italy"}')
        assert count == 11  # every recorded chunk; the SDK consumes [DONE]
        assert arrivals[0] >= 2.459  # headers (so the first chunk) not before the recorded duration
        assert arrivals[-1] >= 2.459 + 0.02 * 10  # spread out: chunk n not before n × the event interval

        start = time.monotonic()
        answer = collect_text(client.chat.completions.create(messages=tool_result_messages(call_id, arguments), **SEED_OPTIONS))
        assert time.monotonic() - start >= 0.488
        assert answer == "The current weather in Florence, Italy, is 40°C."


def test_openai_seed_conversation_speed_zero_is_fast() -> None:
    with live_server(Settings(paths=(BUNDLED,), speed=0)) as (url, _), \
            openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0) as client:
        start = time.monotonic()
        call_id, _, arguments, _ = collect_tool_call(client.chat.completions.create(messages=[SYSTEM, QUESTION], **SEED_OPTIONS))
        answer = collect_text(client.chat.completions.create(messages=tool_result_messages(call_id, arguments), **SEED_OPTIONS))
        assert answer.endswith("is 40°C.")
        assert time.monotonic() - start < 2.5  # recorded: 2.95 s before any event pacing


def test_openai_async_seed_conversation(bundled_server: str) -> None:
    async def conversation() -> str:
        async with openai.AsyncOpenAI(base_url=f"{bundled_server}/v1", api_key="test", max_retries=0,
                                      default_headers={"X-Cassette-Session": "async"}) as client:
            call_id = arguments = ""
            async for chunk in await client.chat.completions.create(messages=[SYSTEM, QUESTION], **SEED_OPTIONS):
                for choice in chunk.choices:
                    for call in choice.delta.tool_calls or []:
                        call_id = call.id or call_id
                        arguments += call.function.arguments or ""
            text = ""
            async for chunk in await client.chat.completions.create(messages=tool_result_messages(call_id, arguments), **SEED_OPTIONS):
                text += "".join(choice.delta.content or "" for choice in chunk.choices)
            return text

    assert asyncio.run(conversation()) == "The current weather in Florence, Italy, is 40°C."


def test_openai_non_streaming(openai_client: openai.OpenAI) -> None:
    completion = openai_client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Write a haiku about cassette tapes."}])
    assert completion.choices[0].message.content.startswith("Magnetic ribbon,")
    assert completion.usage.total_tokens == 34


def test_openai_scoped_base_url(bundled_server: str) -> None:
    with openai.OpenAI(base_url=f"{bundled_server}/__cassette/weather/v1", api_key="test", max_retries=0) as client:
        _, name, _, _ = collect_tool_call(client.chat.completions.create(messages=[SYSTEM, QUESTION], **SEED_OPTIONS))
    assert name == "weather"


def test_recorded_error_reaches_the_sdk_as_recorded(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        openai_client.chat.completions.create(model="gpt-5-turbo", messages=[{"role": "user", "content": "Hello"}])
    assert raised.value.code == "model_not_found"


def test_openai_miss_is_not_found_with_the_diff_and_no_retry(bundled_server: str) -> None:
    sent: list[httpx.Request] = []
    with httpx.Client(event_hooks={"request": [sent.append]}) as http_client, \
            openai.OpenAI(base_url=f"{bundled_server}/v1", api_key="test", http_client=http_client) as client:  # retries on
        with pytest.raises(openai.NotFoundError) as raised:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Write a haiku about cassette players."}])
    assert len(sent) == 1
    message = str(raised.value)
    assert "openai/haiku#0" in message
    assert "messages[0].content" in message and "cassette players" in message
    assert raised.value.code == "cassette_miss"


def test_anthropic_streaming(anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.stream(model="claude-haiku-4-5", max_tokens=256,
                                messages=[{"role": "user", "content": "Say hi in Portuguese"}]) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert deltas == ["Olá!", " Tudo bem?"]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 9


def test_anthropic_multi_turn(anthropic_client: anthropic.Anthropic) -> None:
    messages: list[dict] = []
    replies = []
    for question in ["My name is Ada. Please remember it.", "What is my name?", "Spell it backwards."]:
        messages.append({"role": "user", "content": question})
        reply = anthropic_client.messages.create(model="claude-haiku-4-5", max_tokens=256, messages=messages).content[0].text
        messages.append({"role": "assistant", "content": reply})
        replies.append(reply)
    assert replies[1] == "Your name is Ada." and '"adA"' in replies[2]


def test_anthropic_miss_is_not_found_without_retry(bundled_server: str) -> None:
    sent: list[httpx2.Request] = []
    with httpx2.Client(event_hooks={"request": [sent.append]}) as http_client, \
            anthropic.Anthropic(base_url=bundled_server, api_key="test", http_client=http_client) as client:  # retries on
        with pytest.raises(anthropic.NotFoundError) as raised:
            client.messages.create(model="claude-haiku-4-5", max_tokens=256,
                                   messages=[{"role": "user", "content": "Say hi in Italian"}])
    assert len(sent) == 1
    assert "messages[0].content" in str(raised.value) and "Italian" in str(raised.value)


def test_gemini_streaming(bundled_server: str) -> None:
    options = genai_types.HttpOptions(base_url=bundled_server, api_version="v1beta")
    with genai.Client(api_key="test", http_options=options) as client:
        chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Say hi in Portuguese"))
    assert [chunk.text for chunk in chunks] == ["Olá", "! Tudo bem?"]
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP


def test_gemini_miss_is_a_client_error_with_the_diff_and_no_retry(bundled_server: str) -> None:
    sent: list[httpx2.Request] = []
    with httpx2.Client(event_hooks={"request": [sent.append]}) as http_client:
        options = genai_types.HttpOptions(base_url=bundled_server, api_version="v1beta", httpx_client=http_client)
        with genai.Client(api_key="test", http_options=options) as client, pytest.raises(genai.errors.ClientError) as raised:
            list(client.models.generate_content_stream(model="gemini-2.5-flash", contents="Say hi in Spanish"))
    assert len(sent) == 1  # the default retry policy does not retry it
    assert raised.value.code == 404 and raised.value.status == "NOT_FOUND"
    assert "contents[0].parts[0].text" in raised.value.message
