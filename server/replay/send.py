"""Sending a recorded response over plain ASGI: headers after the recorded delay, then the body
whole, or piece by piece (SSE events, event-stream frames) at their offsets, each piece in its
own ``http.response.body`` message so the server flushes it on its own.

The bytes sent are exactly the recorded ones: the pieces concatenate to the recorded body and
the header list is the one prepared at load time. No streaming library stands in between:
sse-starlette (used before) keeps process-wide shutdown state that cut every later server's
streams in the same process, and cut streams at once on SIGTERM instead of giving them the
server's grace period; a plain loop has no state beyond the one response, so streams finish
within uvicorn's ``timeout_graceful_shutdown`` like every other reply.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.types import Message, Receive, Scope, Send

from ..models import BodyKind, RecordedResponse
from .pacing import Pacing


@dataclass(frozen=True)
class Delivery:
    """What reached the client of a recorded response."""

    started: bool  # the headers went out: the answer was committed
    pieces: int = 0  # recorded body pieces (events, frames, or the one whole body) handed to the server
    complete: bool = False  # every piece was handed to the server

    @property
    def client_left(self) -> bool:
        return not self.complete


async def send_recorded(
    response: RecordedResponse, pacing: Pacing, arrived: float, scope: Scope, receive: Receive, send: Send
) -> Delivery:
    """Send ``response``; ``arrived`` is the request's arrival on the event loop's clock.

    The Delivery says whether the client went away before the headers were due (nothing was
    sent) or during the body, and how many pieces it got.
    """
    client = _Client(receive)
    try:
        delay = arrived + pacing.header_delay(response) - asyncio.get_running_loop().time()
        if not await client.stays(delay):
            return Delivery(started=False)
        await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
        if response.kind is BodyKind.WHOLE or not pacing.waits_between(response):
            # Nothing to wait for between pieces: one message carries them all (byte-exact all
            # the same, and one write instead of one per event).
            await send({"type": "http.response.body", "body": response.body})
            return Delivery(started=True, pieces=len(response.chunks), complete=True)
        sent = await _send_paced(response, pacing, client, send)
        return Delivery(started=True, pieces=sent, complete=sent == len(response.chunks))
    finally:
        client.stop_listening()


async def _send_paced(response: RecordedResponse, pacing: Pacing, client: _Client, send: Send) -> int:
    """Send each piece at its offset from the headers, then end the body; stop at once when the
    client leaves (also while waiting). Returns the number of pieces handed to the server."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for position, piece in enumerate(response.chunks):
        if not await client.stays(start + pacing.chunk_offset(response, position) - loop.time()):
            return position
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return len(response.chunks)


class _Client:
    """The client of one response, as far as leaving goes: a single pending ``receive()`` that
    completes with ``http.disconnect`` when it goes away. Created at the first real wait, so a
    response that never waits costs no task."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._listener: asyncio.Future[Message] | None = None
        self.left = False

    async def stays(self, seconds: float) -> bool:
        """Wait ``seconds`` (none when <= 0) unless the client leaves first; False at once when
        it has left (now or before).

        The request body has been read, so the next ASGI message should be ``http.disconnect``;
        anything else is ignored.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.left:
            if self._listener is not None and self._listener.done():
                message = self._listener.result()
                self._listener = None
                self.left = message["type"] == "http.disconnect"
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                return True
            if self._listener is None:
                self._listener = asyncio.ensure_future(self._receive())
            await asyncio.wait({self._listener}, timeout=remaining)
        return False

    def stop_listening(self) -> None:
        if self._listener is not None and not self._listener.done():
            self._listener.cancel()
