"""The summary lines that stand in for an access log."""

from __future__ import annotations

import logging

import pytest

from server import tally
from server.tally import Tally


def test_counts_by_outcome_and_summarises() -> None:
    counts = Tally()
    counts.served, counts.missed, counts.refused = 5, 2, 1
    assert counts.total == 8
    assert counts.summary().startswith("Requests so far: 8 (5 served from recordings, 2 missed, 1 refused)")
    counts.recorded = 3
    assert "3 forwarded to record" in counts.summary()


def test_one_line_every_so_many_requests(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tally, "EVERY", 3)
    counts = Tally()
    logger = logging.getLogger("cassette_server")
    monkeypatch.setattr(logger, "propagate", True)
    with caplog.at_level(logging.INFO, logger="cassette_server"):
        for _ in range(7):
            counts.served += 1
            counts.tick()
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Requests so far")]
    assert [line.split(" (")[0] for line in lines] == ["Requests so far: 3", "Requests so far: 6"]


def test_nothing_to_say_before_any_request(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="cassette_server"):
        Tally().log()
    assert not [r for r in caplog.records if "Requests so far" in r.getMessage()]
