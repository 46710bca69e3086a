"""Event boundaries never change a byte."""

from __future__ import annotations

import struct
import zlib

import pytest

from server.framing import looks_like_sse, split_eventstream, split_sse


@pytest.mark.parametrize(
    "body, pieces",
    [
        (b"data: a\n\ndata: b\n\n", [b"data: a\n\n", b"data: b\n\n"]),
        (b"data: a\r\n\r\ndata: b\r\n\r\n", [b"data: a\r\n\r\n", b"data: b\r\n\r\n"]),
        (b"data: a\r\rdata: b\r\r", [b"data: a\r\r", b"data: b\r\r"]),
        (b"event: x\ndata: a\n\n\n\ndata: b", [b"event: x\ndata: a\n\n\n\n", b"data: b"]),
        (b": comment\n\ndata: [DONE]\n\n", [b": comment\n\n", b"data: [DONE]\n\n"]),
        (b"data: one line\r\ndata: same event\r\n\r\n", [b"data: one line\r\ndata: same event\r\n\r\n"]),
        (b"", []),
    ],
)
def test_split_sse(body: bytes, pieces: list[bytes]) -> None:
    assert list(split_sse(body)) == pieces
    assert b"".join(split_sse(body)) == body


def test_crlf_is_one_line_ending_not_a_blank_line() -> None:
    assert split_sse(b"data: a\r\ndata: b\r\n") == (b"data: a\r\ndata: b\r\n",)


def test_looks_like_sse() -> None:
    assert looks_like_sse(b"data: {}\n\n")
    assert looks_like_sse(b"event: ping\ndata: {}\n\n")
    assert looks_like_sse(b": keep-alive\n\n")
    assert not looks_like_sse(b'{"data": 1}\n\n')
    assert not looks_like_sse(b"data: no blank line yet\n")


def frame(payload: bytes) -> bytes:
    """A real AWS event-stream frame (no headers) with valid CRCs."""
    total = 16 + len(payload)
    prelude = struct.pack(">II", total, 0)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    return prelude + payload + struct.pack(">I", zlib.crc32(prelude + payload))


def test_split_eventstream_frames() -> None:
    frames = [frame(b'{"bytes":"a"}'), frame(b""), frame(b'{"bytes":"bc"}')]
    pieces, intact = split_eventstream(b"".join(frames))
    assert intact and list(pieces) == frames


def test_broken_eventstream_keeps_every_byte() -> None:
    body = frame(b"ok") + b"\x00\x00\xff\xffgarbage"
    pieces, intact = split_eventstream(body)
    assert not intact
    assert b"".join(pieces) == body and len(pieces) == 2
