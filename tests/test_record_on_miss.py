"""`serve --record-on-miss`: hits are replayed and never reach the upstream; a miss is forwarded
once, recorded, and replayed from then on. Recording into cassettes that exist (go-vcr written
by hand, vcrpy written by vcrpy) keeps every old interaction replaying byte for byte, and vcrpy
still loads and replays the file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import vcr

from server import Settings
from server.checks import check_paths
from server.matching.keys import MatchRules
from server.record import RecordMode

from .conftest import go_vcr, interaction, live_server, running
from .recording import recording
from .standin import KEY, StandIn, answer

AUTH = {"Authorization": f"Bearer {KEY}"}
RECORDED_BODY = b'{"id":"from-the-cassette","choices":[{"message":{"content":"recorded long ago"}}]}'


def chat(question: str, **extra: object) -> dict[str, object]:
    return {"model": "gpt-standin", "messages": [{"role": "user", "content": question}], **extra}


def body_of(request: dict[str, object]) -> bytes:
    return httpx.Request("POST", "/", json=request).read()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A go-vcr cassette written by hand, `existing`: one recorded chat."""
    (tmp_path / "existing.yaml").write_text(go_vcr(interaction(body_of(chat("old question")).decode(),
                                                               response_body=RECORDED_BODY.decode())))
    return tmp_path


def test_a_hit_is_replayed_and_a_miss_is_recorded_once_then_replayed(folder: Path) -> None:
    standin = StandIn()
    with recording(standin, folder, paths=(folder,), record=RecordMode.MISS, speed=0) as (url, app, _):
        hit = httpx.post(f"{url}/v1/chat/completions", json=chat("old question"), headers=AUTH)
        assert hit.content == RECORDED_BODY and standin.requests == []
        missed = httpx.post(f"{url}/v1/chat/completions", json=chat("new question"), headers=AUTH)
        assert missed.json()["choices"][0]["message"]["content"] == answer("new question")
        assert standin.count("/v1/chat/completions") == 1
        for _ in range(3):
            again = httpx.post(f"{url}/v1/chat/completions", json=chat("new question"), headers=AUTH)
            assert again.content == missed.content
        assert standin.count("/v1/chat/completions") == 1  # replayed, never forwarded again
        entries = app.service.journal.entries()
    assert [entry.recorded is not None for entry in reversed(entries)] == [False, True, False, False, False]
    assert entries[0].interaction is not None and entries[0].interaction.label == "recorded#0"
    assert (folder / "recorded.yaml").is_file()  # a new cassette, beside the ones served
    assert check_paths([folder], MatchRules()).findings == ()


def test_a_recorded_stream_replays_with_its_sequence_counted_as_served(folder: Path) -> None:
    standin = StandIn()
    with recording(standin, folder, paths=(folder,), record=RecordMode.MISS, speed=0) as (url, app, _):
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat("stream me", stream=True),
                          headers={**AUTH, "X-Cassette-Session": "job-1"}) as first:
            recorded = first.read()
        replayed = httpx.post(f"{url}/v1/chat/completions", json=chat("stream me", stream=True),
                              headers={**AUTH, "X-Cassette-Session": "job-1"})
        unused = httpx.get(f"{url}/__admin/unused", params={"session": "job-1", "cassette": "recorded"}).json()
    assert replayed.content == recorded and standin.count("/v1/chat/completions") == 1
    assert unused == []  # the recorded interaction answered the request that recorded it


def test_recording_into_an_existing_go_vcr_cassette_keeps_its_interactions(folder: Path) -> None:
    standin = StandIn()
    file = folder / "existing.yaml"
    with recording(standin, folder, paths=(folder,), record=RecordMode.MISS, speed=0) as (url, _, _):
        new = httpx.post(f"{url}/v1/chat/completions", json=chat("appended"), headers={**AUTH, "X-Cassette": "existing"})
    assert new.status_code == 200 and not (folder / "recorded.yaml").exists()
    text = file.read_text()
    assert text.count("- id:") == 2 and "id: 1" in text
    with live_server(Settings(paths=(folder,), speed=0)) as (url, _):
        old = httpx.post(f"{url}/__cassette/existing/v1/chat/completions", json=chat("old question"))
        appended = httpx.post(f"{url}/__cassette/existing/v1/chat/completions", json=chat("appended"))
    assert old.content == RECORDED_BODY and appended.content == new.content


def vcrpy_cassette(folder: Path, upstream: str) -> Path:
    """A cassette vcrpy itself records from the stand-in: a JSON answer (gzip, stored as binary)
    and a stream."""
    file = folder / "by-vcrpy.yaml"
    with vcr.VCR(record_mode="all").use_cassette(str(file)), httpx.Client(base_url=upstream, headers=AUTH) as client:
        client.post("/v1/chat/completions", json=chat("vcrpy one"))
        client.post("/v1/chat/completions", json=chat("vcrpy two", stream=True))
    return file


def test_recording_into_a_vcrpy_cassette_keeps_it_loadable_by_vcrpy(tmp_path: Path) -> None:
    standin = StandIn()
    with running(standin.app()) as upstream:
        file = vcrpy_cassette(tmp_path, upstream)
        before = file.read_bytes()
        with live_server(Settings(paths=(tmp_path,), speed=0)) as (url, _):
            old = [httpx.post(f"{url}/v1/chat/completions", json=chat(q, **extra)).content
                   for q, extra in (("vcrpy one", {}), ("vcrpy two", {"stream": True}))]
        with recording(standin, tmp_path, paths=(tmp_path,), record=RecordMode.MISS, speed=0,
                       upstream=upstream) as (url, _, _):
            new = httpx.post(f"{url}/v1/chat/completions", json=chat("appended"),
                             headers={**AUTH, "X-Cassette": "by-vcrpy"})
    assert new.status_code == 200 and file.read_bytes() != before
    with live_server(Settings(paths=(tmp_path,), speed=0)) as (url, _):
        assert [httpx.post(f"{url}/v1/chat/completions", json=chat(q, **extra)).content
                for q, extra in (("vcrpy one", {}), ("vcrpy two", {"stream": True}))] == old
        assert httpx.post(f"{url}/v1/chat/completions", json=chat("appended")).content == new.content
    # vcrpy replays the appended file (its default matching: method and URL, in recorded order)
    requests_before = len(standin.requests)
    with vcr.VCR(record_mode="none").use_cassette(str(file)) as cassette, httpx.Client(base_url=upstream) as client:
        replayed = [client.post("/v1/chat/completions", json=chat(q, **extra))
                    for q, extra in (("vcrpy one", {}), ("vcrpy two", {"stream": True}), ("appended", {}))]
        assert cassette.all_played
    assert [response.content for response in replayed] == [*old, new.content]
    assert json.loads(replayed[2].content)["choices"][0]["message"]["content"] == answer("appended")
    assert len(standin.requests) == requests_before


def test_recording_does_not_rewind_the_sequences_being_replayed(tmp_path: Path) -> None:
    polls = [interaction(None, method="GET", url="https://api.openai.com/v1/batches/b1",
                         response_body=json.dumps({"status": status})) for status in ("queued", "running", "done")]
    (tmp_path / "polling.yaml").write_text(go_vcr(*polls))
    session = {"X-Cassette-Session": "poller"}
    with recording(StandIn(), tmp_path, paths=(tmp_path,), record=RecordMode.MISS, speed=0) as (url, _, _):
        first = httpx.get(f"{url}/v1/batches/b1", headers=session).json()["status"]
        recorded = httpx.post(f"{url}/v1/chat/completions", json=chat("meanwhile"), headers={**AUTH, **session})
        rest = [httpx.get(f"{url}/v1/batches/b1", headers=session).json()["status"] for _ in range(3)]
    assert recorded.status_code == 200
    assert [first, *rest] == ["queued", "running", "done", "done"]


def test_watch_does_not_reload_what_recording_wrote(tmp_path: Path) -> None:
    """A reload would rewind every sequence; the file the recorder wrote is served already."""
    with recording(StandIn(), tmp_path, paths=(tmp_path,), record=RecordMode.MISS, speed=0, watch=True) as (url, app, _):
        time.sleep(0.5)  # the watcher is up
        assert httpx.post(f"{url}/v1/chat/completions", json=chat("watched"), headers=AUTH).status_code == 200
        served = app.service.loaded
        time.sleep(2.5)  # longer than the watcher's debounce
        assert app.service.loaded is served
        (tmp_path / "other.yaml").write_text(go_vcr(interaction()))  # other changes still reload
        deadline = time.monotonic() + 10
        while app.service.loaded is served and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "other" in app.service.index.by_name and "recorded" in app.service.index.by_name
