"""Recorded response → what is sent: headers, encoding, body kind, offsets."""

from __future__ import annotations

import gzip

from server.models import BodyKind
from server.responses import body_is_encoded, build_response


def build(headers: list[tuple[str, str]], body: bytes, **extra: object):
    return build_response(status=200, reason=None, headers=headers, body=body, duration=0.1, **extra)  # type: ignore[arg-type]


def test_hop_by_hop_dropped_and_length_recomputed() -> None:
    response = build(
        [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked"), ("Connection", "keep-alive"),
         ("Content-Length", "999"), ("X-Request-Id", "req_1"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
        b'{"a":1}',
    )
    assert response.headers == (
        (b"content-type", b"application/json"),
        (b"x-request-id", b"req_1"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"content-length", b"7"),
    )
    assert response.reason == "OK"


def test_streams_have_no_content_length() -> None:
    response = build([("Content-Type", "text/event-stream")], b"data: 1\n\n")
    assert response.kind is BodyKind.SSE
    assert all(name != b"content-length" for name, _ in response.headers)


def test_content_encoding_kept_only_for_encoded_bodies() -> None:
    compressed = gzip.compress(b'{"a":1}')
    kept = build([("Content-Encoding", "gzip")], compressed)
    dropped = build([("Content-Encoding", "gzip")], b'{"a":1}')
    assert (b"content-encoding", b"gzip") in kept.headers and kept.body == compressed
    assert all(name != b"content-encoding" for name, _ in dropped.headers)
    assert "dropped" in dropped.notes[0]


def test_body_is_encoded() -> None:
    assert body_is_encoded("gzip", gzip.compress(b"x"))
    assert not body_is_encoded("gzip", b"plain")
    assert body_is_encoded("br", b"\x8b\x02\x80\xff\xfe")  # not UTF-8: trusted
    assert not body_is_encoded("br", b'{"decoded": true}')
    assert not body_is_encoded("gzip", b"")


def test_sse_detected_without_content_type() -> None:
    assert build([], b"data: {}\n\ndata: [DONE]\n\n").kind is BodyKind.SSE
    assert build([], b'{"x": 1}').kind is BodyKind.WHOLE


def test_eventstream_kind() -> None:
    response = build([("Content-Type", "application/vnd.amazon.eventstream")], b"\x00\x00\x00\x10" + b"\x00" * 12)
    assert response.kind is BodyKind.EVENTSTREAM and len(response.chunks) == 1


def test_event_offsets_validated() -> None:
    body = b"data: 1\n\ndata: 2\n\n"
    headers = [("Content-Type", "text/event-stream")]
    assert build(headers, body, event_offsets=[0.0, 0.5]).event_offsets == (0.0, 0.5)
    wrong_count = build(headers, body, event_offsets=[0.0])
    assert wrong_count.event_offsets is None and "1 event offsets for 2 events" in wrong_count.notes[0]
    assert build(headers, body, event_offsets=[0.5, 0.1]).event_offsets is None


def test_non_latin1_header_values_survive() -> None:
    response = build([("X-Note", "café ☕")], b"")
    assert (b"x-note", "café ☕".encode("utf-8")) in response.headers


def test_headers_that_cannot_be_sent_are_dropped_with_a_note() -> None:
    response = build([("X-Good", "fine\tvalue"), ("X-Bad", "line\nbreak"), ("Bad Name", "v")], b"")
    assert response.headers == ((b"x-good", b"fine\tvalue"), (b"content-length", b"0"))
    assert len(response.notes) == 2 and all("not a valid HTTP header" in note for note in response.notes)


def test_no_content_statuses_have_no_content_length() -> None:
    for status in (204, 304):
        response = build_response(status=status, reason=None, headers=[("ETag", '"x"')], body=b"", duration=0)
        assert response.headers == ((b"etag", b'"x"'),)
