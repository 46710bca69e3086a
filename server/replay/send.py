"""Sending a recorded response over plain ASGI: headers after the recorded delay, then the body
whole, or piece by piece (SSE events, event-stream frames) at their offsets, each piece in its
own ``http.response.body`` message so the server flushes it on its own.

The bytes sent are exactly the recorded ones: the pieces concatenate to the recorded body and
the header list is the one prepared at load time. No streaming library stands in between:
sse-starlette (used before) keeps process-wide shutdown state that cut every later server's
streams in the same process, and cut streams at once on SIGTERM instead of giving them the
server's grace period; a plain loop has no state beyond the one response, so streams finish
within uvicorn's ``timeout_graceful_shutdown`` like every other reply.

Under uvicorn's httptools server (what ``serve`` runs), an answer that waits (a header delay,
paced events) is not sent by its own task but written by the loop's pacer (replay/pacer.py):
one timer for every answer in flight, the same bytes on the wire. Its task waits for it once,
and carries on with the messages above if the pacer hands the answer back.

``send_faulted`` sends a recorded response with a fault (replay/faults.py) instead: the
provider's error in its place, a delay, a stall, or a connection closed early. The plain path
above never looks at faults.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from ..models import BodyKind, Interaction, RecordedResponse
from .direct import direct_exchange, write_whole
from .faults import Fired, Kind
from .pacer import PacedAnswer, pace
from .pacing import Pacing
from .provider_errors import error_answer, provider_for

# nginx's "connection closed without response", journaled for a fault that closed the connection
# before anything was sent.
NO_RESPONSE = 444


@dataclass(slots=True)  # made per request: a frozen __init__ costs ~1.2 µs more
class Delivery:
    """What reached the client of a recorded response."""

    started: bool  # the headers went out: the answer was committed
    pieces: int = 0  # recorded body pieces (events, frames, or the one whole body) handed to the server
    complete: bool = False  # every piece was handed to the server
    cut: bool = False  # a fault closed the connection mid-answer (cut_stream, truncate)
    replaced_by: int | None = None  # a fault answered instead: the status sent (NO_RESPONSE: nothing)

    @property
    def client_left(self) -> bool:
        return not self.complete


async def send_recorded(
    response: RecordedResponse, pacing: Pacing, arrived: float, scope: Scope, receive: Receive, send: Send
) -> Delivery:
    """Send ``response``; ``arrived`` is the request's arrival on ``time.monotonic()``.

    The Delivery says whether the client went away before the headers were due (nothing was
    sent) or during the body, and how many pieces it got.
    """
    if pacing.at_once(response, arrived):
        # nothing to wait for at all (speed 0, most often): no listener for the client either
        await _send_whole(response, scope, send)
        return Delivery(True, len(response.chunks), True)  # (started, pieces, complete): positional is faster
    due = arrived + pacing.header_delay(response)
    whole = response.kind is BodyKind.WHOLE or not pacing.waits_between(response)
    client = _Client(receive)
    try:
        exchange = direct_exchange(response, scope, send)
        if exchange is not None:
            return await _send_by_pacer(exchange, response, pacing, due, whole, client, scope, send)
        if not await client.stays_until(due):
            return Delivery(started=False)
        if whole:
            # Nothing to wait for between pieces: sent in one go (byte-exact all the same, and
            # one write instead of one per event).
            await _send_whole(response, scope, send)
            return Delivery(started=True, pieces=len(response.chunks), complete=True)
        await send(_start(response, scope))
        sent = await _send_pieces(response, pacing, client, send, time.monotonic(), 0)
        return Delivery(started=True, pieces=sent, complete=sent == len(response.chunks))
    finally:
        client.stop_listening()


async def _send_by_pacer(
    exchange: Any, response: RecordedResponse, pacing: Pacing, due: float, whole: bool, client: _Client, scope: Scope,
    send: Send,
) -> Delivery:
    """Have the loop's pacer write the answer (replay/pacer.py: one timer for every waiting
    answer, a fraction of the CPU per event) and wait for it once. When the pacer hands the
    answer back (a client that stopped reading, a connection closing), the rest goes out here,
    one ASGI message at a time, from where it got to."""
    chunks = response.chunks
    if whole:
        answer = PacedAnswer(exchange, response, due, (response.body,), (0.0,))
    else:
        answer = PacedAnswer(exchange, response, due, chunks, [pacing.chunk_offset(response, i) for i in range(len(chunks))])
    pace(answer)
    stayed = await client.follows(answer.finished)
    if answer.complete:
        return Delivery(True, len(chunks), True)
    if not stayed or exchange.disconnected:
        return Delivery(answer.started, answer.position)
    if answer.started:  # handed back mid-stream (a whole body is written with its head)
        start, position = answer.start, answer.position
    else:
        await send(_start(response, scope))
        if whole:
            await send({"type": "http.response.body", "body": response.body})
            return Delivery(True, len(chunks), True)
        start, position = time.monotonic(), 0
    sent = await _send_pieces(response, pacing, client, send, start, position)
    return Delivery(True, sent, sent == len(chunks))


async def _send_whole(response: RecordedResponse, scope: Scope, send: Send) -> None:
    """Headers and the whole body: written at once where the server allows it (replay/direct.py),
    else as two ASGI messages."""
    if not write_whole(response, scope, send):
        await send_in_two(response, scope, send)


async def send_in_two(response: RecordedResponse, scope: Scope, send: Send) -> Delivery:
    """Headers and the whole body as two ASGI messages, now."""
    await send(_start(response, scope))
    await send({"type": "http.response.body", "body": response.body})
    return Delivery(True, len(response.chunks), True)


def _start(response: RecordedResponse, scope: Scope) -> Message:
    """The ASGI message that starts ``response``. An HTTP/1.0 client cannot read a chunked body
    (chunked encoding came with HTTP/1.1), and uvicorn frames any body without a Content-Length
    in chunks: so to such a client a stream goes with its length, its pieces unframed (still
    at their offsets), and the connection closes after it as HTTP/1.0 has it."""
    headers = response.headers
    if response.kind is not BodyKind.WHOLE and scope.get("http_version") == "1.0":
        headers = [*headers, (b"content-length", b"%d" % len(response.body))]
    return {"type": "http.response.start", "status": response.status, "headers": headers}


async def _send_pieces(response: RecordedResponse, pacing: Pacing, client: _Client, send: Send, start: float,
                       position: int) -> int:
    """Send each piece from ``position`` on at its offset from ``start`` (when the headers went
    out), one ASGI message each, then end the body; stop at once when the client leaves (also
    while waiting). Returns the number of pieces handed to the server."""
    pieces = response.chunks
    for at in range(position, len(pieces)):
        if not await client.stays_until(start + pacing.chunk_offset(response, at)):
            return at
        await send({"type": "http.response.body", "body": pieces[at], "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return len(pieces)


async def send_faulted(
    interaction: Interaction, path: str, fired: Fired, pacing: Pacing, arrived: float, scope: Scope,
    receive: Receive, send: Send,
) -> Delivery:
    """Send ``interaction``'s answer as the fault ``fired`` alters it; ``path`` is the request's
    (with the recorded URL, it tells which provider's error shape to answer with).

    Errors and ``disconnect`` go out at once, in place of the recording. ``delay`` adds its
    seconds to the recorded header delay; ``stall`` sends the headers (and ``after_events``
    pieces) on time, then nothing for its seconds, then the rest at the recorded pace shifted by
    as much; ``cut_stream`` and ``truncate`` send the headers and part of the body, then close the
    connection without the body's end. Fault seconds are wall-clock seconds, whatever the speed.
    """
    fault = fired.fault
    response = interaction.response
    if fault.kind.answers:
        answer = error_answer(fault, provider_for(path, interaction.request.url), fired.rule)
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
        await send({"type": "http.response.body", "body": answer.body})
        return Delivery(started=False, replaced_by=answer.status)
    if fault.kind is Kind.DELAY:  # the recorded answer, as if the request had come later
        return await send_recorded(response, pacing, arrived + fault.seconds, scope, receive, send)
    client = _Client(receive)
    try:
        if fault.kind is Kind.DISCONNECT:
            await _close_connection(send, client)
            return Delivery(started=False, replaced_by=NO_RESPONSE)
        if not await client.stays_until(arrived + pacing.header_delay(response)):
            return Delivery(started=False)
        await send(_start(response, scope))
        return await _send_altered(response, fired, pacing, client, send)
    finally:
        client.stop_listening()


async def _send_altered(response: RecordedResponse, fired: Fired, pacing: Pacing, client: _Client, send: Send) -> Delivery:
    """The body of a stalled, cut or truncated answer, piece by piece at the recorded pace."""
    fault = fired.fault
    pieces = list(response.chunks)
    stall_at = fault.after_events if fault.kind is Kind.STALL else len(pieces)
    cut = fault.kind in (Kind.CUT_STREAM, Kind.TRUNCATE)
    if fault.kind is Kind.CUT_STREAM:
        pieces = pieces[: fault.after_events]
    elif fault.kind is Kind.TRUNCATE:
        pieces = [response.body[: fault.after_bytes]]
    start = time.monotonic()
    for position, piece in enumerate(pieces):
        due = start + pacing.chunk_offset(response, position) + (fault.seconds if position >= stall_at else 0.0)
        if not await client.stays_until(due):
            return Delivery(started=True, pieces=position)
        if piece:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    if cut:
        await _close_connection(send, client)
        sent = 0 if fault.kind is Kind.TRUNCATE else len(pieces)  # a truncated body's one piece is not whole
        return Delivery(started=True, pieces=sent, cut=True)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return Delivery(started=True, pieces=len(pieces), complete=True)


class ConnectionCut(Exception):
    """Raised to have the ASGI server end the connection, where the app cannot close it itself."""


# How long to wait for the server to notice a connection the app closed (it takes a loop turn,
# longer only while the client has not read what was sent); then the connection is aborted.
_CLOSE_NOTICE = 5.0


async def _close_connection(send: Send, client: _Client) -> None:
    """Close the connection without finishing (or starting) the answer, as a dropped upstream
    does: a stream without its last chunk, a body shorter than its Content-Length, or no answer.

    ASGI has no message for that: an app that raises before answering gets a 500 written for it,
    and one that raises mid-answer an error logged with its traceback. So the connection's
    transport is closed directly. Once the server has seen the connection go (the client's
    ``http.disconnect``), returning makes it do nothing more: no 500, no log line. Under a server
    whose transport cannot be reached (an in-process test client), ConnectionCut is raised for the
    server to end the exchange.
    """
    transport = _transport_of(send)
    if transport is None:
        raise ConnectionCut("a fault closes this connection")
    transport.close()  # what was written still goes out first
    if await client.stays(_CLOSE_NOTICE):  # the client does not read what was sent: drop it
        transport.abort()
        await client.stays(_CLOSE_NOTICE)


def _transport_of(send: Send) -> Any:
    """The transport of the connection ``send`` writes to, or None. uvicorn's ``send`` is a method
    of its request cycle, which holds the transport (an asyncio one, or uvloop's, which is not an
    ``asyncio.BaseTransport``: so it is recognised by what it can do)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if all(callable(getattr(transport, name, None)) for name in ("close", "abort", "is_closing")):
        return transport
    return None


class _Client:
    """The client of one response, as far as leaving goes: one pending ``receive()`` that
    completes with ``http.disconnect`` when it goes away. Created at the first real wait, so a
    response that never waits costs no task.

    A wait is a plain ``asyncio.sleep`` (``stays_until``), or the pacer's answer (``follows``);
    when the client leaves during a wait, the listener's callback cancels the waiting task, and
    the wait returns False. Deadlines are on ``time.monotonic()``, not the loop's clock: uvloop's
    ``loop.time()`` is the time the current loop turn started, in milliseconds, so under load a
    deadline computed from it comes early.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._listener: asyncio.Future[Message] | None = None
        self._waiting: asyncio.Task[Any] | None = None  # the task in a wait, to wake when the client leaves
        self.left = False

    async def stays(self, seconds: float) -> bool:
        """Wait ``seconds`` (none when <= 0) unless the client leaves first (see ``stays_until``)."""
        return await self.stays_until(time.monotonic() + seconds)

    async def stays_until(self, deadline: float) -> bool:
        """Wait until ``deadline`` (``time.monotonic()``), never less, unless the client leaves
        first; False at once when it has left (now or before)."""
        if self.left:
            return False
        if deadline <= time.monotonic():
            return True
        return await self._unless_leaving(_sleep_until(deadline))

    async def follows(self, future: asyncio.Future[Any]) -> bool:
        """Wait for ``future`` unless the client leaves first (then it is cancelled, and the
        answer is False); an exception it ends with is raised here."""
        if self.left:
            future.cancel()
            return False
        return await self._unless_leaving(future)  # cancelling the task cancels the future too

    async def _unless_leaving(self, wait: Awaitable[Any]) -> bool:
        """Await ``wait``, or stop awaiting it when the client leaves (its listener cancels this
        task); True when the client is still there."""
        if self._listener is None:
            self._listen()
        task = asyncio.current_task()
        self._waiting = task
        try:
            await wait
        except asyncio.CancelledError:
            if not self.left:  # cancelled for another reason (the server stopping): not ours to keep
                raise
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+: the cancellation was ours, and is over
            if uncancel is not None:
                uncancel()
        finally:
            self._waiting = None
        return not self.left

    def _listen(self) -> None:
        self._listener = asyncio.ensure_future(self._receive())
        self._listener.add_done_callback(self._heard)

    def _heard(self, listener: asyncio.Future[Message]) -> None:
        """The listener's answer: the request body has been read, so the next ASGI message should
        be ``http.disconnect``; anything else is ignored (and the listening goes on)."""
        if listener.cancelled():
            return
        if listener.exception() is None and listener.result()["type"] != "http.disconnect":
            self._listen()
            return
        self.left = True
        if self._waiting is not None:
            self._waiting.cancel()

    def stop_listening(self) -> None:
        if self._listener is not None and not self._listener.done():
            self._listener.remove_done_callback(self._heard)
            self._listener.cancel()


async def _sleep_until(deadline: float) -> None:
    """Sleep until ``deadline`` (``time.monotonic()``): a timer may fire a little early (uvloop's
    count in milliseconds), and then the rest is waited too."""
    while (remaining := deadline - time.monotonic()) > 0:
        await asyncio.sleep(remaining)
