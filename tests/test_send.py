"""send_recorded in-process, against a fake ASGI server: the messages it sends, what the
Delivery reports, and how fast a client leaving is noticed. What a client sees on a real
socket (pacing, framing, headers) is in test_live.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from server.models import Interaction, RecordedRequest, RecordedResponse
from server.replay.faults import Fired, parse_header
from server.replay.pacing import Pacing
from server.replay.send import NO_RESPONSE, ConnectionCut, Delivery, send_faulted, send_recorded
from server.responses import build_response

EVENTS = [f"data: {n}\n\n".encode() for n in range(4)]


def sse(duration: float = 0.0, offsets: list[float] | None = None) -> RecordedResponse:
    return build_response(status=200, reason=None, headers=[("Content-Type", "text/event-stream")],
                          body=b"".join(EVENTS), duration=duration, event_offsets=offsets)


class FakeServer:
    """Records what the app sends. The client leaves once ``leave_after`` body messages were
    sent, or ``leave_in`` seconds after the request (never when both are None): from then on
    ``receive`` answers ``http.disconnect``."""

    def __init__(self, *, leave_after: int | None = None, leave_in: float | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.leave_after = leave_after
        self.leave_in = leave_in
        self.gone = asyncio.Event()
        self.receives = 0

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if self.leave_after is not None and len(self.bodies) >= self.leave_after:
            self.gone.set()

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body"]

    def replay(self, response: RecordedResponse, pacing: Pacing) -> tuple[Delivery, float]:
        """(the Delivery, seconds it took)."""

        async def run() -> Delivery:
            loop = asyncio.get_running_loop()
            if self.leave_in is not None:
                loop.call_later(self.leave_in, self.gone.set)
            return await send_recorded(response, pacing, time.monotonic(), {"type": "http"}, self.receive, self.send)

        start = time.monotonic()
        delivery = asyncio.run(run())
        return delivery, time.monotonic() - start


def test_paced_pieces_go_one_message_each_then_an_empty_last_one() -> None:
    server = FakeServer()
    delivery, _ = server.replay(sse(), Pacing(speed=1, event_interval=0.01))
    assert server.messages[0] == {"type": "http.response.start", "status": 200, "headers": sse().headers}
    assert [(m["body"], m["more_body"]) for m in server.messages[1:]] == [*((e, True) for e in EVENTS), (b"", False)]
    assert delivery == Delivery(started=True, pieces=4, complete=True)


def test_nothing_to_wait_for_sends_the_body_in_one_message() -> None:
    for pacing, response in [(Pacing(speed=0), sse(duration=3, offsets=[0, 1, 2, 3])),
                             (Pacing(speed=1), sse(offsets=[0, 0, 0, 0])),
                             (Pacing(speed=1, event_interval=0), sse())]:
        server = FakeServer()
        delivery, took = server.replay(response, pacing)
        assert server.bodies == [b"".join(EVENTS)] and not server.messages[-1].get("more_body", False)
        assert delivery == Delivery(started=True, pieces=4, complete=True)  # every piece handed over
        assert server.receives == 0  # nothing waited for: no listener either
        assert took < 2


def test_a_client_leaving_between_pieces_gets_no_more() -> None:
    server = FakeServer(leave_after=2)
    delivery, _ = server.replay(sse(), Pacing(speed=1, event_interval=0.05))
    assert server.bodies == EVENTS[:2]
    assert delivery == Delivery(started=True, pieces=2, complete=False) and delivery.client_left


def test_a_client_leaving_during_a_wait_is_noticed_at_once() -> None:
    server = FakeServer(leave_in=0.2)
    delivery, took = server.replay(sse(), Pacing(speed=1, event_interval=10))
    assert server.bodies == EVENTS[:1]  # the first piece at once, the second was due at 10 s
    assert delivery == Delivery(started=True, pieces=1, complete=False)
    assert took < 5  # not the 10 s interval: the wait ended when the client left


def test_a_client_gone_before_the_headers_gets_nothing() -> None:
    server = FakeServer(leave_in=0.2)
    delivery, took = server.replay(sse(duration=10), Pacing(speed=1))
    assert delivery == Delivery(started=False) and server.messages == [] and took < 5


# --- send_faulted: what a fault makes of the messages -------------------------------------------


def recorded(response: RecordedResponse) -> Interaction:
    request = RecordedRequest("POST", "https://api.anthropic.com/v1/messages", "/v1/messages", "", (), b"{}")
    return Interaction("c", 0, request, response, "c.yaml")


class Transport:
    """Stands in for the transport that uvicorn's request cycle holds: closing it makes the
    client leave (uvicorn's ``http.disconnect``)."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.closed = self.aborted = False

    def close(self) -> None:
        self.closed = True
        asyncio.get_running_loop().call_soon(self.server.gone.set)

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed


class Cycle:
    """uvicorn's request cycle, as far as faults go: ``send`` is its method, and it has a transport."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.transport = Transport(server)

    async def send(self, message: dict[str, Any]) -> None:
        await self.server.send(message)


def faulted(response: RecordedResponse, spec: str, *, pacing: Pacing = Pacing(speed=0),
            transport: bool = True) -> tuple[FakeServer, Delivery, float, Cycle]:
    server = FakeServer()
    cycle = Cycle(server)

    async def run() -> Delivery:
        send = cycle.send if transport else server.send
        return await send_faulted(recorded(response), "/v1/messages", Fired(parse_header(spec), "f1"), pacing,
                                  time.monotonic(), {"type": "http"}, server.receive, send)

    start = time.monotonic()
    delivery = asyncio.run(run())
    return server, delivery, time.monotonic() - start, cycle


def test_an_error_fault_answers_in_the_provider_shape_instead() -> None:
    server, delivery, _, cycle = faulted(sse(duration=5), "overloaded")
    assert server.messages[0]["status"] == 529 and b'"overloaded_error"' in server.bodies[0]
    assert delivery == Delivery(started=False, replaced_by=529) and not cycle.transport.closed


def test_a_cut_stream_closes_the_transport_after_its_events() -> None:
    server, delivery, _, cycle = faulted(sse(), "cut_stream; after_events=2")
    assert server.bodies == EVENTS[:2] and all(m.get("more_body") for m in server.messages[1:])
    assert delivery == Delivery(started=True, pieces=2, cut=True)
    assert cycle.transport.closed and not cycle.transport.aborted


def test_disconnect_closes_the_transport_before_any_message() -> None:
    server, delivery, _, cycle = faulted(sse(), "disconnect")
    assert server.messages == [] and cycle.transport.closed
    assert delivery == Delivery(started=False, replaced_by=NO_RESPONSE)


def test_without_a_transport_to_close_the_server_is_asked_to_end_the_exchange() -> None:
    with pytest.raises(ConnectionCut):
        faulted(sse(), "disconnect", transport=False)


def test_a_stall_shifts_the_pieces_after_it() -> None:
    server, delivery, took, _ = faulted(sse(), "stall; seconds=0.3; after_events=3")
    assert server.bodies == [*EVENTS, b""] and delivery == Delivery(started=True, pieces=4, complete=True)
    assert took >= 0.3


def test_a_client_leaving_during_a_stall() -> None:
    server = FakeServer()

    async def run() -> Delivery:
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, server.gone.set)
        return await send_faulted(recorded(sse()), "/v1/messages", Fired(parse_header("stall; seconds=10"), "f1"),
                                  Pacing(speed=0), time.monotonic(), {"type": "http"}, server.receive, server.send)

    start = time.monotonic()
    delivery = asyncio.run(run())
    assert delivery == Delivery(started=True, pieces=0) and time.monotonic() - start < 5
