"""Where a streamed body splits into the pieces a live server sent one at a time.

Splitting never changes a byte: the pieces always concatenate to the body they came from.
"""

from __future__ import annotations

import re

# One SSE line ending: CRLF, a lone CR or LF (a CR followed by LF is one ending, not two).
_EOL = rb"(?:\r\n|\r(?!\n)|\n)"
# An event ends at a blank line; further blank lines belong to the same event.
_EVENT_END = re.compile(_EOL + rb"(?:" + _EOL + rb")+")
_SSE_FIELD_START = re.compile(rb"[ \t\r\n]*(?:data|event|id|retry)?:")

# AWS event-stream frame: total length (4) + headers length (4) + prelude CRC (4), then
# headers and payload, then a message CRC (4).
_EVENTSTREAM_MIN_FRAME = 16


def split_sse(body: bytes) -> tuple[bytes, ...]:
    """Split an SSE body after each blank line; any trailing partial event is the last piece."""
    pieces = []
    start = 0
    for match in _EVENT_END.finditer(body):
        pieces.append(body[start : match.end()])
        start = match.end()
    if start < len(body):
        pieces.append(body[start:])
    return tuple(pieces)


def looks_like_sse(body: bytes) -> bool:
    """True when a body with no Content-Type is clearly an event stream.

    It must start with an SSE field (``data:``, ``event:``, ``id:``, ``retry:``) or comment
    (``:``) and contain at least one blank line ending an event.
    """
    return bool(_SSE_FIELD_START.match(body)) and _EVENT_END.search(body) is not None


def split_eventstream(body: bytes) -> tuple[tuple[bytes, ...], bool]:
    """Split an AWS event-stream body into frames, using each frame's length prefix.

    Returns the pieces and whether the framing was intact. Bytes that do not form a frame
    (a bad length, a truncated tail) are kept as one last piece, so nothing is lost.
    """
    pieces = []
    offset = 0
    intact = True
    while offset < len(body):
        length = int.from_bytes(body[offset : offset + 4], "big")
        if length < _EVENTSTREAM_MIN_FRAME or offset + length > len(body):
            pieces.append(body[offset:])
            intact = False
            break
        pieces.append(body[offset : offset + length])
        offset += length
    return tuple(pieces), intact
