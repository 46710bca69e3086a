"""Sessions as a test runner uses them: the ``/__session/ID/`` URL prefix (the header's form for
clients that only take a base URL), options a session sets for itself (speed, record mode,
replacing its cassette), and its refused requests kept apart from the journal."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from server import Settings, create_app
from server.errors import BadRequest, Conflict
from server.record import RecordMode
from server.service import CassetteService

from .conftest import go_vcr, interaction
from .recording import recording
from .standin import KEY, StandIn, answer

LOCAL = "http://127.0.0.1:8080"
AUTH = {"Authorization": f"Bearer {KEY}"}


def chat(question: str) -> dict[str, object]:
    return {"model": "gpt-standin", "messages": [{"role": "user", "content": question}]}


def body(question: str) -> str:
    return httpx.Request("POST", "/", json=chat(question)).read().decode()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """`polling`: one request recorded twice with two answers (a sequence); `slow`: a recorded
    answer whose headers came after 30 s."""
    (tmp_path / "polling.yaml").write_text(go_vcr(
        interaction(body("again"), response_body='{"n":0}'), interaction(body("again"), response_body='{"n":1}')))
    (tmp_path / "slow.yaml").write_text(go_vcr(interaction(body("slow"), response_body='{"slow":true}',
                                                           duration="30s")))
    return tmp_path


def client(folder: Path, **options: object) -> TestClient:
    return TestClient(create_app(Settings(paths=(folder,), **{"speed": 0, **options})), base_url=LOCAL)


def ask(app: TestClient, url: str, question: str = "again", **headers: str) -> httpx.Response:
    return app.post(url, content=body(question), headers=headers)


def test_the_session_prefix_is_the_session_header(folder: Path) -> None:
    app = client(folder)
    first = ask(app, "/__session/job-1/v1/chat/completions").json()
    header = ask(app, "/v1/chat/completions", **{"X-Cassette-Session": "job-1"}).json()
    other = ask(app, "/__session/job-2/__cassette/polling/v1/chat/completions").json()
    both = ask(app, "/__session/job-2/v1/chat/completions", **{"X-Cassette-Session": "job-2"}).json()
    assert (first, header, other, both) == ({"n": 0}, {"n": 1}, {"n": 0}, {"n": 1})
    sessions = [entry["session"] for entry in app.get("/__admin/requests").json()]
    assert sessions == ["job-2", "job-2", "job-1", "job-1"]


def test_a_session_prefix_that_names_no_session_or_another_than_the_header_is_refused(folder: Path) -> None:
    app = client(folder)
    empty = ask(app, "/__session//v1/chat/completions")
    clash = ask(app, "/__session/a/v1/chat/completions", **{"X-Cassette-Session": "b"})
    assert empty.status_code == clash.status_code == 400
    assert "names no session" in empty.json()["error"]["message"]
    assert "'a'" in clash.json()["error"]["message"] and "'b'" in clash.json()["error"]["message"]
    assert ask(app, "/v1/chat/completions").json() == {"n": 0}  # nothing was taken


def test_a_session_replays_at_its_own_speed_and_the_header_still_wins(folder: Path) -> None:
    app = client(folder, speed=1)  # the recording waits 30 s at the server's speed
    app.app.service.configure_session("fast", speed=0)
    app.app.service.configure_session("crawling", speed=0.001)  # 30 000 s for the same recording
    started = time.monotonic()
    fast = ask(app, "/__session/fast/v1/chat/completions", "slow")
    header = ask(app, "/__session/crawling/v1/chat/completions", "slow", **{"X-Replay-Speed": "0"})
    assert fast.json() == header.json() == {"slow": True}
    assert time.monotonic() - started < 10


def test_options_are_checked_and_bounded(folder: Path) -> None:
    service = CassetteService(Settings(paths=(folder,), max_sessions=2))
    with pytest.raises(Conflict, match="started without recording"):
        service.configure_session("a", record=RecordMode.MISS)
    with pytest.raises(BadRequest, match="replace"):
        service.configure_session("a", replace=True)
    with pytest.raises(BadRequest, match="speed"):
        service.configure_session("a", speed=0.0000001)
    service.configure_session("a", record=RecordMode.OFF)
    service.configure_session("b", speed=2)
    service.configure_session("b", speed=3)  # in place of its own
    with pytest.raises(Conflict, match="--max-sessions"):
        service.configure_session("c")
    service.reset("a")  # a session's reset forgets its options too
    service.configure_session("c")
    assert sorted(service.session_options) == ["b", "c"]


def test_a_configured_session_keeps_its_refusals_when_the_journal_keeps_nothing(folder: Path) -> None:
    app = client(folder, journal_size=0)
    options = app.app.service.configure_session("job")
    for question in ("nope", "nor this"):
        assert ask(app, "/__session/job/v1/chat/completions", question).status_code == 404
    unknown = ask(app, "/__session/job/__cassette/absent/v1/chat/completions")
    ask(app, "/__session/other/v1/chat/completions", "not kept")
    assert options.refused_count == 3 and app.get("/__admin/requests").json() == []
    first, _, last = options.refused
    assert first.request == "POST /__session/job/v1/chat/completions"
    assert (first.status, first.code) == (404, "cassette_miss") and "received \"nope\"" in first.message
    assert last.code == "unknown_cassette" == unknown.json()["error"]["code"]


def test_session_options_by_the_admin_api(folder: Path) -> None:
    app = client(folder)
    put = app.put("/__admin/sessions/job-7", json={"speed": 0, "record": "off"})
    assert put.status_code == 200
    assert put.json() == {"session": "job-7", "record": "off", "speed": 0, "replace": False, "refused": 0}
    ask(app, "/__session/job-7/v1/chat/completions", "nope")
    assert app.get("/__admin/sessions/job-7").json()["refused"] == 1
    assert [item["session"] for item in app.get("/__admin/sessions").json()] == ["job-7"]
    refused = [app.put("/__admin/sessions/x", content=text) for text in
               ('{"speed": "fast"}', '{"record": "sometimes"}', '{"colour": 1}', "[]", "{")]
    assert [response.status_code for response in refused] == [400] * 5
    assert "speed: must be a number" in refused[0].json()["error"]["message"]
    assert "colour: not a session option" in refused[2].json()["error"]["message"]
    assert app.put("/__admin/sessions/x", json={"record": "miss"}).status_code == 409  # this server does not record
    assert app.delete("/__admin/sessions/job-7").json()["session"] == "job-7"
    assert app.get("/__admin/sessions/job-7").status_code == 404
    app.put("/__admin/sessions/job-8", json={})
    assert app.post("/__admin/reset").status_code == 200 and app.get("/__admin/sessions").json() == []


def test_session_options_are_an_admin_write_a_server_exposed_without_a_token_refuses(folder: Path) -> None:
    exposed = TestClient(create_app(Settings(paths=(folder,), host="0.0.0.0")), base_url="http://10.0.0.7:8080")
    assert exposed.put("/__admin/sessions/job", json={"speed": 0}).status_code == 403
    assert exposed.delete("/__admin/sessions/job").status_code == 403
    assert exposed.get("/__admin/sessions").json() == []  # reads stay open


def test_each_session_chooses_what_a_recording_server_forwards(folder: Path) -> None:
    standin = StandIn()
    with recording(standin, folder, paths=(folder,), record=RecordMode.MISS, speed=0) as (url, app, _):
        service = app.service
        service.configure_session("replays", record=RecordMode.OFF)
        service.configure_session("records-all", record=RecordMode.ALL)
        miss = httpx.post(f"{url}/__session/replays/v1/chat/completions", json=chat("new"), headers=AUTH)
        assert miss.status_code == 404 and standin.requests == []  # not forwarded: the session replays only
        hit = httpx.post(f"{url}/__session/records-all/__cassette/polling/v1/chat/completions", json=chat("again"),
                         headers=AUTH)
        assert hit.json()["choices"][0]["message"]["content"] == answer("again")  # forwarded though recorded
        default = httpx.post(f"{url}/v1/chat/completions", json=chat("new"), headers=AUTH)
        assert default.status_code == 200 and len(standin.requests) == 2  # the server's own mode: a miss recorded
    assert (folder / "polling.yaml").read_text().count("- id:") == 3  # appended to


def test_a_replacing_session_replaces_its_cassette_at_its_first_recording_only(folder: Path) -> None:
    standin = StandIn()
    polling = folder / "polling.yaml"
    before = polling.read_bytes()
    with recording(standin, folder, paths=(folder,), record=RecordMode.MISS, speed=0) as (url, app, _):
        service = app.service
        service.configure_session("records-nothing", record=RecordMode.ALL, replace=True)
        assert polling.read_bytes() == before  # nothing recorded, nothing replaced
        service.configure_session("again", record=RecordMode.ALL, replace=True)
        for question in ("first", "second"):
            answered = httpx.post(f"{url}/__session/again/__cassette/polling/v1/chat/completions",
                                  json=chat(question), headers=AUTH)
            assert answered.status_code == 200
        service.configure_session("replays", record=RecordMode.OFF)
        replayed = [httpx.post(f"{url}/__session/replays/__cassette/polling/v1/chat/completions", json=chat(q))
                    for q in ("first", "second", "again")]
    assert [response.status_code for response in replayed] == [200, 200, 404]
    text = polling.read_text()
    assert text.count("- id:") == 2 and "first" in text and "second" in text and '{"n":0}' not in text
    assert json.loads(replayed[0].content)["choices"][0]["message"]["content"] == answer("first")
