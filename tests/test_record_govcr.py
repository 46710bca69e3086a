"""What recording writes in go-vcr's format loads with go-vcr's own loader (govcr-load, from
../shared/tools): new cassettes of every kind of answer, and real go-vcr cassettes recorded into.
Collected only when that tool exists (see conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx

from server.loader import load_file
from server.record import RecordMode

from .conftest import CORPUS, GOVCR_LOAD
from .recording import recording
from .standin import KEY, StandIn

AUTH = {"Authorization": f"Bearer {KEY}"}


def govcr_load(*files: Path) -> str:
    result = subprocess.run([str(GOVCR_LOAD), *map(str, files)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_recorded_cassettes_load_with_go_vcr(tmp_path: Path) -> None:
    chat = {"model": "gpt-standin", "messages": [{"role": "user", "content": "Olá, \u2028 \"go\"\ttab"}]}
    gemini = {"contents": [{"role": "user", "parts": [{"text": "crlf"}]}]}
    with recording(StandIn(), tmp_path, record_errors=True) as (url, _, _):
        with httpx.Client(base_url=url, headers=AUTH) as client:
            client.post("/v1/chat/completions", json=chat)  # gzip JSON, stored decoded
            client.post("/v1/chat/completions", json={**chat, "stream": True})  # SSE
            client.post(f"/v1beta/models/gemini-standin:streamGenerateContent?alt=sse&key={KEY}", json=gemini)  # CRLF
            client.get("/v1/files/file-1/content")  # binary, with a Content-Length
            client.get("/v1/models", headers={"Authorization": "Bearer wrong"})  # an error, no request body
            client.post("/v1/messages", json={"model": "claude-standin", "max_tokens": 5,
                                              "messages": [{"role": "user", "content": "hi"}]},
                        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"})
    file = tmp_path / "recorded.yaml"
    assert govcr_load(file).startswith(f"ok   {file}: version 2, 6 interactions")


def test_real_go_vcr_cassettes_recorded_into_still_load_with_go_vcr(tmp_path: Path) -> None:
    """A copy of corpus cassettes (written by go-vcr v4) with one interaction recorded into each:
    go-vcr still loads them, and every old interaction is read exactly as before."""
    originals = [CORPUS / "seed" / "openai-gpt-4o-mini-tool_streaming.yaml",
                 *sorted((CORPUS / "fantasy" / "TestGoogleCommon").glob("*/simple_streaming.yaml"))[:1],
                 *sorted((CORPUS / "fantasy" / "TestBedrockCommon").glob("*/simple.yaml"))[:1]]
    assert all(original.is_file() for original in originals)
    names = []
    for number, original in enumerate(originals):
        shutil.copy(original, tmp_path / f"corpus-{number}.yaml")
        names.append(f"corpus-{number}")
    before = {name: load_file(tmp_path / f"{name}.yaml", name=name) for name in names}
    with recording(StandIn(), tmp_path, paths=(tmp_path,), record=RecordMode.MISS) as (url, _, _):
        for name in names:
            response = httpx.post(f"{url}/v1/chat/completions", headers={**AUTH, "X-Cassette": name},
                                  json={"model": "gpt-standin", "messages": [{"role": "user", "content": name}]})
            assert response.status_code == 200
    for name in names:
        after = load_file(tmp_path / f"{name}.yaml", name=name)
        old = before[name].interactions
        assert len(after.interactions) == len(old) + 1
        for was, now in zip(old, after.interactions):
            assert (was.id, was.request, was.response) == (now.id, now.request, now.response)
    output = govcr_load(*(tmp_path / f"{name}.yaml" for name in names))
    assert output.count("ok   ") == len(names)
