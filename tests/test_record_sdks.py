"""Record through the server with the official SDKs (OpenAI chat, Anthropic messages, Gemini
generate_content; streamed and not) against a stand-in provider, then replay the file with a
fresh server at speed 1: the same bytes, the recorded gaps, no secret on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from server import Settings
from server.checks import check_paths
from server.matching.keys import MatchRules

from .conftest import live_server
from .recording import SDK_CALLS, STREAMED, Arrival, recording, sdk_call
from .standin import COOKIE, EVENTS, GAP, HEADER_DELAY, KEY, ORGANIZATION, StandIn, answer

# Timing bounds: loose enough for a loaded 2-core machine shared by several test runs (one late
# event makes the next gap short), tight enough to tell pacing (gaps of GAP, 0.2 s) from none
# (gaps of a millisecond).
TOLERANCE = 0.1
GAP_TOLERANCE = 0.12


class Recorded:
    def __init__(self, folder: Path, standin: StandIn, calls: dict[str, tuple[Any, Arrival]]) -> None:
        self.folder = folder
        self.file = folder / "recorded.yaml"
        self.standin = standin
        self.calls = calls
        self.data = yaml.safe_load(self.file.read_text(encoding="utf-8"))

    def response(self, name: str) -> dict[str, Any]:
        return self.data["interactions"][list(SDK_CALLS).index(name)]["response"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """Every SDK call once, through a `record` server, in order (ids 0 to 5)."""
    folder = tmp_path_factory.mktemp("recorded")
    standin = StandIn()
    with recording(standin, folder) as (url, _, _):
        calls = {name: sdk_call(name, url, KEY) for name in SDK_CALLS}
    return Recorded(folder, standin, calls)


@pytest.fixture(scope="module")
def replayed(recorded: Recorded) -> Iterator[dict[str, tuple[Any, Arrival]]]:
    """The same calls against a fresh server replaying the file at speed 1 (another key)."""
    before = len(recorded.standin.requests)
    with live_server(Settings(paths=(recorded.folder,), speed=1)) as (url, app):
        assert app.service.loaded.result.errors == []
        yield {name: sdk_call(name, url, "another-key") for name in SDK_CALLS}
    assert len(recorded.standin.requests) == before  # replay never reaches the upstream


def test_the_sdks_got_the_providers_answers_while_recording(recorded: Recorded) -> None:
    assert recorded.calls["openai"][0] == answer("chat")
    assert "".join(part or "" for part in recorded.calls["openai-stream"][0]) == answer("chat stream")
    assert recorded.calls["anthropic"][0] == answer("message")
    assert "".join(recorded.calls["anthropic-stream"][0]) == answer("message stream")
    assert recorded.calls["gemini"][0] == answer("generate")
    assert "".join(recorded.calls["gemini-stream"][0]) == answer("generate stream")


def test_the_client_got_the_upstreams_bytes_decoded(recorded: Recorded) -> None:
    for position, (name, (_, arrival)) in enumerate(recorded.calls.items()):
        assert arrival.body == recorded.standin.sent[position], name


def test_streams_are_passed_on_as_they_arrive(recorded: Recorded) -> None:
    """The first event reaches the client long before the upstream's last one."""
    for name in STREAMED:
        times = recorded.calls[name][1].event_times()
        assert times[-1] - times[0] >= (len(times) - 1) * GAP * 0.7, (name, times)


def test_the_file_is_go_vcr_version_2_with_the_recorded_timing(recorded: Recorded) -> None:
    assert recorded.file.read_text(encoding="utf-8").startswith("---\nversion: 2\ninteractions:\n- id: 0\n")
    assert [item["id"] for item in recorded.data["interactions"]] == [0, 1, 2, 3, 4, 5]
    for name in SDK_CALLS:
        response = recorded.response(name)
        assert list(response)[:3] == ["proto", "proto_major", "proto_minor"]
        assert response["duration"].endswith("ms") or response["duration"].endswith("s")
        if name in STREAMED:
            offsets = response["event_offsets"]
            assert all(later - earlier >= GAP - GAP_TOLERANCE for earlier, later in zip(offsets, offsets[1:])), offsets
            assert all(offset >= number * GAP - TOLERANCE for number, offset in enumerate(offsets)), offsets
            assert "Content-Encoding" not in response["headers"] and "uncompressed" not in response
        else:
            assert "event_offsets" not in response
            assert response["uncompressed"] is True and "Content-Encoding" not in response["headers"]  # stored decoded


def test_no_secret_reaches_the_file(recorded: Recorded) -> None:
    text = recorded.file.read_text(encoding="utf-8")
    for secret in (KEY, COOKIE.split("=", 1)[1], ORGANIZATION):
        assert secret not in text
    assert "Set-Cookie" not in text and "Authorization" not in text and "X-Goog-Api-Key" not in text
    assert "Openai-Organization:\n      - REDACTED" in text


def test_check_finds_nothing_wrong(recorded: Recorded) -> None:
    report = check_paths([recorded.folder], MatchRules())
    assert report.findings == ()


def test_replay_gives_the_same_answers_and_bytes(recorded: Recorded, replayed: dict[str, tuple[Any, Arrival]]) -> None:
    for name in SDK_CALLS:
        assert replayed[name][0] == recorded.calls[name][0], name
        assert replayed[name][1].body == recorded.calls[name][1].body, name


def test_replay_keeps_the_recorded_gaps(recorded: Recorded, replayed: dict[str, tuple[Any, Arrival]]) -> None:
    for name in STREAMED:
        offsets = recorded.response(name)["event_offsets"]
        times = replayed[name][1].event_times()
        assert len(times) == len(offsets) >= EVENTS
        for position in range(1, len(times)):
            recorded_gap = offsets[position] - offsets[position - 1]
            assert times[position] - times[position - 1] >= recorded_gap - GAP_TOLERANCE, (name, position, times, offsets)
        assert all(time >= offset - TOLERANCE for time, offset in zip(times, offsets)), (name, times, offsets)


def test_replay_waits_the_recorded_time_to_headers(replayed: dict[str, tuple[Any, Arrival]]) -> None:
    for name, (_, arrival) in replayed.items():
        assert arrival.headers - arrival.started >= HEADER_DELAY - TOLERANCE, name
