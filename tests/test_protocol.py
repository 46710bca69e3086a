"""serve's HTTP protocol (server/protocol.py): a hit that needs no waiting is answered without a
task, once the round of reads that completed its body is over; everything else gets uvicorn's task as before, and the
connection behaves as uvicorn's does (pipelining, keep-alive, 100 Continue, big bodies)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from server import Settings, protocol
from server.app import CassetteServerApp
from server.protocol import JsonErrorsProtocol, ReplayProtocol

from .conftest import go_vcr, interaction, uvicorn_servers

BIG = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 200_000}]})  # past uvicorn's 64 KiB buffer
SMALL = interaction()["request"]["body"]


def request(body: str, *, path: str = "/v1/chat/completions", extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{extra}\r\n{body}").encode()


@pytest.fixture
def serve_small_and_big(tmp_path: Path) -> Iterator[Callable[[], str]]:
    """start() → "host:port" of a live server (serve's uvicorn settings, idle keep-alive 1 s) on a
    small and a big request. Started by the test itself: pytest's log capture puts handlers on
    uvicorn's access logger outside the test's own call, and uvicorn's access log then takes
    uvicorn's way of sending (replay/direct.py)."""
    (tmp_path / "c.yaml").write_text(go_vcr(interaction(), interaction(BIG, response_body='{"big":true}')))
    with uvicorn_servers(Settings(paths=(tmp_path,), speed=0.0)) as start:
        yield lambda: start(timeout_keep_alive=1)


@pytest.fixture
def tasks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every request uvicorn started a task for."""
    started: list[str] = []
    original = JsonErrorsProtocol._start_asgi_task

    def counted(self: Any, cycle: Any, app: Any) -> None:
        started.append(cycle.scope["path"])
        original(self, cycle, app)

    monkeypatch.setattr(JsonErrorsProtocol, "_start_asgi_task", counted)
    return started


class Connection:
    """A client connection that reads answers one at a time (Content-Length framed), keeping
    what came after one answer for the next."""

    def __init__(self, address: str) -> None:
        host, port = address.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.pending = b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"the server closed the connection; unread: {self.pending!r}")
        self.pending += data

    def answer(self) -> bytes:
        while b"\r\n\r\n" not in self.pending:
            self._more()
        head, _, rest = self.pending.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if lines[0].startswith(b"HTTP/1.1 100 "):
            self.pending = rest
            return head + b"\r\n\r\n"
        length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
        while len(rest) < length:
            self._more()
            rest = self.pending.partition(b"\r\n\r\n")[2]
        self.pending = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]


def test_a_hit_gets_no_task_and_everything_else_does(serve_small_and_big: Callable[[], str], tasks: list[str]) -> None:
    address = serve_small_and_big()
    with Connection(address) as sock:
        sock.sendall(request(SMALL))
        assert sock.answer().endswith(b'\r\n\r\n{"ok":true}')
        assert tasks == []
        sock.sendall(request('{"not":"recorded"}'))
        assert sock.answer().startswith(b"HTTP/1.1 404 ")
        sock.sendall(request(SMALL, extra="X-Replay-Fault: server_error\r\n"))
        assert sock.answer().startswith(b"HTTP/1.1 500 ")
    journal = httpx.get(f"http://{address}/__admin/requests").json()
    assert tasks == ["/v1/chat/completions", "/v1/chat/completions", "/__admin/requests"]
    assert [(entry["status"], entry["outcome"]) for entry in journal] == [
        (500, "replaced_by_fault"), (404, None), (200, "complete")]


def test_a_request_read_with_the_answer_before_it_is_not_cut_by_that_answers_idle_timer(
        serve_small_and_big: Callable[[], str]) -> None:
    """A hit and a delayed request in one packet: the hit is answered while the packet is read,
    and arms the connection's idle timer (1 s here); the delayed answer (1.5 s) must still come."""
    address = serve_small_and_big()
    with Connection(address) as sock:
        sock.sendall(request(SMALL) + request(SMALL, extra="X-Replay-Fault: delay; seconds=1.5\r\n"))
        first = sock.answer()
        assert first.endswith(b'{"ok":true}')
        assert sock.answer() == first


def test_requests_complete_at_once_on_many_connections_each_get_their_own_answer(
        serve_small_and_big: Callable[[], str], tasks: list[str]) -> None:
    """Answers wait for the end of the round of reads that completed their requests (many at once
    under load): each still goes to its own connection, once, without a task."""
    address = serve_small_and_big()
    connections = [Connection(address) for _ in range(12)]
    try:
        for number, sock in enumerate(connections):
            sock.sendall(request(SMALL, extra=f"X-Cassette-Session: s{number}\r\n"))
        answers = [sock.answer() for sock in connections]
        for sock in connections:  # and each connection goes on
            sock.sendall(request(SMALL))
        again = [sock.answer() for sock in connections]
    finally:
        for sock in connections:
            sock.sock.close()
    assert all(answer.endswith(b'\r\n\r\n{"ok":true}') for answer in answers + again)
    assert all(sock.pending == b"" for sock in connections)  # nothing more than one answer each
    assert tasks == []
    journal = httpx.get(f"http://{address}/__admin/requests").json()
    assert sorted(entry["session"] for entry in journal) == sorted([f"s{n}" for n in range(12)] + ["default"] * 12)
    assert {(entry["status"], entry["outcome"]) for entry in journal} == {(200, "complete")}


def test_answers_left_by_a_loop_that_stopped_mid_round_are_not_carried_over(
        serve_small_and_big: Callable[[], str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread's list of answers belongs to the loop that will answer it: one left by a loop
    that stopped before its round ended does not hold up the next loop's requests."""
    stale = SimpleNamespace(loop=object(), answers=[("a protocol of a loop that is gone", None)])
    monkeypatch.setattr(protocol, "_deferred", stale)  # what the server's thread finds
    address = serve_small_and_big()
    with Connection(address) as sock:
        sock.sock.settimeout(5)
        sock.sendall(request(SMALL))
        assert sock.answer().endswith(b'{"ok":true}')
    assert stale.loop is None and stale.answers == []


def test_a_client_gone_before_its_round_ends_takes_no_recording(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection is lost between the request's last byte and the end of that round of
    reads: as for a client gone mid-body, the request is not looked up (nor journaled), so the
    next request of the session gets the recording this one would have had."""
    (tmp_path / "c.yaml").write_text(go_vcr(interaction(response_body='{"n":1}'), interaction(response_body='{"n":2}')))
    original = ReplayProtocol._answer

    def lost_first(self: Any, waiting: Any) -> None:
        if not lost:
            lost.append(1)
            self.connection_lost(None)  # as uvicorn's transport reports a client that went away
        original(self, waiting)

    lost: list[int] = []
    monkeypatch.setattr(ReplayProtocol, "_answer", lost_first)
    with uvicorn_servers(Settings(paths=(tmp_path,), speed=0.0)) as start:
        address = start()
        with Connection(address) as sock:
            sock.sendall(request(SMALL))
            sock.sock.settimeout(0.5)
            with pytest.raises((TimeoutError, ConnectionError)):
                sock.answer()
        with Connection(address) as sock:
            sock.sendall(request(SMALL))
            assert sock.answer().endswith(b'{"n":1}')
        journal = httpx.get(f"http://{address}/__admin/requests").json()
    assert [(entry["status"], entry["outcome"]) for entry in journal] == [(200, "complete")]


def test_a_body_that_comes_late_or_in_pieces_is_waited_for(serve_small_and_big: Callable[[], str], tasks: list[str]) -> None:
    address = serve_small_and_big()
    whole = request(SMALL)
    with Connection(address) as sock:
        head_end = whole.index(b"\r\n\r\n") + 4
        sock.sendall(whole[:head_end])
        time.sleep(0.3)
        for at in range(head_end, len(whole), 7):
            sock.sendall(whole[at : at + 7])
        assert sock.answer().endswith(b'{"ok":true}')
    assert tasks == []


def test_a_body_past_uvicorns_buffer_is_read_by_the_app(serve_small_and_big: Callable[[], str], tasks: list[str]) -> None:
    address = serve_small_and_big()
    with Connection(address) as sock:
        sock.sendall(request(BIG))
        assert sock.answer().endswith(b'{"big":true}')
        sock.sendall(request(SMALL))  # the same connection goes on
        assert sock.answer().endswith(b'{"ok":true}')
    assert tasks == ["/v1/chat/completions"]


def test_a_client_waiting_for_100_continue_gets_it(serve_small_and_big: Callable[[], str]) -> None:
    address = serve_small_and_big()
    whole = request(SMALL, extra="Expect: 100-continue\r\n")
    head_end = whole.index(b"\r\n\r\n") + 4
    with Connection(address) as sock:
        sock.sendall(whole[:head_end])
        assert sock.answer() == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(whole[head_end:])
        assert sock.answer().endswith(b'{"ok":true}')


def test_a_client_that_leaves_mid_body_costs_nothing(serve_small_and_big: Callable[[], str], tasks: list[str]) -> None:
    address = serve_small_and_big()
    with Connection(address) as sock:
        sock.sendall(request(SMALL)[:-5])
    with Connection(address) as sock:
        sock.sendall(request(SMALL))
        assert sock.answer().endswith(b'{"ok":true}')
    assert tasks == []
    assert [entry["status"] for entry in httpx.get(f"http://{address}/__admin/requests").json()] == [200]


def test_an_admin_call_gets_its_body_through_asgi(serve_small_and_big: Callable[[], str], tasks: list[str]) -> None:
    address = serve_small_and_big()
    rule = httpx.post(f"http://{address}/__admin/faults", json={"kind": "rate_limit", "times": 1})
    assert rule.status_code in (200, 201), rule.text
    with Connection(address) as sock:
        sock.sendall(request(SMALL))
        assert sock.answer().startswith(b"HTTP/1.1 429 ")
    assert tasks == ["/__admin/faults", "/v1/chat/completions"]



def test_an_error_of_ours_while_answering_is_uvicorns_500_and_the_server_goes_on(
        serve_small_and_big: Callable[[], str], monkeypatch: pytest.MonkeyPatch) -> None:
    address = serve_small_and_big()
    original = CassetteServerApp.answer
    calls = []

    def failing_once(self: CassetteServerApp, *args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return original(self, *args)

    monkeypatch.setattr(CassetteServerApp, "answer", failing_once)
    with Connection(address) as sock:
        sock.sendall(request(SMALL))
        assert sock.answer().startswith(b"HTTP/1.1 500 ")  # not the 400 of a request that is not HTTP
    with Connection(address) as sock:
        sock.sendall(request(SMALL))
        assert sock.answer().endswith(b'{"ok":true}')
