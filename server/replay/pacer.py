"""Answers that wait (a recorded header delay, paced stream events) written by one timer per
event loop, instead of by each answer's own task.

Why: with a few thousand streams at once, each event cost its stream a timer, a task wake-up,
a future and uvicorn's ``send`` (a coroutine chain that frames the chunk and writes it), and
each answer's head a further timer and uvicorn's per-header checks. The server ran out of CPU
before the events' times: at 2,000 concurrent streams (40,000 events a second) events came
hundreds of milliseconds late. Here an answer's task hands it to the loop's pacer and waits
once; the pacer keeps every answer's next write in a heap by due time, and one timer writes
whatever is due: the head (status line and the header block built at load time), the pieces
due with it, each framed as uvicorn frames a chunk, and after the last piece the body's end,
in one call to the connection. Per event that is a heap step and a write.

It writes only what uvicorn's ``send`` would write for the same ASGI messages, and records on
uvicorn's exchange what its ``send`` records (replay/direct.py decides where that is certain).
Anything else goes back to the answer's task, which carries on with plain ASGI sends from where
the pacer got to: a client that stopped reading (uvicorn waits for it to drain), a connection
gone or closing, a server stopping before the head went out (uvicorn then adds
``connection: close``), a write that raised.

Due times are on ``time.monotonic()``: nothing is written before its time (uvloop's
millisecond timers can fire early; then the pacer re-arms for the rest). A stream's event
offsets count from the moment its head was written, as when the task paced it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Sequence
from typing import Any

from ..models import BodyKind, RecordedResponse
from .direct import LAST_CHUNK, end_exchange, head_of, start_exchange


class PacedAnswer:
    """One answer the pacer writes: its head at ``head_due``, then each piece at its offset from
    the head, then the body's end. ``finished`` is resolved when the answer is complete, or when
    the pacer hands it back to its task (``complete`` and ``started`` tell which, ``position``
    how far it got); it is cancelled when the task stops waiting for it."""

    __slots__ = ("exchange", "response", "head_due", "pieces", "offsets", "chunked", "started", "start",
                 "position", "finished")

    def __init__(self, exchange: Any, response: RecordedResponse, head_due: float, pieces: Sequence[bytes],
                 offsets: Sequence[float]) -> None:
        self.exchange = exchange  # uvicorn's RequestResponseCycle (replay/direct.py checked it)
        self.response = response
        self.head_due = head_due  # monotonic time the head is due
        self.pieces = pieces  # the body's pieces: the events of a stream, or the whole body as one
        self.offsets = offsets  # seconds from the head to each piece
        self.chunked = response.kind is not BodyKind.WHOLE
        self.started = False  # the head was written
        self.start = head_due  # when the head was written
        self.position = 0  # the next piece to write
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def complete(self) -> bool:
        return self.position == len(self.pieces) and self.finished.done() and self.started

    @property
    def next_due(self) -> float:
        return self.start + self.offsets[self.position] if self.started else self.head_due

    def write_due(self, now: float) -> bool:
        """Write what is due by ``now`` in one call; True when the pacer should keep this answer
        (more is to come), False when it is done with it (``finished`` is resolved)."""
        if self.finished.done():  # its task stopped waiting (the client left, the server stopped)
            return False
        if self.next_due > now:
            return True
        exchange = self.exchange
        if (exchange.disconnected or exchange.flow.write_paused or exchange.transport.is_closing()
                or not (self.started or exchange.keep_alive)):
            self.finished.set_result(None)  # the task takes it from here, the ASGI way
            return False
        parts: list[bytes] = []
        if not self.started:
            start_exchange(exchange, self.response)
            parts.extend(head_of(self.response))
            self.started = True
            self.start = now = time.monotonic()
        pieces, offsets, start = self.pieces, self.offsets, self.start
        while self.position < len(pieces) and start + offsets[self.position] <= now:
            piece = pieces[self.position]
            if not self.chunked:
                parts.append(piece)
            elif piece:  # an empty piece: uvicorn writes nothing for it either
                parts.append(b"%x\r\n%b\r\n" % (len(piece), piece))
            self.position += 1
        done = self.position == len(pieces)
        if done and self.chunked:
            parts.append(LAST_CHUNK)
        exchange.transport.writelines(parts)
        if done:
            end_exchange(exchange)
            self.finished.set_result(None)
            return False
        return True


class Pacer:
    """Every waiting answer of one event loop: a heap of (due time, order, answer), one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, PacedAnswer]] = []
        self._order = itertools.count()  # ties in due time go in the order added
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = math.inf

    def add(self, answer: PacedAnswer) -> None:
        """Have ``answer`` written at its due times (its next write is not due yet)."""
        due = answer.next_due
        heapq.heappush(self._heap, (due, next(self._order), answer))
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
        self._timer, self._timer_due = None, math.inf
        heap = self._heap
        now = time.monotonic()
        while heap:
            if heap[0][0] > now:
                now = time.monotonic()  # writing took a while: more may be due
                if heap[0][0] > now:
                    break
            _, _, answer = heapq.heappop(heap)
            try:
                keep = answer.write_due(now)
            except Exception as error:  # noqa: BLE001 - raised in the task that waits for it, as its send would
                if not answer.finished.done():
                    answer.finished.set_exception(error)
                continue
            if keep:
                heapq.heappush(heap, (answer.next_due, next(self._order), answer))
        if heap:
            self._arm(heap[0][0])
        else:
            _pacers.pop(self._loop, None)  # nothing in flight: no pacer kept for this loop


_pacers: dict[asyncio.AbstractEventLoop, Pacer] = {}


def pace(answer: PacedAnswer) -> None:
    """Write what of ``answer`` is due now, and have the running loop's pacer write the rest."""
    if answer.write_due(time.monotonic()):
        loop = asyncio.get_running_loop()
        found = _pacers.get(loop)
        if found is None:
            for closed in [other for other in _pacers if other.is_closed()]:  # stopped with answers in flight
                del _pacers[closed]
            found = _pacers[loop] = Pacer(loop)
        found.add(answer)
