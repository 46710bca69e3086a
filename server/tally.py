"""A running count of the requests the replay endpoint answered, logged as one summary line every
``EVERY`` requests and at shutdown: what users see instead of uvicorn's access log, which costs
about a third of the throughput of a whole-body hit (README "Performance"). ``--access-log``
brings the per-request lines back; the journal keeps each request's detail either way.
"""

from __future__ import annotations

import logging

log = logging.getLogger("cassette_server")

EVERY = 1000


class Tally:
    """Requests served from a recording, missed, refused otherwise, and forwarded to record."""

    __slots__ = ("served", "missed", "refused", "recorded", "_left")

    def __init__(self) -> None:
        self.served = self.missed = self.refused = self.recorded = 0
        self._left = EVERY  # requests until the next summary line

    @property
    def total(self) -> int:
        return self.served + self.missed + self.refused + self.recorded

    def tick(self) -> None:
        """Called once a request is counted: the summary line when ``EVERY`` more have come."""
        self._left -= 1
        if not self._left:
            self._left = EVERY
            self.log()

    def log(self) -> None:
        if self.total:
            log.info("%s", self.summary())

    def summary(self) -> str:
        parts = [f"{self.served} served from recordings", f"{self.missed} missed", f"{self.refused} refused"]
        if self.recorded:
            parts.append(f"{self.recorded} forwarded to record")
        return f"Requests so far: {self.total} ({', '.join(parts)}); GET /__admin/requests has each one"
