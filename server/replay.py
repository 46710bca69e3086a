"""Sending a recorded response over ASGI: headers after the recorded delay, then the body whole
or piece by piece (SSE events through sse-starlette, event-stream frames through Starlette's
StreamingResponse, both of which stop when the client goes away).

The bytes sent are exactly the recorded ones: the pieces concatenate to the recorded body and
the header list is the one prepared at load time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .models import BodyKind, RecordedResponse
from .pacing import Pacing


async def send_recorded(
    response: RecordedResponse, pacing: Pacing, arrived: float, scope: Scope, receive: Receive, send: Send
) -> None:
    """Send ``response``; ``arrived`` is the request's arrival on the event loop's clock."""
    loop = asyncio.get_running_loop()
    delay = arrived + pacing.header_delay(response) - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
    if response.kind is BodyKind.WHOLE:
        await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
        await send({"type": "http.response.body", "body": response.body})
        return
    pieces = _paced(response, pacing)
    streamer: StreamingResponse | EventSourceResponse
    if response.kind is BodyKind.SSE:
        # ping=0: keep-alive comments would add bytes that were never recorded.
        streamer = EventSourceResponse(pieces, status_code=response.status, ping=0)
    else:
        streamer = StreamingResponse(pieces, status_code=response.status)
    streamer.raw_headers = list(response.headers)  # exactly the recorded headers, nothing added
    await streamer(scope, receive, send)


async def _paced(response: RecordedResponse, pacing: Pacing) -> AsyncIterator[bytes]:
    """Yield the body's pieces, each at its offset from the moment the headers went out."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for position, piece in enumerate(response.chunks):
        wait = start + pacing.chunk_offset(response, position) - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        yield piece
