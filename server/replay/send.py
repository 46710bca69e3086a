"""Sending a recorded response over ASGI: headers after the recorded delay, then the body whole
or piece by piece (SSE events through sse-starlette, event-stream frames through Starlette's
StreamingResponse, both of which stop when the client goes away).

The bytes sent are exactly the recorded ones: the pieces concatenate to the recorded body and
the header list is the one prepared at load time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sse_starlette import EventSourceResponse
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ..models import BodyKind, RecordedResponse
from .pacing import Pacing


@dataclass(frozen=True)
class Delivery:
    """What reached the client of a recorded response."""

    started: bool  # the headers went out: the answer was committed
    pieces: int = 0  # body pieces (events, frames, or the one whole body) sent
    complete: bool = False  # every piece was sent

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
    loop = asyncio.get_running_loop()
    delay = arrived + pacing.header_delay(response) - loop.time()
    if delay > 0 and not await _still_connected_after(delay, receive):
        return Delivery(started=False)
    if response.kind is BodyKind.WHOLE:
        await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
        await send({"type": "http.response.body", "body": response.body})
        return Delivery(started=True, pieces=1, complete=True)
    sent = [0]
    pieces = _paced(response, pacing, sent)
    streamer: StreamingResponse | EventSourceResponse
    if response.kind is BodyKind.SSE:
        # ping=0: keep-alive comments would add bytes that were never recorded.
        streamer = EventSourceResponse(pieces, status_code=response.status, ping=0)
    else:
        streamer = StreamingResponse(pieces, status_code=response.status)
    streamer.raw_headers = list(response.headers)  # the recorded headers; nothing of the library's
    await streamer(scope, receive, send)
    return Delivery(started=True, pieces=sent[0], complete=sent[0] == len(response.chunks))


async def _still_connected_after(delay: float, receive: Receive) -> bool:
    """Wait ``delay`` seconds, unless the client disconnects first (then return False at once).

    The request body has been read, so the next ASGI message should be ``http.disconnect``;
    anything else is ignored.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + delay
    listener = asyncio.ensure_future(receive())
    try:
        while (remaining := deadline - loop.time()) > 0:
            done, _ = await asyncio.wait({listener}, timeout=remaining)
            if not done:
                break
            if listener.result()["type"] == "http.disconnect":
                return False
            listener = asyncio.ensure_future(receive())
        return True
    finally:
        if not listener.done():
            listener.cancel()


async def _paced(response: RecordedResponse, pacing: Pacing, sent: list[int]) -> AsyncIterator[bytes]:
    """Yield the body's pieces, each at its offset from the moment the headers went out;
    ``sent[0]`` counts those handed on."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for position, piece in enumerate(response.chunks):
        wait = start + pacing.chunk_offset(response, position) - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        yield piece
        sent[0] += 1
