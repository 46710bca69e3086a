"""Who may call the admin API, in-process: read-only when exposed beyond loopback without a
token (unless --admin-open), no DNS rebinding (Host), no cross-site writes (Origin,
Sec-Fetch-Site), and the startup log line that says which mode the server is in.
(The bearer token itself is in test_admin.py.)
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import Settings, create_app
from server.admin.guards import is_loopback

from .conftest import go_vcr, interaction

BODY = interaction()["request"]["body"]
CASSETTE = go_vcr(interaction())
WRITES = [("PUT", "/__admin/cassettes/new"), ("POST", "/__admin/reload"), ("POST", "/__admin/reset"),
          ("DELETE", "/__admin/cassettes/chat")]  # DELETE: no route yet, refused all the same


def call(settings: Settings, base_url: str, *requests: tuple[str, str, dict[str, Any]]) -> list[httpx.Response]:
    """The responses of ``requests`` (method, path, httpx keywords) made in turn to one app."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            return [await client.request(method, path, **options) for method, path, options in requests]

    return asyncio.run(run())


def refused(response: httpx.Response, *words: str) -> bool:
    error = response.json()["error"]
    return response.status_code == 403 and error["code"] == "forbidden" and all(w in error["message"] for w in words)


@pytest.fixture
def served(write_cassette, cassette_dir: Path) -> Path:
    write_cassette("chat", interaction())
    return cassette_dir


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST.", "app.localhost"])
def test_loopback_names(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.5", "example.com", "localhost.example.com", "127.0.0.1.nip.io"])
def test_not_loopback_names(host: str) -> None:
    assert not is_loopback(host)


def test_a_server_exposed_without_a_token_is_read_only(served: Path) -> None:
    settings = Settings(paths=(served,), host="0.0.0.0")
    replay, *reads, after = call(
        settings, "http://10.0.0.7:8080", ("POST", "/v1/chat/completions", {"content": BODY}),
        ("GET", "/__admin/health", {}), ("GET", "/__admin/cassettes", {}), ("GET", "/__admin/unused", {}),
        *((method, path, {"content": CASSETTE}) for method, path in WRITES),
        ("GET", "/__admin/requests", {}))
    assert [r.status_code for r in (replay, *reads[:3])] == [200, 200, 200, 200]  # replay and reads stay open
    for response in reads[3:]:
        assert refused(response, "0.0.0.0", "read-only", "--admin-token", "CASSETTE_SERVER_ADMIN_TOKEN", "--admin-open")
    assert not (served / "new.yaml").exists()
    assert len(after.json()) == 1  # the reset was refused: the journal still has the replay


def test_an_exposed_server_takes_writes_with_the_token_or_admin_open(served: Path) -> None:
    put = ("PUT", "/__admin/cassettes/new", {"content": CASSETTE})
    [opened] = call(Settings(paths=(served,), host="0.0.0.0", admin_open=True), "http://10.0.0.7:8080", put)
    assert opened.status_code == 201
    token = Settings(paths=(served,), host="0.0.0.0", admin_token="s3cret")
    without, with_token = call(token, "http://10.0.0.7:8080", put,
                               ("PUT", "/__admin/cassettes/other", {"content": CASSETTE,
                                                                     "headers": {"Authorization": "Bearer s3cret"}}))
    assert without.status_code == 401 and with_token.status_code == 201


def test_a_loopback_server_refuses_other_host_names(served: Path) -> None:
    settings = Settings(paths=(served,))  # 127.0.0.1, the default
    rebound = call(settings, "http://evil.example:8080", ("GET", "/__admin/requests", {}),
                   ("POST", "/__admin/reset", {}), ("GET", "/__admin/health", {}))
    for response in rebound:
        assert refused(response, "'evil.example:8080'", "DNS rebinding", "127.0.0.1 or localhost")
    for base_url in ("http://127.0.0.1:8080", "http://localhost", "http://[::1]:9000", "http://app.localhost:8080"):
        [response] = call(settings, base_url, ("POST", "/__admin/reset", {}))
        assert response.status_code == 200, base_url
    # the replay endpoint answers whatever the Host: it changes nothing an attacker could use
    [replayed] = call(settings, "http://evil.example:8080", ("POST", "/v1/chat/completions", {"content": BODY}))
    assert replayed.status_code == 200


def test_cross_site_writes_are_refused(served: Path) -> None:
    settings = Settings(paths=(served,))

    def reset(**headers: str) -> httpx.Response:
        [response] = call(settings, "http://127.0.0.1:8080", ("POST", "/__admin/reset", {"headers": headers}))
        return response

    assert refused(reset(Origin="http://evil.example"), "'http://evil.example'", "cross-site")
    assert refused(reset(Origin="null"), "'null'")  # a sandboxed frame, a file:// page
    assert refused(reset(**{"Sec-Fetch-Site": "cross-site"}), "Sec-Fetch-Site: cross-site")
    assert reset().status_code == 200  # SDKs and curl send no Origin
    assert reset(Origin="http://127.0.0.1:8080").status_code == 200  # /__admin/docs, the server's own page
    assert reset(Origin="http://localhost:3000", **{"Sec-Fetch-Site": "same-site"}).status_code == 200
    [read] = call(settings, "http://127.0.0.1:8080", ("GET", "/__admin/cassettes", {"headers": {"Origin": "http://evil.example"}}))
    assert read.status_code == 200  # no CORS headers: the page cannot read the answer anyway


def test_an_open_exposed_server_takes_writes_from_its_own_pages_only(served: Path) -> None:
    settings = Settings(paths=(served,), host="0.0.0.0", admin_open=True)
    own, foreign = call(settings, "http://cassettes.internal:8080",
                        ("POST", "/__admin/reset", {"headers": {"Origin": "http://cassettes.internal:8080"}}),
                        ("POST", "/__admin/reset", {"headers": {"Origin": "http://cassettes.internal:9999"}}))
    assert own.status_code == 200 and refused(foreign, "cross-site")


@pytest.mark.parametrize(("options", "level", "words"), [
    ({}, logging.INFO, ["open without a token to this machine only", "127.0.0.1:8080"]),
    ({"admin_token": "s3cret"}, logging.INFO, ["needs the --admin-token"]),
    ({"host": "0.0.0.0"}, logging.WARNING, ["read-only", "0.0.0.0:8080", "--admin-token", "--admin-open"]),
    ({"host": "0.0.0.0", "admin_open": True}, logging.WARNING, ["open to anyone who can reach 0.0.0.0:8080"]),
])
def test_startup_says_what_the_admin_api_allows(served: Path, caplog, options: dict[str, Any], level: int,
                                                words: list[str]) -> None:
    with caplog.at_level(logging.INFO, logger="cassette_server"):
        create_app(Settings(paths=(served,), **options))
    [record] = [r for r in caplog.records if r.getMessage().startswith("Admin API:")]
    assert record.levelno == level and all(word in record.getMessage() for word in words)
    assert "s3cret" not in caplog.text


def test_admin_open_is_set_by_the_flag_or_the_variable() -> None:
    assert Settings.resolve({"admin_open": True}, environ={}).admin_open
    assert Settings.resolve({}, environ={"CASSETTE_SERVER_ADMIN_OPEN": "1"}).admin_open
    assert not Settings.resolve({}, environ={}).admin_open
