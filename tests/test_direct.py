"""A whole answer written to the connection at once (server/replay/direct.py): the same bytes on
the wire as uvicorn's two-message path, taken only where that is certain."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h11
import pytest

from server import Settings, app
from server.replay import direct, send

from .conftest import go_vcr, interaction, uvicorn_servers

SSE = "".join(f'data: {{"n":{n}}}\n\n' for n in range(3)) + "data: [DONE]\n\n"
# two AWS event-stream frames: length (4), headers length (4), prelude CRC (4), payload, CRC (4)
FRAME = b"".join((16 + len(payload)).to_bytes(4, "big") + bytes(8) + payload + bytes(4) for payload in (b"{}", b'{"a":1}'))

ANSWERS: dict[str, dict[str, Any]] = {
    "json": interaction(url="https://api.openai.com/v1/chat/completions",
                        response_body='{"id":"chatcmpl-1","choices":[]}',
                        response_headers={"X-Request-Id": ["req_1"], "Openai-Processing-Ms": ["612"]}),
    "sse": interaction(url="https://api.openai.com/v1/responses", response_body=SSE, content_type="text/event-stream"),
    "empty-sse": interaction(url="https://api.anthropic.com/v1/messages", response_body="",
                             content_type="text/event-stream"),
    "eventstream": interaction(url="https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse-stream",
                               response_body=FRAME, content_type="application/vnd.amazon.eventstream"),
    "rate-limited": interaction(url="https://api.openai.com/v1/embeddings", code=429,
                                response_body='{"error":{"type":"rate_limit"}}',
                                response_headers={"Retry-After": ["2"]}),
    "odd-status": interaction(url="https://api.openai.com/v1/models", method="GET", body=None, code=299,
                              response_body="{}"),
    "repeated-headers": interaction(url="https://api.openai.com/v1/files", method="GET", body=None,
                                    response_body="[]", response_headers={"Set-Cookie": ["a=1", "b=2"],
                                                                          "X-Note": ["caf\u00e9"]}),
    "head": interaction(url="https://example.com/files/report.pdf", method="HEAD", body=None, response_body="",
                        content_type="application/pdf", response_headers={"Content-Length": ["5120"]}),
    "empty-json": interaction(url="https://api.openai.com/v1/batches", method="GET", body=None,
                              response_body=""),
}


def request_bytes(name: str, *, method: str | None = None, close: bool = False) -> bytes:
    """The HTTP/1.1 request that matches ``ANSWERS[name]`` (``method`` overrides its method)."""
    recorded = ANSWERS[name]["request"]
    path = "/" + recorded["url"].split("/", 3)[3]
    body = (recorded["body"] or "").encode()
    lines = [f"{method or recorded['method']} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
             f"Content-Length: {len(body)}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_answers(sock: socket.socket, count: int, *, head: bool = False) -> list[bytes]:
    """The raw bytes of the next ``count`` answers on ``sock``, each cut where h11 says it ends."""
    parser = h11.Connection(h11.CLIENT)
    answers: list[bytes] = []
    raw = b""
    pending = b""
    for _ in range(count):
        parser.send(h11.Request(method="HEAD" if head else "GET", target="/", headers=[("Host", "x")]))
        parser.send(h11.EndOfMessage())
        start = len(raw) - len(pending)
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                data = sock.recv(65536)
                raw += data
                parser.receive_data(data)
                continue
            if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        pending = parser.trailing_data[0]
        answers.append(raw[start : len(raw) - len(pending)])
        if parser.our_state is h11.MUST_CLOSE or parser.their_state is h11.MUST_CLOSE:
            break
        parser.start_next_cycle()
    return answers


@pytest.fixture
def server_for(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """server_for(**uvicorn_config) → "host:port" of a live server on ANSWERS, one cassette each."""
    for name, answer in ANSWERS.items():
        (tmp_path / f"{name}.yaml").write_text(go_vcr(answer))
    with uvicorn_servers(Settings(paths=(tmp_path,), speed=0.0)) as start:
        yield start


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each write_whole call returned (True: written at once), in order."""
    calls: list[bool] = []
    original = direct.write_whole

    def recorded(*args: Any) -> bool:
        calls.append(original(*args))
        return calls[-1]

    monkeypatch.setattr(send, "write_whole", recorded)
    monkeypatch.setattr(app, "write_whole", recorded)
    return calls


def exchange(address: str, payload: bytes, count: int = 1, *, head: bool = False) -> list[bytes]:
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        return read_answers(sock, count, head=head)


def test_each_answer_is_written_at_once_with_the_bytes_of_the_two_message_path(
    server_for: Callable[..., str], written: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    address = server_for()
    names = [name for name in ANSWERS if name != "head"]
    at_once = {name: exchange(address, request_bytes(name))[0] for name in names}
    assert written == [True] * len(names)

    monkeypatch.setattr(direct, "_WITH_BODY", frozenset())  # write_whole then refuses every status
    written.clear()
    in_two = {name: exchange(address, request_bytes(name))[0] for name in names}
    assert written == [False] * len(names)
    assert at_once == in_two
    assert at_once["json"].endswith(b'\r\n\r\n{"id":"chatcmpl-1","choices":[]}')
    assert b"transfer-encoding: chunked\r\n" in at_once["sse"] and at_once["sse"].endswith(b"\r\n0\r\n\r\n")
    assert at_once["empty-sse"].endswith(b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n")
    assert FRAME in at_once["eventstream"]
    assert at_once["odd-status"].startswith(b"HTTP/1.1 299 \r\n")
    assert b"set-cookie: a=1\r\nset-cookie: b=2\r\n" in at_once["repeated-headers"]
    assert at_once["empty-json"].endswith(b"content-length: 0\r\n\r\n")


def test_pipelined_requests_are_answered_in_order_on_one_connection(
    server_for: Callable[..., str], written: list[bool]
) -> None:
    names = ["json", "sse", "rate-limited", "json", "empty-json"]
    answers = exchange(server_for(), b"".join(request_bytes(name) for name in names), len(names))
    assert written == [True] * len(names)
    assert [answer.split(b"\r\n", 1)[0] for answer in answers] == [
        b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 429 Too Many Requests", b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"
    ]
    assert answers[0] == answers[3]


def test_a_connection_that_closes_after_the_answer_gets_uvicorns_path(
    server_for: Callable[..., str], written: list[bool]
) -> None:
    address = server_for()
    answer = exchange(address, request_bytes("json", close=True))[0]
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # HTTP/1.0: closed after one answer
        sock.sendall(request_bytes("json").replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        old = b""
        while chunk := sock.recv(65536):
            old += chunk
    assert written == [False, False]
    assert b"connection: close\r\n" in answer and answer.endswith(b'{"id":"chatcmpl-1","choices":[]}')
    assert old.endswith(b'{"id":"chatcmpl-1","choices":[]}')


def test_head_gets_uvicorns_path_without_a_body(server_for: Callable[..., str], written: list[bool]) -> None:
    head = exchange(server_for(), request_bytes("head", method="HEAD"), head=True)[0]
    assert written == [False]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 5120\r\n" in head
    assert head.endswith(b"\r\n\r\n")  # and no body


def test_other_http_implementations_get_the_two_messages(server_for: Callable[..., str], written: list[bool]) -> None:
    answer = exchange(server_for(http="h11"), request_bytes("json"))[0]
    assert written == [False]
    assert answer.endswith(b'{"id":"chatcmpl-1","choices":[]}')


def test_uvicorns_access_log_gets_uvicorns_path(server_for: Callable[..., str], written: list[bool]) -> None:
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)
    try:
        exchange(server_for(access_log=True, log_level="info", log_config=None), request_bytes("json"))
    finally:
        access.removeHandler(handler)
    assert written == [False]
    assert any('"POST /v1/chat/completions HTTP/1.1" 200' in line for line in lines)
