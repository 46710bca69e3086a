"""A stand-in provider for the recording tests: it answers like OpenAI, Anthropic and Gemini,
on 127.0.0.1, so recording is tested with the official SDKs and no network.

Like the real ones it requires a key (OpenAI: a bearer token; Anthropic: ``x-api-key``, which
newer SDKs send as a bearer token; Gemini: ``x-goog-api-key`` or ``key=``), sets a cookie and names the account in its headers; it
compresses JSON answers with gzip when the client accepts it, waits HEADER_DELAY before its
headers and streams events GAP seconds apart. It counts the requests it gets. A model whose
name starts with ``cut`` gets a stream that stops half-way without its end; ``slow`` streams
take SLOW_GAP between events.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

KEY = "sk-standin-4f2a9c0b7d1e3a5c9e8f7a6b"  # what the clients send; must never reach a cassette
COOKIE = "standin-session=c00k1e-7f3e2d1c0b9a"
ORGANIZATION = "org-standin-b7d1e3a5"
HEADER_DELAY = 0.2  # seconds before the response headers
GAP = 0.2  # seconds between streamed events
SLOW_GAP = 0.4
EVENTS = 5  # text deltas per stream


def answer(question: str) -> str:
    return f"Olá! You asked: {question}"


def pieces(text: str) -> list[str]:
    """The answer cut into EVENTS deltas."""
    step = -(-len(text) // EVENTS)
    return [text[i:i + step] for i in range(0, len(text), step)]


@dataclass
class StandIn:
    """The app and what it saw."""

    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path with query)
    sent: list[bytes] = field(default_factory=list)  # each answer's body, uncompressed, in order
    headers: list[list[tuple[bytes, bytes]]] = field(default_factory=list)  # each request's raw headers

    def count(self, path: str) -> int:
        return sum(1 for _, seen in self.requests if seen.split("?")[0] == path)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/chat/completions", self.openai, methods=["POST"]),
            Route("/v1/messages", self.anthropic, methods=["POST"]),
            Route("/v1beta/models/{rest:path}", self.gemini, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/files/{file}/content", self.file_content, methods=["GET"]),
        ])

    async def _admit(self, request: Request, given_key: str | None, error: dict[str, Any]) -> Response | None:
        self.requests.append((request.method, request.url.path + (f"?{request.url.query}" if request.url.query else "")))
        self.headers.append(request.headers.raw)
        await asyncio.sleep(HEADER_DELAY)
        if given_key != KEY:
            return self._json(request, error, status=401)
        return None

    def _json(self, request: Request, data: dict[str, Any], status: int = 200) -> Response:
        body = json.dumps(data).encode()
        self.sent.append(body)
        headers = _account_headers()
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["content-encoding"] = "gzip"
            body = gzip.compress(body)
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    def _stream(self, events: list[bytes], model: str) -> StreamingResponse:
        self.sent.append(b"".join(events))
        gap = SLOW_GAP if model.startswith("slow") else GAP
        cut = model.startswith("cut")

        async def send() -> AsyncIterator[bytes]:
            for number, event in enumerate(events):
                if number:
                    await asyncio.sleep(gap)
                if cut and number == len(events) // 2:
                    raise ConnectionAbortedError("the stand-in cuts this stream on purpose")
                yield event

        return StreamingResponse(send(), media_type="text/event-stream", headers=_account_headers())

    async def openai(self, request: Request) -> Response:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        refused = await self._admit(request, key, {"error": {"message": "Incorrect API key provided", "type":
                                                            "invalid_request_error", "code": "invalid_api_key"}})
        if refused:
            return refused
        payload = await request.json()
        text = answer(payload["messages"][-1]["content"])
        model = payload["model"]
        base = {"id": "chatcmpl-standin", "created": 1_700_000_000, "model": model}
        if not payload.get("stream"):
            return self._json(request, {**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}})
        chunk = {**base, "object": "chat.completion.chunk"}
        events = [_data({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})]
        events += [_data({**chunk, "choices": [{"index": 0, "delta": {"content": piece}}]}) for piece in pieces(text)]
        events.append(_data({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        events.append(b"data: [DONE]\n\n")
        return self._stream(events, model)

    async def anthropic(self, request: Request) -> Response:
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        refused = await self._admit(request, key, {
            "type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        if refused:
            return refused
        payload = await request.json()
        text = answer(payload["messages"][-1]["content"])
        model = payload["model"]
        message = {"id": "msg_standin", "type": "message", "role": "assistant", "model": model,
                   "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 9, "output_tokens": 1}}
        if not payload.get("stream"):
            return self._json(request, {**message, "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                                        "usage": {"input_tokens": 9, "output_tokens": 12}})
        events = [_event("message_start", {"type": "message_start", "message": {**message, "content": []}}),
                  _event("content_block_start", {"type": "content_block_start", "index": 0,
                                                 "content_block": {"type": "text", "text": ""}})]
        events += [_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                  "delta": {"type": "text_delta", "text": piece}}) for piece in pieces(text)]
        events += [_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   _event("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn",
                                                                             "stop_sequence": None},
                                            "usage": {"output_tokens": 12}}),
                   _event("message_stop", {"type": "message_stop"})]
        return self._stream(events, model)

    async def gemini(self, request: Request) -> Response:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        refused = await self._admit(request, key, {"error": {"code": 401, "message": "API key not valid.",
                                                             "status": "UNAUTHENTICATED"}})
        if refused:
            return refused
        model, _, action = request.path_params["rest"].partition(":")
        payload = await request.json()
        text = answer(payload["contents"][-1]["parts"][0]["text"])
        usage = {"promptTokenCount": 9, "candidatesTokenCount": 12, "totalTokenCount": 21}
        if action == "generateContent":
            return self._json(request, {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                                                        "finishReason": "STOP", "index": 0}],
                                        "usageMetadata": usage, "modelVersion": model})
        events = []
        for number, piece in enumerate(pieces(text)):
            last = number == EVENTS - 1
            candidate = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0,
                         **({"finishReason": "STOP"} if last else {})}
            data = {"candidates": [candidate], "modelVersion": model, **({"usageMetadata": usage} if last else {})}
            events.append(b"data: " + json.dumps(data).encode() + b"\r\n\r\n")  # Gemini ends events with CRLFs
        return self._stream(events, model)

    async def models(self, request: Request) -> Response:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        refused = await self._admit(request, key, {"error": {"message": "Incorrect API key provided"}})
        return refused or self._json(request, {"object": "list", "data": [{"id": "gpt-standin", "object": "model"}]})


    async def file_content(self, request: Request) -> Response:
        """A binary answer (bytes that are not UTF-8), with its length, never compressed."""
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        refused = await self._admit(request, key, {"error": {"message": "Incorrect API key provided"}})
        if refused:
            return refused
        self.sent.append(BINARY)
        return Response(BINARY, media_type="application/octet-stream", headers=_account_headers())


BINARY = bytes(range(256)) * 4


def _account_headers() -> dict[str, str]:
    return {"set-cookie": f"{COOKIE}; Path=/; HttpOnly", "openai-organization": ORGANIZATION,
            "anthropic-organization-id": ORGANIZATION, "x-request-id": "req_standin"}


def _data(value: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(value).encode() + b"\n\n"


def _event(name: str, value: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: ".encode() + json.dumps(value).encode() + b"\n\n"
