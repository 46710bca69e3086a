"""What a cassette holds once loaded: plain frozen records, ready to serve.

Everything a request needs is computed here at load time (the header list in wire form, the
body bytes, the event boundaries), so that serving an interaction is only sending bytes.
Nothing in this module knows about HTTP frameworks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


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
    # ``headers`` as HTTP/1.1 header lines, framing included (the Content-Length of a whole body,
    # ``transfer-encoding: chunked`` for a stream), ending with the blank line: what
    # replay/direct.py writes after the status line.
    header_block: bytes = b""


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
    # Recorded again on purpose in one recording run (polling, a retry): a sequence, which
    # `check` does not report as a duplicate. See formats.DELIBERATE_REPEAT_FIELD.
    deliberate_repeat: bool = False

    @property
    def label(self) -> str:
        """How users name it: ``cassette#id``."""
        return f"{self.cassette}#{self.id}"

    def identity(self) -> Interaction:
        """This interaction without its headers and bodies: who it was (cassette, id, file, line,
        method, path, status), for records that outlive its cassette (the request journal)."""
        request, response = self.request, self.response
        return replace(self, request=replace(request, headers=(), body=b""),
                       response=replace(response, headers=(), body=b"", chunks=(), event_offsets=None,
                                        header_block=b""))


@dataclass(frozen=True)
class Cassette:
    """A loaded cassette file."""

    name: str
    file: str
    format: str
    interactions: tuple[Interaction, ...] = field(default=())
    notes: tuple[str, ...] = ()  # load-time remarks on the whole file (e.g. its format told without `version`)

    @property
    def endpoints(self) -> list[str]:
        """The distinct ``METHOD /path`` pairs it serves, in first-recorded order."""
        seen: dict[str, None] = {}
        for interaction in self.interactions:
            seen.setdefault(f"{interaction.request.method} {interaction.request.path}", None)
        return list(seen)


@dataclass(slots=True)  # made per request: a frozen __init__ costs ~1.2 µs more
class ReceivedRequest:
    """A request as the server received it; ``path`` is percent-decoded, without any
    ``/__cassette/NAME`` prefix."""

    method: str
    path: str
    query: str
    # Only the headers the server looks at (its control headers, Content-Type, Content-Length and
    # --match-header ones), by lower-case name; repeated headers joined with ", ".
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass(frozen=True)
class Exchange:
    """A request forwarded to an upstream and the whole answer that came back, as a recorder
    writes it: credentials already scrubbed, the body decoded, the timing measured.

    Header names are as they came (lower case, from ASGI and httpx); each format writer spells
    them its own way.
    """

    method: str
    url: str  # the upstream URL; credential query parameters already REDACTED
    request_proto: str  # the client's HTTP version, "HTTP/1.1"
    request_headers: tuple[tuple[str, str], ...]  # the kept ones, in the order sent
    request_body: bytes
    status: int
    reason: str
    response_proto: str  # the upstream's HTTP version, "HTTP/1.1" or "HTTP/2.0"
    response_headers: tuple[tuple[str, str], ...]  # scrubbed; no framing or encoding headers
    response_body: bytes  # decoded: what the client received
    content_length: int | None  # the upstream's Content-Length when the body was sent as is
    chunked: bool  # the upstream sent it with chunked transfer encoding
    decoded: bool  # the upstream compressed it (Content-Encoding), and it is stored decoded
    duration_ns: int  # from sending the request upstream to the response headers
    event_offsets: tuple[float, ...] | None = None  # seconds from the headers to each event's last byte


@dataclass(frozen=True)
class Recorded:
    """What recording did with a request it forwarded (for the journal and the log)."""

    cassette: str  # where it was (or would have been) written
    upstream: str  # the URL it was sent to, credentials redacted
    status: int  # the upstream's status, passed on to the client
    duration: float  # seconds from sending the request upstream to its response headers
    interaction: Interaction | None = None  # the interaction written, now served by the index
    not_recorded: str | None = None  # why nothing was written

    def to_json(self) -> dict[str, object]:
        return {
            "interaction": self.interaction.label if self.interaction else None,
            "cassette": self.cassette,
            "upstream": self.upstream,
            "upstream_status": self.status,
            "upstream_duration": round(self.duration, 6),
            "not_recorded": self.not_recorded,
        }
