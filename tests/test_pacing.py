from __future__ import annotations

import pytest

from server.replay.pacing import Pacing
from server.responses import build_response


def sse(offsets=None):
    return build_response(status=200, reason=None, headers=[("Content-Type", "text/event-stream")],
                          body=b"data: 1\n\ndata: 2\n\ndata: 3\n\n", duration=2.0, event_offsets=offsets)


def test_recorded_speed() -> None:
    pacing = Pacing(speed=1, event_interval=0.05)
    assert pacing.header_delay(sse()) == 2.0
    assert [pacing.chunk_offset(sse(), i) for i in range(3)] == pytest.approx([0, 0.05, 0.10])


def test_recorded_offsets_win_over_the_interval() -> None:
    response = sse([0.0, 0.3, 0.31])
    assert [Pacing(1, 0.05).chunk_offset(response, i) for i in range(3)] == [0.0, 0.3, 0.31]


def test_speed_scales_every_wait() -> None:
    response = sse([0.0, 0.3, 0.4])
    fast = Pacing(speed=2, event_interval=0.05)
    assert fast.header_delay(response) == 1.0
    assert fast.chunk_offset(response, 2) == pytest.approx(0.2)


def test_speed_zero_never_waits() -> None:
    pacing = Pacing(speed=0, event_interval=0.05)
    assert pacing.header_delay(sse([0, 1, 2])) == 0
    assert pacing.chunk_offset(sse([0, 1, 2]), 2) == 0


def test_waits_between_pieces_only_when_one_is_due_after_the_headers() -> None:
    assert Pacing(speed=1, event_interval=0.05).waits_between(sse())
    assert Pacing(speed=1, event_interval=0.05).waits_between(sse([0, 0, 0.01]))
    assert not Pacing(speed=1, event_interval=0.05).waits_between(sse([0, 0, 0]))  # recorded offsets win
    assert not Pacing(speed=1, event_interval=0).waits_between(sse())
    assert not Pacing(speed=0, event_interval=0.05).waits_between(sse([0, 1, 2]))
    single = build_response(status=200, reason=None, headers=[("Content-Type", "text/event-stream")],
                            body=b"data: 1\n\n", duration=0)
    assert not Pacing(speed=1, event_interval=0.05).waits_between(single)  # the first piece goes at once
