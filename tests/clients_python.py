"""What each Python client of the matrix does against a base URL: one non-streamed and one
streamed answer, returned parsed. tests/test_clients.py runs these against the server on
tests/cassettes/clients; the same calls, sent once to a fake provider, are what those
cassettes recorded.

Every client asks "Say hi to NAME in Portuguese" and the recorded answer is
"Olá, NAME! Tudo bem?", streamed in five pieces.
"""

from __future__ import annotations

import os
from typing import Any

import anthropic
import httpx
import openai
from google import genai
from google.genai import types as genai_types

MAX_TOKENS = 256


def question(name: str) -> str:
    return f"Say hi to {name} in Portuguese"


def answer(name: str) -> str:
    return f"Olá, {name}! Tudo bem?"


def openai_chat(base_url: str, name: str = "openai-python") -> dict[str, Any]:
    """OpenAI chat completions; ``base_url`` is the client's, with ``/v1`` (or a provider's prefix)."""
    messages = [{"role": "user", "content": question(name)}]
    with openai.OpenAI(base_url=base_url, api_key="test", max_retries=0) as client:
        return _chat(client, messages)


def azure_chat(endpoint: str, name: str = "openai-python") -> dict[str, Any]:
    """The same conversation through AzureOpenAI: /openai/deployments/{d}/chat/completions?api-version=…"""
    messages = [{"role": "user", "content": question(name)}]
    with openai.AzureOpenAI(azure_endpoint=endpoint, azure_deployment="gpt-4o-mini", api_version="2024-10-21",
                            api_key="test", max_retries=0) as client:
        return _chat(client, messages)


def _chat(client: openai.OpenAI, messages: list[dict[str, Any]]) -> dict[str, Any]:
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=MAX_TOKENS)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=MAX_TOKENS,
                                                 stream=True, stream_options={"include_usage": True}))
    return {
        "text": completion.choices[0].message.content,
        "finish": completion.choices[0].finish_reason,
        "tokens": completion.usage.total_tokens,
        "deltas": [choice.delta.content for chunk in chunks for choice in chunk.choices if choice.delta.content],
        "stream_tokens": chunks[-1].usage.total_tokens,
    }


def openai_responses(base_url: str, name: str = "openai-python-responses") -> dict[str, Any]:
    with openai.OpenAI(base_url=base_url, api_key="test", max_retries=0) as client:
        response = client.responses.create(model="gpt-4o-mini", input=question(name), max_output_tokens=MAX_TOKENS)
        events = list(client.responses.create(model="gpt-4o-mini", input=question(name),
                                              max_output_tokens=MAX_TOKENS, stream=True))
    completed = [event for event in events if event.type == "response.completed"]
    return {
        "text": response.output_text,
        "tokens": response.usage.total_tokens,
        "deltas": [event.delta for event in events if event.type == "response.output_text.delta"],
        "stream_text": completed[0].response.output_text,
    }


def anthropic_messages(base_url: str, name: str = "anthropic-python") -> dict[str, Any]:
    """``base_url`` without ``/v1``, as ANTHROPIC_BASE_URL."""
    messages = [{"role": "user", "content": question(name)}]
    with anthropic.Anthropic(base_url=base_url, api_key="test", max_retries=0) as client:
        message = client.messages.create(model="claude-haiku-4-5", max_tokens=MAX_TOKENS, messages=messages)
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=MAX_TOKENS, messages=messages) as stream:
            deltas = list(stream.text_stream)
            final = stream.get_final_message()
    return {
        "text": message.content[0].text,
        "stop": message.stop_reason,
        "deltas": deltas,
        "stream_stop": final.stop_reason,
        "stream_tokens": final.usage.output_tokens,
    }


def gemini(base_url: str, api_version: str | None, name: str = "google-genai") -> dict[str, Any]:
    """``api_version`` None: the SDK's default (it reads the base URL from GOOGLE_GEMINI_BASE_URL)."""
    if api_version is None:
        os.environ["GOOGLE_GEMINI_BASE_URL"] = base_url
        options = genai_types.HttpOptions(retry_options=genai_types.HttpRetryOptions(attempts=1))
    else:
        options = genai_types.HttpOptions(base_url=base_url, api_version=api_version)
    try:
        with genai.Client(api_key="test", http_options=options) as client:
            response = client.models.generate_content(model="gemini-2.5-flash", contents=question(name))
            chunks = list(client.models.generate_content_stream(model="gemini-2.5-flash", contents=question(name)))
    finally:
        if api_version is None:
            del os.environ["GOOGLE_GEMINI_BASE_URL"]
    return {
        "text": response.text,
        "finish": response.candidates[0].finish_reason.value,
        "tokens": response.usage_metadata.total_token_count,
        "deltas": [chunk.text for chunk in chunks],
    }


def langchain_chat(base_url: str, name: str = "langchain-openai") -> dict[str, Any]:
    from langchain_openai import ChatOpenAI

    model = ChatOpenAI(model="gpt-4o-mini", base_url=base_url, api_key="test", max_retries=0, max_tokens=MAX_TOKENS,
                       http_client=httpx.Client(), stream_usage=True)
    message = model.invoke(question(name))
    chunks = list(model.stream(question(name)))
    return {
        "text": message.content,
        "tokens": message.usage_metadata["total_tokens"],
        "deltas": [chunk.content for chunk in chunks if chunk.content],
    }


def litellm_chat(base_url: str, name: str = "litellm") -> dict[str, Any]:
    """LiteLLM on its OpenAI route (``openai/<model>`` with ``api_base``)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the cost map online
    import litellm

    litellm.telemetry = False
    messages = [{"role": "user", "content": question(name)}]
    options = dict(model="openai/gpt-4o-mini", api_base=base_url, api_key="test", messages=messages,
                   max_tokens=MAX_TOKENS, num_retries=0)
    response = litellm.completion(**options)
    chunks = list(litellm.completion(**options, stream=True))
    return {
        "text": response.choices[0].message.content,
        "tokens": response.usage.total_tokens,
        "deltas": [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content],
    }
