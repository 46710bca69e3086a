"""Recorded response parts → a RecordedResponse ready to send (shared by every cassette format).

Done once at load time: header filtering and encoding, the body kind, event boundaries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from http import HTTPStatus

from .framing import looks_like_sse, split_eventstream, split_sse
from .models import BodyKind, RecordedResponse

# RFC 9110 §7.6.1 hop-by-hop headers, plus the framing headers the server recomputes.
HOP_BY_HOP_AND_LENGTH = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)

# RFC 9110 §5.1 field names (tokens) and §5.5 field values (no control characters but tab):
# what the HTTP server would refuse to send, mid-reply.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

_SSE_TYPE = "text/event-stream"
_EVENTSTREAM_TYPE = "application/vnd.amazon.eventstream"


def standard_reason(status: int) -> str:
    """The standard reason phrase for a status code ("" when it has none)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def build_response(
    *,
    status: int,
    reason: str | None,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    duration: float,
    event_offsets: Sequence[float] | None = None,
    head: bool = False,
) -> RecordedResponse:
    """Make a RecordedResponse from what a cassette recorded.

    - hop-by-hop headers and Content-Length are dropped (the server sets its own framing), and
      so are headers that are not valid HTTP (a server cannot send them), with a note; the
      answer to a ``head`` request keeps its recorded Content-Length (the length of the body it
      has not got);
    - Content-Encoding is kept only when the body really is encoded (recorders often store
      the decoded body but keep the header);
    - the body is split into events (SSE) or frames (AWS event-stream); other bodies are whole;
    - ``event_offsets`` are kept only if there is one per piece, non-negative and in order.
    """
    header_list = [(name.strip(), value) for name, value in headers]
    notes: list[str] = []
    content_type = next((v for n, v in header_list if n.lower() == "content-type"), "")
    kind, chunks = _split_body(content_type, body, notes)

    wire: list[tuple[bytes, bytes]] = []
    for name, value in header_list:
        lower = name.lower()
        if lower in HOP_BY_HOP_AND_LENGTH and not (head and lower == "content-length" and value.strip().isdigit()):
            continue
        if lower == "content-encoding" and not body_is_encoded(value, body):
            notes.append(f"Content-Encoding: {value} dropped: the recorded body is not encoded")
            continue
        wire_name, wire_value = header_bytes(lower), header_bytes(value)
        if not _TOKEN.fullmatch(wire_name) or _BAD_VALUE.search(wire_value):
            notes.append(f"header {name!r}: {value!r} dropped: not a valid HTTP header, it cannot be sent")
            continue
        wire.append((wire_name, wire_value))
    if kind is BodyKind.WHOLE and not _no_content(status) and not any(name == b"content-length" for name, _ in wire):
        wire.append((b"content-length", str(len(body)).encode()))

    offsets = _valid_offsets(event_offsets, len(chunks), notes)
    return RecordedResponse(
        status=status,
        reason=reason if reason is not None else standard_reason(status),
        headers=tuple(wire),
        body=body,
        kind=kind,
        chunks=chunks,
        content_type=content_type,
        duration=max(0.0, duration),
        event_offsets=offsets,
        notes=tuple(notes),
        header_block=header_block(wire, streamed=kind is not BodyKind.WHOLE),
    )


def header_block(headers: Iterable[tuple[bytes, bytes]], *, streamed: bool) -> bytes:
    """The header lines an HTTP/1.1 server writes for ``headers`` (already valid, lower case,
    without framing headers but a whole body's Content-Length), a stream's chunked framing
    included, and the blank line that ends them: byte for byte what uvicorn writes for them."""
    lines = [b"%s: %s\r\n" % header for header in headers]
    if streamed:  # no Content-Length: the body goes in chunks
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def _no_content(status: int) -> bool:
    """Statuses whose replies never have a body, so no Content-Length either (RFC 9110 §8.6)."""
    return status < 200 or status in (204, 304)


def _split_body(content_type: str, body: bytes, notes: list[str]) -> tuple[BodyKind, tuple[bytes, ...]]:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == _SSE_TYPE or (not media_type and looks_like_sse(body)):
        return BodyKind.SSE, split_sse(body) or (b"",)
    if media_type == _EVENTSTREAM_TYPE:
        frames, intact = split_eventstream(body)
        if not intact:
            notes.append("event-stream framing is broken; the tail is sent as one piece")
        return BodyKind.EVENTSTREAM, frames or (b"",)
    return BodyKind.WHOLE, (body,)


def body_is_encoded(content_encoding: str, body: bytes) -> bool:
    """Whether ``body`` really is encoded with the (outermost) ``content_encoding``.

    gzip, deflate and zstd are recognised by their magic bytes; other codings (br has no magic
    number) are trusted unless the body is valid UTF-8 text, which compressed data practically
    never is.
    """
    coding = content_encoding.split(",")[-1].strip().lower()
    if not body or coding == "":
        return False
    if coding == "identity":
        return True  # harmless either way: the header says nothing was done
    if coding in ("gzip", "x-gzip"):
        return body[:2] == b"\x1f\x8b"
    if coding == "zstd":
        return body[:4] == b"\x28\xb5\x2f\xfd"
    if coding == "deflate" and len(body) >= 2 and body[0] & 0x0F == 8:
        if (body[0] << 8 | body[1]) % 31 == 0:
            return True  # a zlib header
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _valid_offsets(offsets: Sequence[float] | None, pieces: int, notes: list[str]) -> tuple[float, ...] | None:
    if offsets is None:
        return None
    values = tuple(float(value) for value in offsets)
    problem = None
    if len(values) != pieces:
        problem = f"{len(values)} event offsets for {pieces} events"
    elif any(value < 0 for value in values) or any(b < a for a, b in zip(values, values[1:])):
        problem = "event offsets must be non-negative and in order"
    if problem:
        notes.append(f"{problem}: ignored, default pacing used")
        return None
    return values


def header_bytes(text: str) -> bytes:
    """A header name or value on the wire: latin-1, as HTTP has it, else UTF-8 (what recorders store)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")
