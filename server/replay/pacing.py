"""When each part of a response is sent, relative to the request and to the response headers.

- Headers: go-vcr's ``duration`` is the time from request to response headers, so headers
  leave no earlier than ``duration / speed`` after the request arrived.
- Streamed events: at the recorded per-event offsets (``event_offsets``, seconds after the
  headers) when the cassette has them; otherwise one every ``event_interval`` seconds, the
  first at once. Every wait is divided by the speed; speed 0 means no waiting at all.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..models import BodyKind, RecordedResponse

# Slower than a thousandth of the recorded speed is no longer a replay but a hang (and a tiny
# factor like 1e-300 would make a 1 s recording wait longer than the universe has existed).
MIN_SPEED = 0.001


def parse_speed(text: str) -> float:
    """A speed factor: 0 (no waiting) or a finite number >= MIN_SPEED. Raises ValueError."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value == 0 or MIN_SPEED <= value < math.inf):
        raise ValueError(f"{text!r} is not a speed: use 0 (no waiting) or a number from {MIN_SPEED} up (1: as recorded)")
    return value


@dataclass(frozen=True)
class Pacing:
    speed: float = 1.0
    event_interval: float = 0.02  # seconds between events without recorded offsets (speed 1)

    def header_delay(self, response: RecordedResponse) -> float:
        """Seconds from request arrival to response headers."""
        return response.duration / self.speed if self.speed else 0.0

    def chunk_offset(self, response: RecordedResponse, position: int) -> float:
        """Seconds from response headers to piece ``position`` of the body."""
        if not self.speed:
            return 0.0
        offsets = response.event_offsets
        recorded = offsets[position] if offsets is not None else position * self.event_interval
        return recorded / self.speed

    def at_once(self, response: RecordedResponse, arrived: float) -> bool:
        """Whether ``response`` goes out whole, now, for a request that arrived at ``arrived``
        (``time.monotonic()``; a delay fault moves it later): its headers are due and no piece
        of its body waits for later."""
        if not self.speed:  # nothing is waited for but a delay fault's later arrival
            return arrived <= time.monotonic()
        if response.kind is not BodyKind.WHOLE and self.waits_between(response):
            return False
        return arrived + self.header_delay(response) <= time.monotonic()

    def waits_between(self, response: RecordedResponse) -> bool:
        """Whether any piece of the body is due after the headers; when none is, the body can
        go out at once, whole."""
        if not self.speed:
            return False
        offsets = response.event_offsets
        if offsets is None:
            return self.event_interval > 0 and len(response.chunks) > 1
        return any(offset > 0 for offset in offsets)
