"""uvicorn's HTTP/1.1 protocol, answering a request it cannot parse in the JSON error shape, and
a hit that needs no waiting without a task, once the round of reads that completed it is over.

uvicorn refuses bytes that are not HTTP (a space or a non-ASCII byte in the path, a header line
without a colon, a bad Content-Length) itself, before the app sees anything, with a plain-text
``Invalid HTTP request received.``. Clients and SDKs pointed at this server read errors as JSON,
so the same refusal is written in the JSON error shape (400 ``bad_request``). Everything else is
uvicorn's protocol unchanged: the one method replaced is the one uvicorn calls for such a
request (``send_400_response``), on the implementation uvicorn itself would pick.

``ReplayProtocol`` (what ``serve`` runs) also answers without a task. uvicorn starts a task for
each request as soon as its headers are parsed; the app then awaits the body, looks the request
up and writes the answer. For the answer most of a test suite gets (a hit at speed 0, written
whole: replay/direct.py) nothing in that needs the task: so the task is started only when the
whole body is in, and only if the app asks for one. The app's ``answer_whole_request`` is
called with the body; it writes the answer and journals it, or returns the ASGI app that does
the rest, which is then run exactly as uvicorn runs any request (a miss, a recorded delay, a
fault, recording, the admin API).

It is called once the event loop has read every connection that was readable, not from
``on_message_complete`` itself: one ``call_soon`` per round of reads answers every request that
round completed, in the order they came (a task-based app writes in that order too, since its
tasks run after the reads). Writing each answer as its request was parsed instead, between
reads, cost a third of the throughput on this 2-core VM. The time went to the write system
call (py-spy: 24 µs a request, against 11 µs for the bare app's writes), most likely because
each write then woke the client for that one answer; not verified further. Measured with wrk
(``-t2 -c50``, wrk and server each pinned to a core, the benchmark's JSON case, 6 alternating
rounds): 1.65× the requests per second of writing between reads, 1.2× the bare ASGI app's
(docs/performance.md, "Answers after the reads"). One connection's latency does not change
(270 µs either way): the round ends at once.

The task is started at once, as before, when the body must be read as it comes: a client that
waits for ``100 Continue`` before sending it, a body beyond uvicorn's read buffer (uvicorn stops
reading the connection until the app receives what it has) and one beyond the app's limit
(refused as it arrives, or from its Content-Length before it is sent).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from .errors import BadRequest

log = logging.getLogger("cassette_server")

try:  # what uvicorn's "auto" picks: httptools when installed, else h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Protocol
except ImportError:  # pragma: no cover - without httptools
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Protocol  # type: ignore[assignment]


def parse_error_body(reason: str) -> bytes:
    """The JSON error body for a request that could not be parsed, ``reason`` being uvicorn's."""
    error = BadRequest(f"The request could not be read as HTTP/1.1 ({reason.rstrip('.')}): check the request line "
                       "(METHOD /path HTTP/1.1, the path percent-encoded, without spaces or non-ASCII bytes), the "
                       "header lines (Name: value) and the body's framing (Content-Length or chunked). Nothing was "
                       "replayed.")
    return json.dumps(error.to_json()).encode()


class JsonErrorsProtocol(_Protocol):  # type: ignore[misc, valid-type]
    """uvicorn's protocol; a request it cannot parse gets a JSON 400, then the connection closes
    (as uvicorn does: the rest of the bytes cannot be trusted to frame another request)."""

    transport: asyncio.Transport

    def send_400_response(self, msg: str) -> None:
        body = parse_error_body(msg)
        self.transport.write(b"".join([
            b"HTTP/1.1 400 Bad Request\r\n",
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-should-retry: false\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]))
        self.transport.close()


class ReplayProtocol(JsonErrorsProtocol):
    """JsonErrorsProtocol, starting a request's task only once its body is complete, and only
    when the app did not answer it on the spot (see the module docstring). The app takes part
    with two methods and an attribute: ``headers_for_whole_body(scope)`` when the headers are in
    (None: run the request as uvicorn would, from now), ``answer_whole_request(scope, headers,
    body, send)`` when the body is (None: answered; else the ASGI app to run), and
    ``body_limit``, the most body it waits for (beyond it, the app reads and refuses it). The
    hooks are uvicorn's httptools protocol's: under its h11 one (no httptools), or a uvicorn
    without ``_start_asgi_task``, none is called and this is JsonErrorsProtocol in effect."""

    # The request whose body is still coming: its exchange, the app, and the app's headers.
    _waiting: tuple[Any, Any, dict[str, str]] | None = None

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        # A request read in the same data as the answer before it: that answer armed the idle
        # keep-alive timer, which only new data (uvicorn's data_received) would cancel.
        self._unset_keepalive_if_required()
        if cycle is self.cycle and cycle.more_body and not cycle.waiting_for_100_continue:
            wants = getattr(app, "headers_for_whole_body", None)
            headers = wants(cycle.scope) if wants is not None else None
            if headers is not None:
                self._waiting = (cycle, app, headers)
                return
        super()._start_asgi_task(cycle, app)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        waiting = self._waiting
        # Past uvicorn's buffer (it stopped reading), or past the app's limit (to be refused as it
        # arrives): the app reads the body from here.
        if waiting is not None and (self.flow.read_paused or len(waiting[0].body) > waiting[1].body_limit):
            cycle, app, _ = waiting
            self._waiting = None
            super()._start_asgi_task(cycle, app)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        waiting = self._waiting
        if waiting is None:
            return
        self._waiting = None
        deferred = _deferred
        if deferred.loop is not self.loop:  # the first of this round: answered once what is readable now is read
            deferred.loop, deferred.answers = self.loop, []
            self.loop.call_soon(_answer_deferred, deferred)
        deferred.answers.append((self, waiting))

    def _answer(self, waiting: tuple[Any, Any, dict[str, str]]) -> None:
        cycle, app, headers = waiting
        if cycle.disconnected:  # gone before the round ended: as a client gone mid-body, not looked up
            return
        body = bytes(cycle.body)
        cycle.body = bytearray()  # received, as uvicorn's receive() leaves it
        try:
            rest = app.answer_whole_request(cycle.scope, headers, body, cycle.send)
        except Exception as error:  # a bug of ours: as uvicorn has it from an app (logged; a 500, or the connection closed)
            rest = _raising(error)
        if rest is not None:
            super()._start_asgi_task(cycle, rest)


class _Deferred(threading.local):
    """The requests complete in this thread's event loop (one loop per thread) whose answers
    wait for the end of the current round of reads, and the loop that will answer them (None
    when none is waiting). Keyed by the loop too: a list left by a loop that stopped before its
    round ended (its connections gone with it) is not carried over to a later loop of the thread."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.answers: list[tuple[ReplayProtocol, tuple[Any, Any, dict[str, str]]]] = []


_deferred = _Deferred()


def _answer_deferred(deferred: _Deferred) -> None:
    """Answer the requests deferred this round, in the order they came."""
    batch, deferred.loop, deferred.answers = deferred.answers, None, []
    for protocol, waiting in batch:
        try:
            protocol._answer(waiting)
        except Exception:  # never expected (_answer hands the app's errors to uvicorn): the others still go
            log.exception("cassette-server internal error while answering a request; its connection is closed")
            protocol.transport.close()


def _raising(error: Exception) -> Any:
    """An ASGI app that raises ``error``: uvicorn's task then logs it and answers 500, or closes the
    connection when the answer had started, as for an error raised in any app (not from the
    parser's callback, where it would be taken for a request that is not HTTP)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise error

    return app
