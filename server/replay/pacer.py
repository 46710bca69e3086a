"""Paced stream events written by one timer per event loop, instead of by each stream's own task.

Why: with a few thousand streams at once, each event cost its stream a timer, a task wake-up,
a future and uvicorn's ``send`` (a coroutine chain that frames the chunk and writes it). The
server ran out of CPU before the events' times: at 2,000 concurrent streams (40,000 events a
second) events came hundreds of milliseconds late. Here a stream's task hands its remaining
pieces to the loop's pacer and waits once; the pacer keeps every stream's next piece in a heap
by due time, and one timer writes whatever is due, each piece framed as uvicorn frames a chunk
and written to the connection in one call. Per event that is a heap step and a write.

It only does what uvicorn's ``send`` would do for a body piece of a chunked answer: frame it and
write it. Anything else goes back to the stream's task, which carries on with plain ASGI sends
from the piece it got to: a client that stopped reading (uvicorn waits for it to drain), a
connection gone or closing, a write that raised. The answer's end (last chunk, keep-alive, the
next pipelined request) is the task's ``send`` as before. Where the answer is not uvicorn's
chunked httptools exchange (h11, another server, a Content-Length stream, HEAD), the task paces
the stream itself, as before.

Due times are on ``time.monotonic()``: a piece is never written before its time (uvloop's
millisecond timers can fire early; then the pacer re-arms for the rest).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Sequence
from typing import Any


class PacedStream:
    """The pieces of one answer still to be written, and how far the pacer got."""

    __slots__ = ("exchange", "pieces", "due", "position", "finished")

    def __init__(self, exchange: Any, pieces: Sequence[bytes], due: Sequence[float], position: int) -> None:
        self.exchange = exchange  # uvicorn's RequestResponseCycle (replay/direct.py checked it)
        self.pieces = pieces
        self.due = due  # monotonic time each piece is due
        self.position = position  # the next piece to write
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def complete(self) -> bool:
        return self.position == len(self.pieces)

    def write_due(self, now: float) -> bool:
        """Write every piece due by ``now``; True when the pacer should keep this stream (pieces
        are left, all is well), False when it is done with it (``finished`` is resolved)."""
        if self.finished.done():  # its task stopped waiting (the client left, the server stopped)
            return False
        exchange = self.exchange
        pieces, due = self.pieces, self.due
        while self.position < len(pieces) and due[self.position] <= now:
            if exchange.disconnected or exchange.flow.write_paused or exchange.transport.is_closing():
                self.finished.set_result(None)  # the task takes it from here, the ASGI way
                return False
            piece = pieces[self.position]
            if piece:  # an empty piece: uvicorn writes nothing for it either
                try:
                    exchange.transport.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                except Exception as error:  # noqa: BLE001 - the task's send would have raised it
                    self.finished.set_exception(error)
                    return False
            self.position += 1
        if self.position == len(pieces):
            self.finished.set_result(None)
            return False
        return True


class Pacer:
    """Every paced stream of one event loop: a heap of (due time, order, stream), one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, PacedStream]] = []
        self._order = itertools.count()  # ties in due time go in the order added
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = float("inf")

    def add(self, stream: PacedStream) -> None:
        """Have ``stream``'s pieces written at their due times (the first is not due yet)."""
        due = stream.due[stream.position]
        heapq.heappush(self._heap, (due, next(self._order), stream))
        if due < self._timer_due:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        # Whole milliseconds, rounded up: uvloop's timers count in them, and runs a shorter
        # delay at the next loop turn, over and over until the time comes (a busy wait).
        self._timer = self._loop.call_later(math.ceil((due - time.monotonic()) * 1000) / 1000, self._fire)

    def _fire(self) -> None:
        self._timer, self._timer_due = None, float("inf")
        heap = self._heap
        now = time.monotonic()
        while heap:
            if heap[0][0] > now:
                now = time.monotonic()  # writing took a while: more may be due
                if heap[0][0] > now:
                    break
            _, _, stream = heapq.heappop(heap)
            if stream.write_due(now):
                heapq.heappush(heap, (stream.due[stream.position], next(self._order), stream))
        if heap:
            self._arm(heap[0][0])
        else:
            _pacers.pop(self._loop, None)  # nothing in flight: no pacer kept for this loop


_pacers: dict[asyncio.AbstractEventLoop, Pacer] = {}


def pacer() -> Pacer:
    """The running loop's pacer (made when the first stream of a quiet spell needs it)."""
    loop = asyncio.get_running_loop()
    found = _pacers.get(loop)
    if found is None:
        for closed in [other for other in _pacers if other.is_closed()]:  # stopped with streams in flight
            del _pacers[closed]
        found = _pacers[loop] = Pacer(loop)
    return found
