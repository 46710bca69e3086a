"""Helpers of the recording tests: a client transport that keeps what arrived and when, the
official SDK calls that are recorded and replayed, and a recording server on a stand-in."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import anthropic
import httpx
import httpx2
import openai
from google import genai
from google.genai import types as genai_types

from server import Settings
from server.app import CassetteServerApp
from server.framing import split_sse
from server.record import RecordMode
from server.record.timing import event_offsets
from server.record.upstreams import parse_route

from .conftest import live_server, running
from .standin import StandIn


@dataclass
class Arrival:
    """One response as a client received it: raw bytes, with the monotonic time of each chunk."""

    path: str
    started: float  # the request was handed to the connection
    headers: float  # the response headers were in
    chunks: list[tuple[float, bytes]] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)

    def event_times(self) -> tuple[float, ...]:
        """For each SSE event, seconds from the headers to the chunk that completed it."""
        pieces = split_sse(self.body)
        ns = [(len(chunk), int(at * 1e9)) for at, chunk in self.chunks]
        return event_offsets(pieces, ns, int(self.headers * 1e9))


def capture_transport(http: ModuleType) -> Any:
    """A real HTTP transport of ``http`` (httpx, or httpx2 which the openai and anthropic SDKs
    use) that keeps every response's raw bytes and their arrival times; SDKs read through it
    as usual."""

    class Capture(http.BaseTransport):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self.inner = http.HTTPTransport()
            self.arrivals: list[Arrival] = []

        def handle_request(self, request: Any) -> Any:
            started = time.monotonic()
            response = self.inner.handle_request(request)
            arrival = Arrival(request.url.path, started, time.monotonic())
            self.arrivals.append(arrival)
            stream = response.stream

            class Tee(http.SyncByteStream):  # type: ignore[misc, name-defined]
                def __iter__(self) -> Iterator[bytes]:
                    for chunk in stream:
                        arrival.chunks.append((time.monotonic(), chunk))
                        yield chunk

                def close(self) -> None:
                    stream.close()

            return http.Response(response.status_code, headers=response.headers, stream=Tee(),
                                 extensions=response.extensions)

        def close(self) -> None:
            self.inner.close()

    return Capture()


# The official SDK calls that are recorded and replayed; each returns what the SDK parsed.
def openai_chat(base: str, key: str, client: httpx2.Client) -> Any:
    with openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, http_client=client) as sdk:
        return sdk.chat.completions.create(model="gpt-standin", messages=[{"role": "user", "content": "chat"}]
                                           ).choices[0].message.content


def openai_chat_stream(base: str, key: str, client: httpx2.Client) -> Any:
    with openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, http_client=client) as sdk:
        chunks = sdk.chat.completions.create(model="gpt-standin", stream=True,
                                             messages=[{"role": "user", "content": "chat stream"}])
        return [choice.delta.content for chunk in chunks for choice in chunk.choices]


def anthropic_message(base: str, key: str, client: httpx2.Client) -> Any:
    with anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, http_client=client) as sdk:
        message = sdk.messages.create(model="claude-standin", max_tokens=64,
                                      messages=[{"role": "user", "content": "message"}])
        return message.content[0].text


def anthropic_message_stream(base: str, key: str, client: httpx2.Client) -> Any:
    with anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, http_client=client) as sdk:
        with sdk.messages.stream(model="claude-standin", max_tokens=64,
                                 messages=[{"role": "user", "content": "message stream"}]) as stream:
            return list(stream.text_stream)


def _gemini(base: str, key: str, client: httpx.Client) -> genai.Client:
    options = genai_types.HttpOptions(base_url=base, api_version="v1beta", httpx_client=client,
                                      retry_options=genai_types.HttpRetryOptions(attempts=1))
    return genai.Client(api_key=key, http_options=options)


def gemini_generate(base: str, key: str, client: httpx.Client) -> Any:
    with _gemini(base, key, client) as sdk:
        return sdk.models.generate_content(model="gemini-standin", contents="generate").text


def gemini_generate_stream(base: str, key: str, client: httpx.Client) -> Any:
    with _gemini(base, key, client) as sdk:
        return [chunk.text for chunk in sdk.models.generate_content_stream(model="gemini-standin",
                                                                            contents="generate stream")]


SDK_CALLS: dict[str, Callable[[str, str, Any], Any]] = {
    "openai": openai_chat,
    "openai-stream": openai_chat_stream,
    "anthropic": anthropic_message,
    "anthropic-stream": anthropic_message_stream,
    "gemini": gemini_generate,
    "gemini-stream": gemini_generate_stream,
}
STREAMED = ("openai-stream", "anthropic-stream", "gemini-stream")


def sdk_call(name: str, base: str, key: str) -> tuple[Any, Arrival]:
    """Run one SDK call through a capturing transport: (what the SDK parsed, what arrived)."""
    http = httpx if name.startswith("gemini") else httpx2  # google-genai is on httpx, the others on httpx2
    capture = capture_transport(http)
    with http.Client(transport=capture, timeout=30) as client:
        parsed = SDK_CALLS[name](base, key, client)
    [arrival] = capture.arrivals
    return parsed, arrival


@contextmanager
def recording(standin: StandIn, out: Path, *, paths: tuple[Path, ...] = (), record: RecordMode = RecordMode.ALL,
              upstream: str | None = None, **options: Any) -> Iterator[tuple[str, CassetteServerApp, str]]:
    """A recording server (``record`` mode by default) whose upstream is ``standin`` (started
    here, unless it runs at ``upstream`` already), writing to ``out``: (its URL, its app, the
    stand-in's URL)."""
    with ExitStack() as stack:
        if upstream is None:
            upstream = stack.enter_context(running(standin.app()))
        settings = Settings(paths=paths or (out,), out=out, record=record, upstream=(parse_route(upstream),),
                            **options)
        url, app = stack.enter_context(live_server(settings))
        yield url, app, upstream
