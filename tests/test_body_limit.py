"""--max-body-size on the replay endpoint: a body over it is a 413 in the JSON error shape,
refused from its Content-Length before it is read, else while it arrives, and journaled; the
server stays usable, also on the same connection."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from server import Settings

from .conftest import interaction
from .test_app import call

BODY = interaction()["request"]["body"]
LIMIT = 1024


def answer_of(sock: socket.socket) -> bytes:
    """The reply on ``sock`` up to the end of its (Content-Length) body."""
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    head, _, body = reply.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_body_over_the_limit_is_a_413_in_the_json_shape_and_journaled(write_cassette, cassette_dir: Path) -> None:
    write_cassette("c", interaction())
    settings = Settings(paths=(cassette_dir,), speed=0, max_body_size=LIMIT)
    big, served, journal = call(settings, ("POST", "/v1/chat/completions", {"content": b"x" * (LIMIT + 1)}),
                                ("POST", "/v1/chat/completions", {"content": BODY}),
                                ("GET", "/__admin/requests", {}))
    assert big.status_code == 413 and big.headers["x-should-retry"] == "false"
    error = big.json()["error"]
    assert error["code"] == "too_large" and error["type"] == "request_too_large"
    assert error["message"].startswith("POST /v1/chat/completions: the request body is 1025 bytes, more than the 1024")
    assert "--max-body-size" in error["message"]
    assert served.status_code == 200
    assert [(entry["status"], (entry["error"] or {}).get("code")) for entry in journal.json()] == [
        (200, None), (413, "too_large")]


def test_a_declared_length_is_refused_before_the_body_is_sent(write_cassette, cassette_dir: Path, serve) -> None:
    write_cassette("c", interaction())
    url, _ = serve(cassette_dir, speed=0, max_body_size=LIMIT)
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # 10 GB announced, nothing sent: the answer comes at once, without waiting for the body
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n")
        reply = answer_of(sock)
    assert reply.startswith(b"HTTP/1.1 413 ") and b'"code":"too_large"' in reply
    assert b"the request body is 10000000000 bytes" in reply


def test_a_chunked_body_is_refused_while_it_arrives_and_the_connection_stays_usable(
        write_cassette, cassette_dir: Path, serve) -> None:
    write_cassette("c", interaction())
    url, _ = serve(cassette_dir, speed=0, max_body_size=LIMIT)
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"y" * 700
        for _ in range(2):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        reply = answer_of(sock)
        assert reply.startswith(b"HTTP/1.1 413 ") and b"the request body is at least " in reply
        for _ in range(50):  # the client goes on sending: the server reads and drops it
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        request = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(BODY)}\r\n\r\n{BODY}"
        sock.sendall(request.encode())  # the same connection, the next request
        assert answer_of(sock).startswith(b"HTTP/1.1 200 ")


def test_an_sdk_style_client_sending_a_big_body_gets_the_413(write_cassette, cassette_dir: Path, serve) -> None:
    write_cassette("c", interaction())
    url, _ = serve(cassette_dir, speed=0, max_body_size=64 * 1024)
    started = time.monotonic()
    with httpx.Client(timeout=30) as client:
        response = client.post(url + "/v1/chat/completions", content=b"z" * 8_000_000)
        assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
        assert client.post(url + "/v1/chat/completions", content=BODY).status_code == 200
    assert time.monotonic() - started < 20
