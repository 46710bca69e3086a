"""Cassettes written by vcrpy itself, recording a local fake provider, replay through the server
exactly as the provider answered: JSON, gzip-compressed, streamed, an error, a polled GET.

Each serializer and option that changes what vcrpy writes is recorded once per module.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import vcr
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from server import Settings

from .conftest import live_server, running

CHAT = {"id": "chatcmpl-rec", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Olá! 😀"}, "finish_reason": "stop"}]}
MODELS = {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}] * 40}
EVENTS = [b'data: {"choices":[{"delta":{"content":"Ol\\u00e1"}}]}\n\n', b'data: {"choices":[{"delta":{"content":"!"}}]}\n\n',
          b"data: [DONE]\n\n"]
ERROR = {"error": {"message": "Invalid file purpose", "type": "invalid_request_error", "code": None}}
POLLS = ["in_progress", "in_progress", "completed"]


def fake_provider() -> Starlette:
    """What each endpoint sends, byte for byte: the replay must reproduce these bytes."""
    polls = iter(POLLS)

    async def chat(request: Request) -> Response:
        if (await request.json()).get("stream"):
            async def events() -> Iterator[bytes]:
                for event in EVENTS:
                    yield event

            return StreamingResponse(events(), media_type="text/event-stream")
        return Response(json.dumps(CHAT).encode(), media_type="application/json")

    async def models(_: Request) -> Response:
        return Response(gzip.compress(json.dumps(MODELS).encode()), media_type="application/json",
                        headers={"Content-Encoding": "gzip"})

    async def files(_: Request) -> Response:
        return Response(json.dumps(ERROR).encode(), status_code=400, media_type="application/json")

    async def batch(_: Request) -> Response:
        return Response(json.dumps({"id": "batch_1", "status": next(polls)}).encode(), media_type="application/json")

    return Starlette(routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models),
        Route("/v1/files", files, methods=["POST"]),
        Route("/v1/batches/batch_1", batch),
    ])


def conversation(client: httpx.Client, *, binary: bool = True) -> list[httpx.Response]:
    """The requests every cassette records, and every replay sends again."""
    sent = [
        client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "stream": True,
                                                  "messages": [{"role": "user", "content": "hi"}]}),
        client.post("/v1/files", content=b"purpose=nonsense", headers={"Content-Type": "application/x-www-form-urlencoded"}),
    ]
    sent += [client.get("/v1/batches/batch_1") for _ in POLLS]
    if binary:
        sent.append(client.get("/v1/models"))
    return sent


VARIANTS = {
    "plain": dict(serializer="yaml"),
    "decoded": dict(serializer="yaml", decode_compressed_response=True),
    "json": dict(serializer="json", decode_compressed_response=True),
    "json-text-only": dict(serializer="json"),  # vcrpy's JSON serializer cannot store binary bodies
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of cassettes, one per variant, recorded by vcrpy from the fake provider."""
    folder = tmp_path_factory.mktemp("vcrpy-cassettes")
    for name, options in VARIANTS.items():
        suffix = ".json" if options["serializer"] == "json" else ".yaml"
        with running(fake_provider()) as upstream:
            recorder = vcr.VCR(record_mode="all", **options)
            with recorder.use_cassette(str(folder / f"{name}{suffix}")), httpx.Client(base_url=upstream) as client:
                conversation(client, binary=name != "json-text-only")
    return folder


@pytest.fixture(scope="module")
def replay(recorded: Path) -> Iterator[str]:
    with live_server(Settings(paths=(recorded,), speed=0)) as (url, app):
        assert app.service.loaded.result.errors == []
        yield url


def test_vcrpy_wrote_what_we_expect(recorded: Path) -> None:
    plain = (recorded / "plain.yaml").read_text()
    assert "version: 1" in plain and "uri: http://127.0.0.1" in plain and "!!binary" in plain
    assert json.loads((recorded / "json.json").read_text())["version"] == 1


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_replays_as_the_provider_answered(replay: str, variant: str) -> None:
    binary = variant != "json-text-only"
    with httpx.Client(base_url=f"{replay}/__cassette/{variant}") as client:
        chat, stream, error, *polls = conversation(client, binary=binary)
    assert chat.status_code == 200 and chat.json() == CHAT
    assert chat.content == json.dumps(CHAT).encode()
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.content == b"".join(EVENTS)
    assert error.status_code == 400 and error.json() == ERROR
    assert [poll.json()["status"] for poll in polls[: len(POLLS)]] == POLLS
    if binary:
        models = polls[-1]
        assert models.json() == MODELS


def test_gzip_is_replayed_compressed_as_recorded(recorded: Path, replay: str) -> None:
    [stored] = [i["response"]["body"]["string"] for i in yaml.safe_load((recorded / "plain.yaml").read_text())["interactions"]
                if i["request"]["uri"].endswith("/v1/models")]
    assert isinstance(stored, bytes) and json.loads(gzip.decompress(stored)) == MODELS  # the !!binary body
    with httpx.Client(base_url=replay) as client:
        with client.stream("GET", "/__cassette/plain/v1/models") as compressed:
            raw = b"".join(compressed.iter_raw())  # as sent, not decoded
        with client.stream("GET", "/__cassette/decoded/v1/models") as decoded:
            plain = b"".join(decoded.iter_raw())
    assert compressed.headers["content-encoding"] == "gzip"
    assert raw == stored  # the recorded bytes themselves, not a new compression of the same JSON
    assert "content-encoding" not in decoded.headers and json.loads(plain) == MODELS
    assert int(decoded.headers["content-length"]) == len(plain)


def test_polling_repeats_the_last_answer_when_used_up(replay: str) -> None:
    with httpx.Client(base_url=f"{replay}/__cassette/plain", headers={"X-Cassette-Session": "poll"}) as client:
        statuses = [client.get("/v1/batches/batch_1").json()["status"] for _ in range(5)]
    assert statuses == POLLS + ["completed", "completed"]
