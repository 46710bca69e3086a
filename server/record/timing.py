"""Per-event timing of a recorded stream, from when its chunks arrived.

An event is there when its last byte is: each event's offset is the arrival of the chunk
that held its last byte, counted from the response headers, in seconds rounded to the
microsecond (the file stays readable and replays exactly as measured).
"""

from __future__ import annotations

from collections.abc import Sequence


def event_offsets(pieces: Sequence[bytes], chunks: Sequence[tuple[int, int]], headers_ns: int) -> tuple[float, ...]:
    """``pieces`` concatenate to the body; ``chunks`` are (length, arrival in ns) in order, their
    lengths adding up to the body's; ``headers_ns`` is when the headers arrived (same clock)."""
    offsets = []
    position = 0  # which chunk holds the current piece's last byte
    chunk_end = chunks[0][0] if chunks else 0  # body offset just past that chunk
    end = 0
    for piece in pieces:
        end += len(piece)
        while chunk_end < end and position + 1 < len(chunks):
            position += 1
            chunk_end += chunks[position][0]
        arrived = chunks[position][1] if chunks else headers_ns
        offsets.append(round(max(0, arrived - headers_ns) / 1e9, 6))
    return tuple(offsets)
