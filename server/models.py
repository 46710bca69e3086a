"""What a cassette holds once loaded: plain frozen records, ready to serve.

Everything a request needs is computed here at load time (the header list in wire form, the
body bytes, the event boundaries), so that serving an interaction is only sending bytes.
Nothing in this module knows about HTTP frameworks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class BodyKind(enum.Enum):
    """How a response body is sent."""

    WHOLE = "whole"  # one send, with Content-Length
    SSE = "sse"  # text/event-stream, one event per send
    EVENTSTREAM = "eventstream"  # application/vnd.amazon.eventstream, one frame per send


@dataclass(frozen=True)
class RecordedRequest:
    """The request as recorded; ``path`` is already percent-decoded, ``query`` is raw."""

    method: str
    url: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]  # (lower-case name, value), in recorded order
    body: bytes

    def header(self, name: str) -> str | None:
        """A header's values (``name`` in lower case) joined with ", ", or None: the form the
        server gives a received header sent several times, so the two compare alike."""
        values = [value for key, value in self.headers if key == name]
        return ", ".join(values) if values else None


@dataclass(frozen=True)
class RecordedResponse:
    """The response as it will be sent.

    ``headers`` are in ASGI form (lower-case latin-1 bytes), hop-by-hop headers already dropped
    and Content-Length already set for whole bodies. ``chunks`` concatenate to ``body``
    exactly: one chunk per SSE event or event-stream frame, a single chunk otherwise.
    """

    status: int
    reason: str
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    kind: BodyKind
    chunks: tuple[bytes, ...]
    content_type: str
    duration: float  # seconds from request to response headers, as recorded
    event_offsets: tuple[float, ...] | None = None  # seconds from headers to each chunk
    notes: tuple[str, ...] = ()  # load-time remarks (e.g. a dropped Content-Encoding)


@dataclass(frozen=True, eq=False)
class Interaction:
    """One recorded request and its response, and where it came from.

    Compared and hashed by identity: each loaded interaction is one object, used as a key
    for usage counts on the per-request path.
    """

    cassette: str
    id: int
    request: RecordedRequest
    response: RecordedResponse
    file: str
    line: int | None = None

    @property
    def label(self) -> str:
        """How users name it: ``cassette#id``."""
        return f"{self.cassette}#{self.id}"


@dataclass(frozen=True)
class Cassette:
    """A loaded cassette file."""

    name: str
    file: str
    format: str
    interactions: tuple[Interaction, ...] = field(default=())

    @property
    def endpoints(self) -> list[str]:
        """The distinct ``METHOD /path`` pairs it serves, in first-recorded order."""
        seen: dict[str, None] = {}
        for interaction in self.interactions:
            seen.setdefault(f"{interaction.request.method} {interaction.request.path}", None)
        return list(seen)


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as the server received it; ``path`` is percent-decoded, without any
    ``/__cassette/NAME`` prefix."""

    method: str
    path: str
    query: str
    # Only the headers the server looks at (its control headers, Content-Type and --match-header
    # ones), by lower-case name; repeated headers joined with ", ".
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)
