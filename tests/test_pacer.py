"""Answers that wait (a header delay, paced events) written by the loop's pacer
(server/replay/pacer.py), on a real uvicorn socket: the same bytes as one ASGI message per
event, never before their time, handed back to the ASGI path when the client stops reading,
leaves or the server stops; and what never goes to the pacer (h11, Connection: close, HTTP/1.0)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from server import Settings, create_app
from server.replay import pacer, send

from .conftest import go_vcr, interaction, running_server, uvicorn_servers

OFFSETS = [0.0, 0.04, 0.08, 0.12, 0.16, 0.2]
EVENTS = [f'data: {{"n":{n}}}\n\n' for n in range(len(OFFSETS))]
# The slow reader's stream: 9 MiB, more than the kernel buffers on loopback (4 MiB by default)
BIG = 96 * 1024
BIG_EVENTS = [f"data: {n:06d}{'x' * (BIG - 16)}\n\n" for n in range(96)]

RECORDINGS = {
    "chat": interaction(url="https://api.openai.com/v1/chat/completions", response_body="".join(EVENTS),
                        content_type="text/event-stream", event_offsets=OFFSETS),
    "late-json": interaction(url="https://api.openai.com/v1/embeddings", response_body='{"data":[]}',
                             duration="150ms", response_headers={"X-Request-Id": ["req_1"]}),
    "late-sse": interaction(url="https://api.openai.com/v1/completions", response_body="".join(EVENTS),
                            content_type="text/event-stream", duration="150ms", event_offsets=[0.0] * len(EVENTS)),
    "long": interaction(url="https://api.anthropic.com/v1/messages", response_body="".join(EVENTS) * 10,
                        content_type="text/event-stream", event_offsets=[n * 0.05 for n in range(len(EVENTS) * 10)]),
}


BIG_RECORDING = interaction(url="https://api.openai.com/v1/responses", response_body="".join(BIG_EVENTS),
                            content_type="text/event-stream", event_offsets=[n * 0.002 for n in range(len(BIG_EVENTS))])


def request_bytes(name: str) -> bytes:
    recorded = BIG_RECORDING["request"] if name == "big" else RECORDINGS[name]["request"]
    path = "/" + recorded["url"].split("/", 3)[3]
    body = recorded["body"].encode()
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """server(**uvicorn_config) → "host:port" of a live server at speed 1 on RECORDINGS (and
    on any cassette the test writes to ``tmp_path`` before)."""
    for name, recording in RECORDINGS.items():
        (tmp_path / f"{name}.yaml").write_text(go_vcr(recording))
    with uvicorn_servers(Settings(paths=(tmp_path,), speed=1.0)) as start:
        yield start


@pytest.fixture
def paced(monkeypatch: pytest.MonkeyPatch) -> list[pacer.PacedAnswer]:
    """Every stream handed to a pacer, in order."""
    streams: list[pacer.PacedAnswer] = []
    original = pacer.Pacer.add

    def add(self: pacer.Pacer, stream: pacer.PacedAnswer) -> None:
        streams.append(stream)
        original(self, stream)

    monkeypatch.setattr(pacer.Pacer, "add", add)
    return streams


async def fetch(address: str, name: str) -> tuple[bytes, float, list[float]]:
    """(the raw answer, when the request was sent, when each of EVENTS was first seen whole)."""
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    sent = time.monotonic()
    writer.write(request_bytes(name))
    raw = b""
    seen: list[float] = []
    while not raw.endswith(b"\r\n0\r\n\r\n"):
        data = await reader.read(65536)
        assert data, f"connection closed after {raw!r}"
        raw += data
        while len(seen) < len(EVENTS) and EVENTS[len(seen)].encode() in raw:
            seen.append(time.monotonic())
    writer.close()
    return raw, sent, seen


def test_concurrent_paced_streams_come_byte_for_byte_and_never_early(
    server: Callable[..., str], paced: list[pacer.PacedAnswer], monkeypatch: pytest.MonkeyPatch
) -> None:
    address = server()

    async def many() -> list[tuple[bytes, float, list[float]]]:
        return await asyncio.gather(*(fetch(address, "chat") for _ in range(40)))

    answers = asyncio.run(many())
    assert len(paced) == 40  # each stream was paced by the pacer, not by its task
    assert not pacer._pacers  # and once they all ended, no pacer is kept
    for raw, sent, seen in answers:
        assert raw.split(b"\r\n\r\n", 1)[1] == b"".join(b"%x\r\n%b\r\n" % (len(e), e.encode()) for e in EVENTS) + b"0\r\n\r\n"
        for offset, at in zip(OFFSETS, seen, strict=True):
            assert at - sent >= offset

    monkeypatch.setattr(send, "direct_exchange", lambda *_: None)  # each event an ASGI message instead
    paced.clear()
    one_message_each, _, _ = asyncio.run(fetch(address, "chat"))
    assert paced == []
    assert one_message_each == answers[0][0]


def test_a_client_that_stops_reading_gets_the_rest_through_uvicorn(
    server: Callable[..., str], paced: list[pacer.PacedAnswer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The pacer writes nothing to a connection whose buffer is full (uvicorn's flow control
    paused it): the stream goes back to its task, whose send waits for the client."""
    buffered: list[int] = []
    original = pacer.PacedAnswer.write_due

    def write_due(self: pacer.PacedAnswer, now: float) -> bool:
        buffered.append(self.exchange.transport.get_write_buffer_size())
        return original(self, now)

    monkeypatch.setattr(pacer.PacedAnswer, "write_due", write_due)
    document = {"version": 2, "interactions": [{"id": 0, **BIG_RECORDING}]}
    (tmp_path / "big.yaml").write_text(yaml.dump(document, Dumper=yaml.CSafeDumper))  # 9 MiB: the C dumper
    host, port = server().split(":")
    expected = "".join(BIG_EVENTS).encode()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.sendall(request_bytes("big"))
        time.sleep(0.5)  # every event is due by now; the client has read nothing
        raw = b""
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            data = sock.recv(1 << 20)
            assert data
            raw += data
    assert len(paced) == 1 and paced[0].position < len(BIG_EVENTS)  # handed back before the end
    assert max(buffered) < len(expected) // 2  # the pacer did not queue the whole body in memory
    body, chunks = b"", raw.split(b"\r\n\r\n", 1)[1]
    while chunks != b"0\r\n\r\n":
        size, rest = chunks.split(b"\r\n", 1)
        body += rest[: int(size, 16)]
        chunks = rest[int(size, 16) + 2 :]
    assert body == expected


def test_a_client_leaving_mid_stream_is_dropped_and_journaled(
    server: Callable[..., str], paced: list[pacer.PacedAnswer]
) -> None:
    address = server()
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request_bytes("long"))
        raw = b""
        while EVENTS[2].encode() not in raw:
            raw += sock.recv(65536)
    deadline = time.monotonic() + 5
    while pacer._pacers and time.monotonic() < deadline:  # the next event was due within 50 ms
        time.sleep(0.01)
    assert not pacer._pacers
    entry = httpx.get(f"http://{address}/__admin/requests").json()[0]
    assert entry["outcome"] == "client_left_mid_stream"
    assert 3 <= entry["pieces_sent"] < entry["pieces_total"] == len(EVENTS) * 10
    assert paced[0].position == entry["pieces_sent"]


def test_other_http_implementations_pace_in_the_task(server: Callable[..., str], paced: list[pacer.PacedAnswer]) -> None:
    raw, sent, seen = asyncio.run(fetch(server(http="h11"), "chat"))
    assert paced == []
    assert raw.endswith(b"".join(b"%x\r\n%b\r\n" % (len(e), e.encode()) for e in EVENTS) + b"0\r\n\r\n")
    assert all(at - sent >= offset for offset, at in zip(OFFSETS, seen, strict=True))


def raw_answer(address: str, name: str, *, close: bool = False) -> tuple[bytes, float]:
    """(the raw answer to RECORDINGS[name], seconds from the request to its first byte)."""
    host, port = address.split(":")
    request = request_bytes(name)
    if close:
        request = request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sent = time.monotonic()
        sock.sendall(request)
        raw = sock.recv(65536)
        first = time.monotonic() - sent
        while not (raw.endswith(b"\r\n0\r\n\r\n") or raw.endswith(b'{"data":[]}')):
            data = sock.recv(65536)
            assert data, f"connection closed after {raw!r}"
            raw += data
    return raw, first


@pytest.mark.parametrize("name", ["late-json", "late-sse"])
def test_an_answer_with_a_header_delay_is_written_by_the_pacer_not_before_it(
    server: Callable[..., str], paced: list[pacer.PacedAnswer], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    address = server()
    by_pacer, waited = raw_answer(address, name)
    assert len(paced) == 1 and paced[0].complete
    assert waited >= 0.15  # the recorded 150 ms, at speed 1

    monkeypatch.setattr(send, "direct_exchange", lambda *_: None)
    by_messages, _ = raw_answer(address, name)
    assert len(paced) == 1
    assert by_pacer == by_messages
    framing = b"transfer-encoding: chunked\r\n" if name == "late-sse" else b"content-length: 11\r\n"
    assert by_pacer.startswith(b"HTTP/1.1 200 OK\r\n") and framing in by_pacer


def test_a_connection_that_closes_after_the_answer_is_paced_in_the_task(
    server: Callable[..., str], paced: list[pacer.PacedAnswer]
) -> None:
    raw, _ = raw_answer(server(), "late-sse", close=True)
    assert paced == []
    assert b"connection: close\r\n" in raw and raw.endswith(b"\r\n0\r\n\r\n")


def test_a_server_stopping_before_the_head_is_due_still_says_connection_close(
    tmp_path: Path, paced: list[pacer.PacedAnswer]
) -> None:
    """Stopping, uvicorn asks each connection to close after its answer; an answer whose head
    is not out yet must then carry ``connection: close``, so the pacer hands it back."""
    (tmp_path / "late-sse.yaml").write_text(go_vcr(RECORDINGS["late-sse"]))
    app = create_app(Settings(paths=(tmp_path,), speed=1.0))
    with running_server(app, access_log=False) as (url, server):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(request_bytes("late-sse"))
            time.sleep(0.05)  # the request is in; its head is due 150 ms after it
            server.should_exit = True
            raw = b""
            while data := sock.recv(65536):
                raw += data
    assert len(paced) == 1 and not paced[0].started
    body = "".join(EVENTS).encode()  # every offset 0: one chunk
    assert b"connection: close\r\n" in raw and raw.endswith(b"\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(body), body))


def test_a_server_stopping_mid_stream_closes_the_connection_once_the_stream_ends(
    tmp_path: Path, paced: list[pacer.PacedAnswer]
) -> None:
    """The stream goes on at its pace (the grace period), then the connection closes at once,
    as uvicorn's ``send`` closes it, rather than when the grace period runs out."""
    (tmp_path / "chat.yaml").write_text(go_vcr(RECORDINGS["chat"]))
    app = create_app(Settings(paths=(tmp_path,), speed=1.0))
    with running_server(app, access_log=False, timeout_graceful_shutdown=5) as (url, server):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(request_bytes("chat"))
            raw = sock.recv(65536)  # the head and the first event
            server.should_exit = True
            while not raw.endswith(b"\r\n0\r\n\r\n"):
                data = sock.recv(65536)
                assert data
                raw += data
            ended = time.monotonic()
            assert sock.recv(65536) == b""  # closed
            closed = time.monotonic() - ended
    assert len(paced) == 1 and paced[0].complete
    assert raw.endswith(b"".join(b"%x\r\n%b\r\n" % (len(e), e.encode()) for e in EVENTS) + b"0\r\n\r\n")
    assert closed < 2  # not the 5 s grace period


@pytest.mark.parametrize("http", ["httptools", "h11"])
@pytest.mark.parametrize("name", ["chat", "late-sse"])
def test_an_http_1_0_client_gets_a_stream_with_its_length_not_in_chunks(
    server: Callable[..., str], http: str, name: str
) -> None:
    """HTTP/1.0 has no chunked encoding: the stream goes with a Content-Length, its events
    unframed and still at their offsets, then the connection closes."""
    host, port = server(http=http).split(":")
    body = "".join(EVENTS).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sent = time.monotonic()
        sock.sendall(request_bytes(name).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        raw = b""
        seen: list[float] = []
        while data := sock.recv(65536):
            raw += data
            while len(seen) < len(EVENTS) and EVENTS[len(seen)].encode() in raw:
                seen.append(time.monotonic())
    head, received = raw.split(b"\r\n\r\n", 1)
    assert received == body
    assert b"content-length: %d" % len(body) in head.lower() and b"transfer-encoding" not in head.lower()
    offsets = OFFSETS if name == "chat" else [0.15] * len(EVENTS)  # late-sse: all at once, 150 ms in
    assert all(at - sent >= offset for offset, at in zip(offsets, seen, strict=True))
