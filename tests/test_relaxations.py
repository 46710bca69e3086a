"""Relaxations: each rewrite, the staged lookup, ambiguity, sequences, scoping, the miss text."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from server import Settings, create_app
from server.matching.index import Exhausted
from server.matching.keys import MatchRules
from server.matching.relaxations import RELAXATION_NAMES, RELAXATIONS, RelaxedFind, RelaxedIndex, relax
from server.service import CassetteService

from .conftest import interaction

BODY = interaction()["request"]["body"]
RULES = MatchRules()


def key(path: str, query: str = "", method: str = "POST", body: str = BODY):
    return RULES.key(method, path, query, lambda name: None, body.encode())


def relaxed_path(path: str, query: str = "") -> tuple[str, tuple]:
    relaxed = relax(key(path, query), len(RELAXATIONS) - 1)
    return relaxed[1], relaxed[2]


@pytest.mark.parametrize(
    "received, recorded",
    [
        ("/v1/messages", "/v1/messages?beta=true"),  # today's anthropic Python SDK vs a Go recording
        ("/messages", "/v1/messages"),  # Vercel AI SDK's anthropic provider
        ("/v1/models/gemini-2.5-flash:generateContent", "/v1beta/models/gemini-2.5-flash:generateContent"),
        ("/v1/projects/p/locations/l/publishers/google/models/g:streamGenerateContent?alt=sse",
         "/v1beta1/projects/p/locations/l/publishers/google/models/g:streamGenerateContent?alt=sse"),
        ("/openai/v1/chat/completions", "/v1/chat/completions"),  # Azure OpenAI v1 API
        ("/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21", "/v1/chat/completions"),
        ("/openai/deployments/chat/chat/completions?api-version=2024-10-21", "/v1/chat/completions"),  # a deployment named "chat"
        ("/api/v1/chat/completions", "/v1/chat/completions"),  # OpenRouter
        ("/v1beta/openai/chat/completions", "/v1/chat/completions"),  # Gemini's OpenAI-compatible API
        ("/inference/v1/responses", "/v1/responses"),
        ("/v1/chat/completions", "/api/v1/chat/completions"),  # and the other way round
    ],
)
def test_client_paths_meet_the_recorded_ones(received: str, recorded: str) -> None:
    assert relaxed_path(*received.partition("?")[::2]) == relaxed_path(*recorded.partition("?")[::2])


@pytest.mark.parametrize(
    "received, recorded",
    [
        ("/v1/chat/completions", "/v1/embeddings"),
        ("/v1/models/a:generateContent", "/v1/models/b:generateContent"),
        ("/v1/messages", "/v1/messages/count_tokens"),
        ("/v1/models/g:streamGenerateContent?alt=sse", "/v1/models/g:streamGenerateContent"),
        ("/v2/chat/completions", "/v1/chat/completions?x=1"),
    ],
)
def test_different_endpoints_stay_different(received: str, recorded: str) -> None:
    assert relaxed_path(*received.partition("?")[::2]) != relaxed_path(*recorded.partition("?")[::2])


def recordings(*keys, cassette: str = "c") -> list:
    """Each key as recorded in ``cassette`` (a SequenceRef)."""
    return [(cassette, recorded) for recorded in keys]


def test_a_lookup_scoped_to_a_cassette_meets_only_its_recordings_and_a_key_in_two_is_one() -> None:
    chat, api = key("/v1/chat/completions"), key("/api/v1/chat/completions")
    index = RelaxedIndex([*recordings(chat, cassette="a"), *recordings(chat, api, cassette="b")])
    assert index.find(key("/openai/v1/chat/completions"), "a").recorded == chat
    assert len(index.find(key("/openai/v1/chat/completions"), "b").ambiguous) == 2
    assert index.find(key("/openai/v1/chat/completions"), "c") == index.find(key("/nothing")) == RelaxedFind()
    assert index.find(key("/chat/completions", "beta=true")).recorded == chat  # recorded in two cassettes: one request
    assert index.find(key("/openai/v1/chat/completions")).ambiguous == (chat, api)  # each once
    removed = index.updated(removed=recordings(api, cassette="b"))
    assert removed.find(key("/openai/v1/chat/completions")).recorded == chat
    assert len(index.find(key("/openai/v1/chat/completions")).ambiguous) == 2  # the old index is left as it was


def test_find_names_only_the_relaxations_needed() -> None:
    recorded = [key("/v1/chat/completions"), key("/v1/messages", "beta=true"), key("/v1beta/models/g:generateContent")]
    index = RelaxedIndex(recordings(*recorded))
    azure = index.find(key("/openai/deployments/d/chat/completions", "api-version=2024-10-21"))
    assert azure.recorded == recorded[0] and azure.name == "azure-api-version+openai-compatible-prefix"
    vercel = index.find(key("/messages"))
    assert vercel.recorded == recorded[1] and vercel.name == "anthropic-beta+missing-v1"
    assert index.find(key("/v1/messages")).name == "anthropic-beta"
    assert index.find(key("/v1/models/g:generateContent")).name == "google-api-version"
    assert index.find(key("/v1/chat/completions", method="GET")).recorded is None
    assert index.find(key("/v1/chat/completions", body='{"other": 1}')).recorded is None


def test_the_first_stage_that_meets_recordings_decides() -> None:
    beta, plain = key("/v1/messages", "beta=true"), key("/messages")
    index = RelaxedIndex(recordings(beta, plain))
    assert index.find(key("/v1/messages", "beta=false")).recorded == beta  # stage 1 meets only one
    nothing = index.find(key("/v1/messages/", ""))  # meets nothing: a trailing slash is another path
    assert nothing.recorded is None and nothing.ambiguous == ()
    both = RelaxedIndex(recordings(key("/v1/chat/completions"), key("/api/v1/chat/completions")))
    found = both.find(key("/openai/v1/chat/completions"))
    assert found.recorded is None and found.stage == "openai-compatible-prefix" and len(found.ambiguous) == 2


# ---- through the server ---------------------------------------------------------------------


def call(settings: Settings, *requests: tuple[str, str, dict]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        app = create_app(settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return [await client.request(method, url, **kw) for method, url, kw in requests]

    return asyncio.run(run())


def post(url: str, **headers: str) -> tuple[str, str, dict]:
    return ("POST", url, {"content": BODY, "headers": headers})


def test_relaxed_match_advances_the_recordings_own_sequence(write_cassette, cassette_dir: Path) -> None:
    url = "https://api.anthropic.com/v1/messages?beta=true"
    write_cassette("go", interaction(url=url, response_body="one"), interaction(url=url, response_body="two"),
                   interaction(url=url, response_body="three"))
    settings = Settings(paths=(cassette_dir,), speed=0, exhausted=Exhausted.ERROR)
    responses = call(settings, post("/v1/messages"), post("/v1/messages?beta=true"), post("/messages"),
                     post("/messages"), post("/v1/messages", **{"X-Cassette-Session": "other"}))
    assert [r.content for r in responses[:3]] == [b"one", b"two", b"three"]
    assert responses[3].status_code == 404
    message = responses[3].json()["error"]["message"]
    assert "through the relaxation anthropic-beta+missing-v1" in message and "go#0, go#1, go#2" in message
    assert responses[4].content == b"one"


def test_relaxed_match_is_recorded_on_the_match(write_cassette, cassette_dir: Path) -> None:
    from server.models import ReceivedRequest
    from server.service import CassetteService

    write_cassette("gemini", interaction(url="https://generativelanguage.googleapis.com/v1beta/models/g:generateContent"))
    service = CassetteService(Settings(paths=(cassette_dir,), speed=0))
    request = ReceivedRequest("POST", "/v1/models/g:generateContent", "", {}, BODY.encode())
    match = service.lookup(request, session="s", scope=None)
    assert match.relaxation == "google-api-version" and match.interaction.label == "gemini#0"
    strict = ReceivedRequest("POST", "/v1beta/models/g:generateContent", "", {}, BODY.encode())
    assert service.lookup(strict, session="t", scope=None).relaxation is None


def test_scope_limits_the_relaxed_lookup(write_cassette, cassette_dir: Path) -> None:
    write_cassette("openai", interaction(url="https://api.openai.com/v1/chat/completions", response_body="openai"))
    write_cassette("openrouter", interaction(url="https://openrouter.ai/api/v1/chat/completions", response_body="router"))
    settings = Settings(paths=(cassette_dir,), speed=0)
    ambiguous, scoped, by_header = call(
        settings,
        post("/openai/deployments/d/chat/completions?api-version=2024-10-21"),
        post("/__cassette/openrouter/openai/deployments/d/chat/completions?api-version=2024-10-21"),
        post("/chat/completions", **{"X-Cassette": "openai"}),
    )
    assert ambiguous.status_code == 404
    message = ambiguous.json()["error"]["message"]
    assert "The relaxation openai-compatible-prefix matches 2 different recordings" in message
    assert "openai#0 (POST https://api.openai.com/v1/chat/completions)" in message and "openrouter#0" in message
    assert scoped.content == b"router" and by_header.content == b"openai"


def test_miss_names_the_relaxations_tried(write_cassette, cassette_dir: Path) -> None:
    write_cassette("a", interaction())
    [response] = call(Settings(paths=(cassette_dir,), speed=0), post("/v1/embeddings"))
    message = response.json()["error"]["message"]
    assert f"Relaxations tried, none matched: {', '.join(RELAXATION_NAMES)}." in message


def test_no_relax_matches_strictly(write_cassette, cassette_dir: Path) -> None:
    write_cassette("a", interaction())
    relaxed, strict = call(Settings(paths=(cassette_dir,), speed=0), post("/chat/completions"))[0], \
        call(Settings(paths=(cassette_dir,), speed=0, no_relax=True), post("/chat/completions"))[0]
    assert relaxed.status_code == 200
    assert strict.status_code == 404 and "Relaxations" not in strict.json()["error"]["message"]


def test_no_relax_builds_no_relaxed_keys_also_after_a_reload(write_cassette, cassette_dir: Path) -> None:
    write_cassette("a", interaction())
    relaxing, strict = (CassetteService(Settings(paths=(cassette_dir,), speed=0, no_relax=flag)) for flag in (False, True))
    assert relaxing.index.relaxed.find(next(relaxing.index.recorded("a"))[1]).recorded is not None
    write_cassette("b", interaction(url="https://x/v1/messages"))
    strict.reload()
    for name in ("a", "b"):
        assert strict.index.relaxed.find(next(strict.index.recorded(name))[1]).recorded is None


def test_strict_matches_win_over_relaxed_ones(write_cassette, cassette_dir: Path) -> None:
    write_cassette("both", interaction(url="https://x/v1/messages?beta=true", response_body="beta"),
                   interaction(url="https://x/v1/messages", response_body="plain"))
    responses = call(Settings(paths=(cassette_dir,), speed=0), post("/v1/messages"), post("/v1/messages?beta=true"))
    assert [r.content for r in responses] == [b"plain", b"beta"]


def test_no_relax_from_flag_and_environment() -> None:
    assert Settings.resolve({}, {}).no_relax is False
    assert Settings.resolve({}, {"CASSETTE_SERVER_NO_RELAX": "1"}).no_relax is True
    assert Settings.resolve({"no_relax": True}, {}).no_relax is True
