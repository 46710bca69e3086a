"""Recording when things go wrong, and where recordings go: an unreachable upstream, error
answers, a stream cut half-way, a body too large, names of new cassettes, credentials in the
query. Live servers on 127.0.0.1; the upstream is a stand-in provider."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest
import yaml

from server import Settings
from server.record import RecordMode
from server.record.scoping import forwarded_query
from server.record.upstreams import parse_route

from .conftest import live_server, running
from .recording import recording
from .standin import KEY, StandIn, answer

CHAT = {"model": "gpt-standin", "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"Authorization": f"Bearer {KEY}"}


def cassette_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and not path.name.startswith("."))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_upstream_is_a_502_naming_it_and_nothing_is_written(tmp_path: Path) -> None:
    upstream = f"http://127.0.0.1:{closed_port()}"
    settings = Settings(paths=(tmp_path,), record=RecordMode.ALL, upstream=(parse_route(upstream),))
    with live_server(settings) as (url, app):
        response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert response.status_code == 502 and response.headers["x-should-retry"] == "false"
    error = response.json()["error"]
    assert error["code"] == "upstream_error" and error["type"] == "api_error"
    assert upstream in error["message"] and "cassette 'recorded'" in error["message"]
    assert cassette_files(tmp_path) == []
    [entry] = app.service.journal.entries()
    assert entry.status == 502 and entry.error is not None and entry.error.code == "upstream_error"


def test_a_path_of_no_known_provider_is_a_502_saying_how_to_route_it(tmp_path: Path) -> None:
    with live_server(Settings(paths=(tmp_path,), record=RecordMode.ALL)) as (url, _):
        response = httpx.post(f"{url}/internal/generate", json=CHAT)
    assert response.status_code == 502
    assert "--upstream" in response.json()["error"]["message"]
    assert cassette_files(tmp_path) == []


def test_an_error_answer_is_passed_on_but_not_recorded(tmp_path: Path) -> None:
    standin = StandIn()
    with recording(standin, tmp_path) as (url, app, _):
        response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert response.content == standin.sent[0]  # the provider's own error body
    assert cassette_files(tmp_path) == []
    [entry] = app.service.journal.entries()
    assert entry.recorded is not None and entry.recorded.interaction is None
    assert "--record-errors" in (entry.recorded.not_recorded or "") and entry.status == 401


def test_record_errors_records_error_answers(tmp_path: Path) -> None:
    standin = StandIn()
    with recording(standin, tmp_path, record_errors=True) as (url, _, _):
        response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    [file] = cassette_files(tmp_path)
    [recorded] = yaml.safe_load(file.read_text())["interactions"]
    assert recorded["response"]["code"] == 401 and recorded["response"]["status"] == "401 Unauthorized"
    with live_server(Settings(paths=(tmp_path,), speed=0)) as (url, _):
        replayed = httpx.post(f"{url}/v1/chat/completions", json=CHAT)
    assert replayed.status_code == 401 and replayed.content == response.content


def test_a_stream_the_upstream_cuts_reaches_the_client_cut_and_is_not_recorded(tmp_path: Path) -> None:
    standin = StandIn()
    received = []
    with recording(standin, tmp_path) as (url, app, _):
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("POST", f"{url}/v1/chat/completions", headers=AUTH,
                              json={**CHAT, "model": "cut-standin", "stream": True}) as response:
                for chunk in response.iter_raw():
                    received.append(chunk)
    assert response.status_code == 200 and received  # the events before the cut did arrive
    assert b"".join(received) == b"".join(standin.sent)[: len(b"".join(received))]
    assert cassette_files(tmp_path) == []
    [entry] = app.service.journal.entries()
    assert entry.recorded is not None and "cut" in (entry.recorded.not_recorded or "")


def test_a_request_body_over_the_size_limit_is_a_413_and_not_forwarded(tmp_path: Path) -> None:
    standin = StandIn()
    with recording(standin, tmp_path, max_cassette_size=1000) as (url, _, _):
        response = httpx.post(f"{url}/v1/chat/completions", headers=AUTH,
                              json={**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert standin.requests == [] and cassette_files(tmp_path) == []


def test_header_values_that_are_not_ascii_are_forwarded_as_sent(tmp_path: Path) -> None:
    standin = StandIn()
    sent = {"User-Agent": "café-app/1.0".encode(), "X-Title": b"caf\xe9"}  # UTF-8, and a latin-1 byte
    with recording(standin, tmp_path) as (url, _, _):
        response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={**AUTH, **sent})
    assert response.status_code == 200
    [seen] = standin.headers
    assert (b"user-agent", sent["User-Agent"]) in seen and (b"x-title", sent["X-Title"]) in seen
    [recorded] = yaml.safe_load((tmp_path / "recorded.yaml").read_text())["interactions"]
    assert recorded["request"]["headers"]["User-Agent"] == ["café-app/1.0"]


def test_serve_without_record_on_miss_never_forwards(tmp_path: Path) -> None:
    standin = StandIn()
    with running(standin.app()) as upstream:
        settings = Settings(paths=(tmp_path,), upstream=(parse_route(upstream),))
        with live_server(settings) as (url, _):
            response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert response.status_code == 404 and response.json()["error"]["code"] == "cassette_miss"
    assert standin.requests == []


def test_a_url_prefix_names_a_new_cassette_and_is_not_forwarded(tmp_path: Path) -> None:
    standin = StandIn()
    with recording(standin, tmp_path) as (url, _, _):
        response = httpx.post(f"{url}/__cassette/team/chat/v1/chat/completions", json=CHAT, headers=AUTH)
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == answer("hi")
    assert standin.requests == [("POST", "/v1/chat/completions")]
    [file] = cassette_files(tmp_path)
    assert file == tmp_path / "team" / "chat.yaml"
    [recorded] = yaml.safe_load(file.read_text())["interactions"]
    assert recorded["request"]["url"].endswith("/v1/chat/completions") and "__cassette" not in recorded["request"]["url"]
    with live_server(Settings(paths=(tmp_path,), speed=0)) as (url, _):
        assert httpx.post(f"{url}/__cassette/team/chat/v1/chat/completions", json=CHAT).content == response.content


def test_the_x_cassette_header_names_a_new_cassette(tmp_path: Path) -> None:
    standin = StandIn()
    with recording(standin, tmp_path) as (url, _, _):
        response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={**AUTH, "X-Cassette": "by-header"})
    assert response.status_code == 200
    assert cassette_files(tmp_path) == [tmp_path / "by-header.yaml"]


@pytest.mark.parametrize("where", ["prefix", "header"])
def test_a_name_that_cannot_be_a_cassette_file_is_a_400_before_forwarding(tmp_path: Path, where: str) -> None:
    standin = StandIn()
    with recording(standin, tmp_path) as (url, _, _):
        if where == "prefix":
            response = httpx.post(f"{url}/__cassette/.hidden/v1/chat/completions", json=CHAT, headers=AUTH)
        else:
            response = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers={**AUTH, "X-Cassette": "../up"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
    assert standin.requests == [] and cassette_files(tmp_path) == []


def _raw_post(url: str, target: bytes, body: bytes) -> bytes:
    """POST ``target`` as these very bytes (an HTTP client would percent-encode it first); the
    whole answer as received."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer
    return answer


def test_a_query_is_recorded_as_it_was_sent_upstream(tmp_path: Path) -> None:
    """A quote or an angle bracket sent raw in the query goes upstream percent-encoded (as httpx
    sends it); the cassette's URL says what was sent, and the raw request replays."""
    standin = StandIn()
    body = json.dumps({"contents": [{"role": "user", "parts": [{"text": "raw query"}]}]}).encode()
    target = b"/v1beta/models/gemini-standin:generateContent?key=%b&q=\"a\"&c=<b>&p=%%20x+y" % KEY.encode()
    with recording(standin, tmp_path) as (url, _, _):
        assert b"You asked: raw query" in _raw_post(url, target, body)
    sent = f"/v1beta/models/gemini-standin:generateContent?key={KEY}&q=%22a%22&c=%3Cb%3E&p=%20x+y"
    assert standin.requests == [("POST", sent)]
    interaction = yaml.safe_load((tmp_path / "recorded.yaml").read_text())["interactions"][0]
    assert interaction["request"]["url"].endswith(sent.replace(f"key={KEY}", "key=REDACTED"))
    with live_server(Settings(paths=(tmp_path,), speed=0)) as (url, _):
        assert b"You asked: raw query" in _raw_post(url, target, body)
        replayed = httpx.post(f"{url}{sent}", content=body, headers={"Content-Type": "application/json"})
        assert replayed.json()["candidates"][0]["content"]["parts"][0]["text"] == answer("raw query")


def test_a_forwarded_query_keeps_the_clients_bytes_and_encodes_only_what_a_url_cannot_hold() -> None:
    raw = b'a=%22x%22&b=1+2&c="q"&d=<>#&e={}|^`&f=\xc3\xa9&g=\xff&h= '
    assert forwarded_query(raw.decode("latin-1")) == "a=%22x%22&b=1+2&c=%22q%22&d=%3C%3E%23&e={}|^`&f=%C3%A9&g=%FF&h=%20"
    assert forwarded_query("") == ""


def test_a_key_in_the_query_is_redacted_and_the_request_still_replays(tmp_path: Path) -> None:
    standin = StandIn()
    body = {"contents": [{"role": "user", "parts": [{"text": "query key"}]}]}
    with recording(standin, tmp_path) as (url, _, _):
        response = httpx.post(f"{url}/v1beta/models/gemini-standin:generateContent?key={KEY}", json=body)
    assert response.status_code == 200
    text = (tmp_path / "recorded.yaml").read_text()
    assert KEY not in text and "generateContent?key=REDACTED" in text and "key:\n      - REDACTED" in text
    with live_server(Settings(paths=(tmp_path,), speed=0)) as (url, _):
        replayed = httpx.post(f"{url}/v1beta/models/gemini-standin:generateContent?key=another-key", json=body)
    assert replayed.status_code == 200 and replayed.content == response.content
    assert json.loads(replayed.content)["candidates"][0]["content"]["parts"][0]["text"] == answer("query key")
