"""Compatibility: every interaction of ../shared/corpus (real go-vcr recordings of OpenAI, Anthropic,
Gemini/Vertex and Bedrock traffic) replays byte-exact when sent as recorded.

Collected only when ../shared/corpus exists (see conftest.py); .ci/run has it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from server import Settings

from .conftest import CORPUS, live_server

pytestmark = pytest.mark.corpus

FILES = sorted(CORPUS.rglob("*.yaml"))


@pytest.fixture(scope="module")
def corpus_server() -> Iterator[str]:
    with live_server(Settings(paths=(CORPUS,), speed=0)) as (url, app):
        assert app.service.loaded.result.errors == []
        yield url


def test_the_whole_corpus_loads() -> None:
    from server.loader import load_paths

    result = load_paths([CORPUS])
    assert result.errors == []
    assert len(result.cassettes) == len(FILES) and result.interaction_count >= 150


def as_bytes(body: str | bytes | None) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body or b""


@pytest.mark.parametrize("file", FILES, ids=[str(f.relative_to(CORPUS)) for f in FILES])
def test_replays_byte_exact(corpus_server: str, file: Path) -> None:
    name = file.relative_to(CORPUS).with_suffix("").as_posix()
    recorded = yaml.safe_load(file.read_bytes())
    with httpx.Client(base_url=f"{corpus_server}/__cassette/{name}", timeout=30) as client:
        for item in recorded["interactions"]:
            request, response = item["request"], item["response"]
            url = httpx.URL(request["url"])
            raw_path = url.raw_path.decode()  # path and query as recorded, percent-encoding kept
            with client.stream(request["method"], raw_path, content=as_bytes(request.get("body")),
                               headers={"X-Cassette-Session": name}) as answer:
                body = b"".join(answer.iter_raw())  # as sent: no content decoding
            assert answer.status_code == response["code"], f"{name}#{item['id']}: {body[:300]!r}"
            assert body == as_bytes(response.get("body")), f"{name}#{item['id']}"
            recorded_type = (response.get("headers") or {}).get("Content-Type", [None])[0]
            assert answer.headers.get("content-type") == recorded_type
