"""`--format vcrpy`: a cassette vcrpy itself loads and replays (httpx, record_mode none), byte for
byte, and that the server replays with the recorded per-event timing."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import vcr
import yaml

from server import Settings
from server.checks import check_paths
from server.matching.keys import MatchRules

from .conftest import live_server, running
from .recording import recording
from .standin import BINARY, GAP, KEY, StandIn

AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"model": "gpt-standin", "messages": [{"role": "user", "content": "vcrpy format"}]}


def conversation(client: httpx.Client) -> list[httpx.Response]:
    return [
        client.post("/v1/chat/completions", json=CHAT),
        client.post("/v1/chat/completions", json={**CHAT, "stream": True}),
        client.get("/v1/files/file-1/content"),
        client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer wrong"}),
    ]


def test_vcrpy_loads_and_replays_what_was_recorded_in_its_format(tmp_path: Path) -> None:
    standin = StandIn()
    with running(standin.app()) as upstream:
        with recording(standin, tmp_path, format="vcrpy", record_errors=True, upstream=upstream) as (url, _, _):
            with httpx.Client(base_url=url, headers=AUTH) as client:
                recorded = conversation(client)
        file = tmp_path / "recorded.yaml"
        data = yaml.safe_load(file.read_text())
        assert data["version"] == 1 and all("uri" in item["request"] for item in data["interactions"])
        assert isinstance(data["interactions"][2]["response"]["body"]["string"], bytes)  # !!binary
        assert [r.status_code for r in recorded] == [200, 200, 200, 401] and recorded[2].content == BINARY
        assert check_paths([tmp_path], MatchRules()).findings == ()
        forwarded = len(standin.requests)
        with vcr.VCR(record_mode="none").use_cassette(str(file)) as cassette, \
                httpx.Client(base_url=upstream, headers=AUTH) as client:
            replayed = conversation(client)
            assert cassette.all_played
        assert len(standin.requests) == forwarded  # vcrpy answered, not the stand-in
    assert [(r.status_code, r.content) for r in replayed] == [(r.status_code, r.content) for r in recorded]
    assert replayed[1].headers["content-type"].startswith("text/event-stream")


def test_the_server_replays_the_vcrpy_file_with_the_recorded_event_gaps(tmp_path: Path) -> None:
    with recording(StandIn(), tmp_path, format="vcrpy") as (url, _, _):
        recorded = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH)
    [item] = yaml.safe_load((tmp_path / "recorded.yaml").read_text())["interactions"]
    offsets = item["response"]["event_offsets"]
    assert len(offsets) == recorded.text.count("\n\n") and offsets[-1] >= (len(offsets) - 1) * GAP * 0.8
    with live_server(Settings(paths=(tmp_path,), speed=1)) as (url, _):
        started = time.monotonic()
        replayed = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, "stream": True})
        took = time.monotonic() - started
    assert replayed.content == recorded.content and took >= offsets[-1] - 0.05
