"""The client matrix: real SDKs, Python and Node, unchanged, replay recorded conversations
(non-streamed and streamed) from tests/cassettes/clients, each pointed at the server the way
its users point it at the provider.

The cassettes come in the formats teams have: vcrpy YAML (one answer stored gzip-compressed,
one with a stale content-encoding header, one untidy with lower-case methods and a stream
recorded without headers), vcrpy JSON, pydantic-ai's parsed_body YAML, and go-vcr (one
Go-recorded with ``?beta=true``). Some clients only reach their recording through a
relaxation: they are named in each test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from server import Settings

from . import clients_python
from .clients_python import answer
from .conftest import ROOT, live_server

CLIENT_CASSETTES = ROOT / "tests" / "cassettes" / "clients"
NODE_DIR = ROOT / "tests" / "node"


def pieces(name: str) -> list[str]:
    """How every recorded stream splits the answer."""
    return ["Olá", ", ", name, "! Tudo", " bem?"]


def openai_chat_result(name: str) -> dict:
    return {"text": answer(name), "finish": "stop", "tokens": 23, "deltas": pieces(name), "stream_tokens": 23}


def anthropic_result(name: str) -> dict:
    return {"text": answer(name), "stop": "end_turn", "deltas": pieces(name), "stream_stop": "end_turn", "stream_tokens": 12}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with live_server(Settings(paths=(CLIENT_CASSETTES,), speed=0)) as (url, app):
        assert app.service.loaded.result.errors == []
        yield url


def test_every_client_cassette_loads_in_its_format() -> None:
    from server.loader import load_paths

    formats = {cassette.name: cassette.format for cassette in load_paths([CLIENT_CASSETTES]).cassettes}
    assert formats == {
        "ai-sdk-anthropic": "vcrpy v1", "ai-sdk-openai": "vcrpy v1 (JSON)", "anthropic-node": "vcrpy v1",
        "anthropic-python": "go-vcr v2", "google-genai": "vcrpy v1", "langchain-openai": "vcrpy v1 (JSON)",
        "litellm": "vcrpy v1", "openai-node": "vcrpy v1", "openai-python": "vcrpy v1",
        "openai-python-responses": "go-vcr v2",
    }


# ---- Python ---------------------------------------------------------------------------------


def test_openai_python_chat(server: str) -> None:
    """OPENAI_BASE_URL with /v1; the non-streamed answer is stored gzip-compressed."""
    assert clients_python.openai_chat(f"{server}/v1") == openai_chat_result("openai-python")


def test_openai_python_responses(server: str) -> None:
    name = "openai-python-responses"
    assert clients_python.openai_responses(f"{server}/v1") == {
        "text": answer(name), "tokens": 23, "deltas": pieces(name), "stream_text": answer(name)}


@pytest.mark.parametrize("prefix", ["/openai/v1", "/api/v1", "/v1beta/openai"], ids=["azure-v1", "openrouter", "gemini-compat"])
def test_openai_compatible_prefixes_reach_openai_recordings(server: str, prefix: str) -> None:
    """Relaxation openai-compatible-prefix: Azure's v1 API, OpenRouter, Gemini's OpenAI API."""
    assert clients_python.openai_chat(f"{server}{prefix}") == openai_chat_result("openai-python")


def test_azure_openai_deployment_reaches_the_openai_recording(server: str) -> None:
    """Relaxations azure-api-version + openai-compatible-prefix:
    /openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21."""
    assert clients_python.azure_chat(server) == openai_chat_result("openai-python")


def test_anthropic_python_replays_a_go_recording_with_beta_query(server: str) -> None:
    """ANTHROPIC_BASE_URL without /v1; the cassette says /v1/messages?beta=true (relaxation anthropic-beta)."""
    assert clients_python.anthropic_messages(server) == anthropic_result("anthropic-python")


@pytest.mark.parametrize("api_version", [None, "v1beta", "v1"], ids=["env-default", "v1beta", "v1"])
def test_google_genai(server: str, api_version: str | None) -> None:
    """Recorded at /v1beta (parsed_body cassette); asked at /v1 through google-api-version.
    Streaming uses ?alt=sse and CRLF-delimited events."""
    assert clients_python.gemini(server, api_version) == {
        "text": answer("google-genai"), "finish": "STOP", "tokens": 17, "deltas": ["Olá, ", "google-genai! Tudo bem?"]}


def test_langchain_chat_openai(server: str) -> None:
    """A vcrpy JSON cassette."""
    assert clients_python.langchain_chat(f"{server}/v1") == {
        "text": answer("langchain-openai"), "tokens": 23, "deltas": pieces("langchain-openai")}


def test_litellm_openai_route(server: str) -> None:
    """A decoded body with its content-encoding header left behind: the header is not sent."""
    assert clients_python.litellm_chat(f"{server}/v1") == {"text": answer("litellm"), "tokens": 23, "deltas": pieces("litellm")}


# ---- Node -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_clients() -> Path:
    """tests/node with its packages installed (`npm ci` from the lock file when they are not)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "the Node client tests need node (>= 20) and npm on PATH"
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, capture_output=True, timeout=600)
    return NODE_DIR


def run_node(node_clients: Path, client: str, base_url: str) -> dict:
    done = subprocess.run(["node", "clients.mjs", client, base_url], cwd=node_clients, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def ai_sdk_result(name: str, tokens: int) -> dict:
    return {"text": answer(name), "finish": "stop", "tokens": tokens, "deltas": pieces(name), "stream_finish": "stop"}


NODE_CASES = {
    # client: (base URL path, expected result)
    "openai-chat": ("/v1", openai_chat_result("openai-node")),
    "openai-responses": ("/v1", {"text": answer("openai-node-responses"), "tokens": 23, "deltas": pieces("openai-node-responses"),
                                 "stream_text": answer("openai-node-responses")}),
    "anthropic": ("", anthropic_result("anthropic-node")),  # lower-case methods, a stream recorded without headers
    "ai-openai": ("/v1", ai_sdk_result("ai-sdk-openai", 23)),  # the Responses API
    "ai-openai-chat": ("/v1", ai_sdk_result("ai-sdk-openai-chat", 23)),
    "ai-anthropic": ("", ai_sdk_result("ai-sdk-anthropic", 28)),  # asks /messages: relaxation missing-v1
}


@pytest.mark.parametrize("client", list(NODE_CASES))
def test_node_client(server: str, node_clients: Path, client: str) -> None:
    path, expected = NODE_CASES[client]
    assert run_node(node_clients, client, server + path) == expected
