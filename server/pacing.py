"""When each part of a response is sent, relative to the request and to the response headers.

- Headers: go-vcr's ``duration`` is the time from request to response headers, so headers
  leave no earlier than ``duration / speed`` after the request arrived.
- Streamed events: at the recorded per-event offsets (``event_offsets``, seconds after the
  headers) when the cassette has them; otherwise one every ``event_interval`` seconds, the
  first at once. Every wait is divided by the speed; speed 0 means no waiting at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import RecordedResponse


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
