"""The admin API in-process: journal, near misses, unused, reset, reload, PUT, token, errors.

What needs a socket (a reload while a stream is in flight, --watch, reply durations of streams)
is in test_admin_live.py.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import gzip
import hashlib
import json
import logging
import os
import subprocess
import sys
import tracemalloc
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import server.admin.routes
from server import Settings, create_app
from server.journal import Journal, JournalEntry

from .conftest import go_vcr, interaction, on_event_loop

LOCAL = "http://127.0.0.1:8080"  # a loopback-bound server answers admin calls to loopback names only
LONG = "You are a careful assistant. " * 40  # a long system prompt, ~1 200 characters


def chat(question: str, system: str = LONG, model: str = "gpt-4o-mini") -> str:
    return json.dumps({"model": model, "messages": [{"role": "system", "content": system},
                                                     {"role": "user", "content": question}]})


@pytest.fixture
def client(cassette_dir: Path) -> Callable[..., TestClient]:
    """client(**settings) → a TestClient on a fresh app serving ``cassette_dir`` at speed 0."""

    def make(**options) -> TestClient:
        return TestClient(create_app(Settings(paths=(cassette_dir,), speed=0, **options)), base_url=LOCAL)

    return make


def ask(client: TestClient, body: str, session: str | None = None, **headers: str) -> int:
    if session:
        headers["X-Cassette-Session"] = session
    return client.post("/v1/chat/completions", content=body, headers=headers).status_code


def test_a_miss_then_its_near_miss_diff_names_the_exact_json_path(write_cassette, client) -> None:
    write_cassette("chat", interaction(chat("What is 2+2?")), interaction(chat("Name a colour.", system="Be brief.")))
    app = client()
    changed_system = LONG[:-10] + "CHANGED." + LONG[-2:]
    assert ask(app, chat("What is 2+2?", system=changed_system)) == 404
    [entry] = app.get("/__admin/requests/unmatched").json()
    assert entry["matched"] is False and entry["status"] == 404 and entry["error"]["code"] == "cassette_miss"
    closest, other = entry["near_misses"]
    assert closest["interaction"] == "chat#0" and other["interaction"] == "chat#1"
    [difference] = closest["differences"]
    assert difference["where"] == "messages[0].content" and difference["part"] == "body"
    # full values, not cut: a long prompt stays comparable
    assert difference["recorded"] == LONG and difference["received"] == changed_system
    assert "CHANGED" in difference["text"] and "…" in difference["text"]
    assert closest["file"].endswith("chat.yaml") and closest["line"] == 3
    assert len(other["differences"]) == 2  # system prompt and question



def test_the_journal_keeps_a_bounded_part_of_long_prompts(write_cassette, client) -> None:
    huge = "You are a careful assistant. " * 40_000  # ~1.2 MB
    write_cassette("chat", interaction(chat("What is 2+2?", system=huge)))
    app = client()
    changed = huge[:600_000] + "CHANGED" + huge[600_007:]
    assert ask(app, chat("What is 2+2?", system=changed)) == 404  # a warm-up: imports, first allocations
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(10):
            assert ask(app, chat("What is 2+2?", system=changed)) == 404
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 10 * 300_000, kept  # values are cut to 20 000 characters; in full, each miss kept > 2 MB
    [difference] = app.get("/__admin/requests/unmatched?limit=1").json()[0]["near_misses"][0]["differences"]
    assert difference["where"] == "messages[0].content" and "CHANGED" in difference["received"] and "CHANGED" in difference["text"]
    assert len(difference["received"]) <= 20_002 and difference["received_length"] == len(changed)
    assert difference["received_sha256"] == hashlib.sha256(changed.encode()).hexdigest()[:12]


def test_journal_names_the_relaxation_that_found_a_match(write_cassette, client) -> None:
    write_cassette("claude", interaction(chat("hi"), url="https://api.anthropic.com/v1/messages"))
    app = client()
    assert app.post("/messages", content=chat("hi")).status_code == 200  # the AI SDK's path, without /v1
    [entry] = app.get("/__admin/requests").json()
    assert entry["interaction"] == "claude#0" and entry["relaxation"] == "missing-v1"


def test_journal_records_hits_misses_and_errors_newest_first(write_cassette, client) -> None:
    write_cassette("chat", interaction(chat("hi")))
    app = client()
    ask(app, chat("hi"), session="s1")
    ask(app, chat("ho"), session="s2")
    app.post("/__cassette/nope/v1/chat/completions", content="{}")
    app.post("/v1/chat/completions?x=1", content=chat("hi"), headers={"X-Replay-Speed": "fast"})
    entries = app.get("/__admin/requests").json()
    assert [(e["status"], e["matched"]) for e in entries] == [(400, False), (404, False), (404, False), (200, True)]
    bad_speed, unknown, miss, hit = entries
    assert bad_speed["error"]["code"] == "bad_request" and bad_speed["query"] == "x=1"
    assert unknown["error"]["code"] == "unknown_cassette" and unknown["path"] == "/__cassette/nope/v1/chat/completions"
    assert miss["session"] == "s2" and miss["interaction"] is None
    assert hit == {**hit, "session": "s1", "method": "POST", "path": "/v1/chat/completions", "interaction": "chat#0",
                   "cassette": "chat", "id": 0, "repeated": False, "relaxation": None, "error": None}
    assert hit["duration"] >= 0 and hit["time"].endswith("+00:00")
    assert "near_misses" not in hit


def test_journal_filters(write_cassette, client) -> None:
    write_cassette("chat", interaction(chat("hi")))
    app = client()
    for session in ("a", "b", "a"):
        ask(app, chat("hi"), session=session)
    ask(app, chat("nope"), session="a")

    def listed(query: str) -> list[tuple[str, bool]]:
        return [(e["session"], e["matched"]) for e in app.get("/__admin/requests" + query).json()]

    assert listed("?session=a") == [("a", False), ("a", True), ("a", True)]
    assert listed("?matched=true") == [("a", True), ("b", True), ("a", True)]
    assert listed("?matched=false&session=b") == []
    assert listed("?limit=2") == [("a", False), ("a", True)]
    assert [e["session"] for e in app.get("/__admin/requests/unmatched?session=a").json()] == ["a"]


def test_journal_is_bounded_and_can_be_turned_off(write_cassette, client) -> None:
    write_cassette("chat", interaction(chat("hi")))
    small = client(journal_size=2)
    for question in ("one", "two", "three"):
        ask(small, chat(question))
    assert [e["near_misses"][0]["differences"][0]["received"] for e in small.get("/__admin/requests/unmatched").json()] == ["three", "two"]
    off = client(journal_size=0)
    ask(off, chat("hi"))
    assert off.get("/__admin/requests").json() == []


def test_journal_replies_are_paged_by_default(write_cassette, client) -> None:
    write_cassette("chat", interaction(chat("hi")))
    app = client()
    for n in range(150):
        ask(app, chat(f"question {n}"))
    for path in ("/__admin/requests", "/__admin/requests/unmatched"):
        assert len(app.get(path).json()) == 100
        everything = app.get(path + "?limit=1000").json()
        assert len(everything) == 150 and everything[-1]["near_misses" if "unmatched" in path else "path"]


def test_journal_replies_are_encoded_off_the_event_loop(write_cassette, client, monkeypatch) -> None:
    write_cassette("chat", interaction(chat("hi")))
    app = client()
    for question in ("one", "two"):
        ask(app, chat(question))
    on_loop: dict[str, list[bool]] = {"entries": [], "to_json": []}

    def running_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def spy(name: str, original: Callable) -> Callable:
        def called(*args, **kwargs):
            on_loop[name].append(running_loop())
            return original(*args, **kwargs)
        return called

    monkeypatch.setattr(Journal, "entries", spy("entries", Journal.entries))
    monkeypatch.setattr(JournalEntry, "to_json", spy("to_json", JournalEntry.to_json))
    assert len(app.get("/__admin/requests").json()) == 2 and len(app.get("/__admin/requests/unmatched").json()) == 2
    # the journal is read on the loop, where replay adds to it; the entries are encoded in a thread
    assert on_loop == {"entries": [True, True], "to_json": [False] * 4}


def test_listings_walk_the_cassettes_off_the_event_loop(write_cassette, client, monkeypatch) -> None:
    """Listing thousands of interactions took 80-100 ms; on the loop, that held up every stream."""
    write_cassette("chat", interaction(chat("hi")))
    app = client()
    ask(app, chat("hi"))
    on_loop: list[bool] = []

    def spy(original: Callable) -> Callable:
        def called(*args, **kwargs):
            on_loop.append(on_event_loop())
            return original(*args, **kwargs)
        return called

    for name in ("cassette_summary", "interaction_details", "unused"):  # what walks interactions
        monkeypatch.setattr(f"server.admin.routes.{name}", spy(getattr(server.admin.routes, name)))
    assert app.get("/__admin/cassettes").json()[0]["served"] == [{"id": 0, "times": 1}]
    assert app.get("/__admin/cassettes/chat").json()["interactions"][0]["times_served"] == 1
    assert app.get("/__admin/unused?session=other").json()[0]["interaction"] == "chat#0"
    assert app.put("/__admin/cassettes/new", content=go_vcr(interaction())).status_code == 201
    assert on_loop == [False] * 6


def test_put_and_reload_keep_every_sessions_place(write_cassette, client) -> None:
    write_cassette("seq", *[interaction(chat("hi"), response_body=f"answer {n}") for n in range(3)])
    app = client()

    def reply(session: str = "job-1") -> bytes:
        return app.post("/v1/chat/completions", content=chat("hi"), headers={"X-Cassette-Session": session}).content

    assert reply() == b"answer 0"
    assert app.put("/__admin/cassettes/unrelated", content=go_vcr(interaction(chat("other")))).status_code == 201
    assert reply() == b"answer 1"  # was answer 0 again: every session rewound
    assert app.post("/__admin/reload").status_code == 200
    assert [reply(), reply("job-2")] == [b"answer 2", b"answer 0"]
    assert [i["interaction"] for i in app.get("/__admin/unused?session=job-1").json()] == ["unrelated#0"]


def test_near_misses_of_any_json_can_be_listed(write_cassette, client) -> None:
    write_cassette("chat", interaction('{"a": 1, "b": 2}'))
    app = client()
    # NaN makes the body Python's json to parse, which keeps an integer beyond 64 bits whole
    for value in ("[" * 300 + "]" * 300, "[" * 980 + "]" * 980, f"{2**70}, \"c\": NaN", "-1e400", '"cut \\ud83d"'):
        assert ask(app, '{"a": 1, "b": %s}' % value) == 404
    response = app.get("/__admin/requests/unmatched")
    assert response.status_code == 200, response.text  # was a 500: too deep or too big for the encoder

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    entries = json.loads(response.content, parse_constant=refuse)  # strict JSON, as JavaScript reads it
    cut, infinite, big, *deep = [entry["near_misses"][0]["differences"] for entry in entries]
    assert cut[0]["received"] == "cut \\ud83d" and infinite[0]["received"] == "-Infinity"
    assert big[0]["received"] == 2**70 and big[1] == {**big[1], "field": "c", "received": "NaN"}
    assert all("(JSON nested too deeply to show)" in json.dumps(value) for value in deep)


def test_bad_parameters_are_json_errors(client, write_cassette) -> None:
    write_cassette("chat", interaction())
    app = client()
    response = app.get("/__admin/requests?limit=0")
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"
    assert "limit" in response.json()["error"]["message"]
    assert app.get("/__admin/requests?matched=maybe").status_code == 400
    missing = app.get("/__admin/nothing-here")
    assert missing.status_code == 404 and "/__admin/docs" in missing.json()["error"]["message"]
    wrong_method = app.delete("/__admin/reset")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert "takes POST" in wrong_method.json()["error"]["message"]


def test_unused_before_and_after_a_replay(write_cassette, client) -> None:
    write_cassette("a", interaction(chat("one")), interaction(chat("two")))
    write_cassette("b", interaction(chat("three")))
    app = client()

    def unused(query: str = "") -> list[str]:
        return [i["interaction"] for i in app.get("/__admin/unused" + query).json()]

    assert unused() == ["a#0", "a#1", "b#0"]
    ask(app, chat("two"), session="ci-1")
    assert unused() == ["a#0", "b#0"]
    assert unused("?session=ci-1") == ["a#0", "b#0"]
    assert unused("?session=ci-2") == ["a#0", "a#1", "b#0"]
    assert app.get("/__admin/unused?session=ci-2").json()[1]["served"] == {"ci-1": 1}
    assert unused("?cassette=a") == ["a#0"]
    detail = app.get("/__admin/unused?cassette=b").json()[0]
    assert detail["request"]["last_user_message"] == "three" and detail["times_served"] == 0
    unknown = app.get("/__admin/unused?cassette=a2")
    assert unknown.status_code == 404 and "(2 cassettes loaded; the closest names: a)" in unknown.json()["error"]["message"]


def test_reset_one_session_keeps_the_others(write_cassette, client) -> None:
    write_cassette("seq", interaction(chat("hi"), response_body="first"), interaction(chat("hi"), response_body="second"))
    app = client()

    def reply(session: str) -> bytes:
        return app.post("/v1/chat/completions", content=chat("hi"), headers={"X-Cassette-Session": session}).content

    assert [reply("x"), reply("y"), reply("x")] == [b"first", b"first", b"second"]
    assert app.post("/__admin/reset?session=x").json() == {"status": "ok", "session": "x"}
    assert [e["session"] for e in app.get("/__admin/requests").json()] == ["y"]
    assert [reply("x"), reply("y")] == [b"first", b"second"]
    app.post("/__admin/reset")
    assert app.get("/__admin/requests").json() == []
    assert app.get("/__admin/unused").json()[0]["interaction"] == "seq#0"
    assert reply("y") == b"first"


def test_cassettes_list_providers_models_streaming_and_usage(write_cassette, client) -> None:
    write_cassette("mixed", interaction(chat("hi")),
                   interaction('{"contents":[{"parts":[{"text":"hallo"}]}]}',
                               url="https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                               response_body="data: {}\r\n\r\ndata: {}\r\n\r\n", content_type="text/event-stream"))
    write_cassette("broken", "version: 9\ninteractions: []\n")
    app = client()
    ask(app, chat("hi"), session="s")
    ask(app, chat("hi"))
    mixed, broken = app.get("/__admin/cassettes").json()
    assert mixed["providers"] == ["openai", "gemini"] and mixed["models"] == ["gpt-4o-mini", "gemini-2.5-flash"]
    assert mixed["streaming"] is True and mixed["served"] == [{"id": 0, "times": 2}, {"id": 1, "times": 0}]
    assert broken["load_errors"][0]["line"] == 1 and "version: 9" in broken["load_errors"][0]["reason"]


def test_one_cassette_in_detail(write_cassette, client) -> None:
    question = "Please summarise the following very long text for me: " + "lorem ipsum " * 20
    recorded = interaction(chat(question), duration="1.5s",
                           response_body="data: 1\n\ndata: 2\n\ndata: [DONE]\n\n", content_type="text/event-stream")
    recorded["response"]["status"] = "200 Alright"
    write_cassette("team/chat", recorded)
    app = client()
    ask(app, chat(question), session="s")
    detail = app.get("/__admin/cassettes/team/chat").json()
    assert detail["name"] == "team/chat"
    [item] = detail["interactions"]
    assert item["request"]["model"] == "gpt-4o-mini" and item["request"]["stream"] is True
    assert item["request"]["last_user_message"].startswith("Please summarise") and len(item["request"]["last_user_message"]) == 80
    assert (item["status"], item["reason"], item["content_type"], item["events"], item["duration"]) == (
        200, "Alright", "text/event-stream", 3, 1.5)
    assert item["served"] == {"s": 1} and item["times_served"] == 1 and item["line"] == 3
    assert app.get("/__admin/cassettes/team").status_code == 404
    for name in ("team/chat%0A", "team/chat%0D", "team%0Achat"):  # never another cassette
        assert app.get(f"/__admin/cassettes/{name}").json()["error"]["code"] == "unknown_cassette"


def test_reload_keeps_serving_what_loads_and_reports_the_rest(write_cassette, client) -> None:
    write_cassette("a", interaction(chat("one")))
    app = client()
    write_cassette("b", interaction(chat("two")))
    bad = write_cassette("c", "version: 2\ninteractions:\n- id: 0\n  request: [unclosed\n")
    report = app.post("/__admin/reload").json()
    assert report["cassettes"] == 2 and report["interactions"] == 2
    [error] = report["load_errors"]
    assert error["file"] == str(bad) and error["line"] == 5
    assert ask(app, chat("one")) == 200 and ask(app, chat("two")) == 200


def test_put_adds_then_replaces_a_cassette(cassette_dir: Path, client) -> None:
    app = client()
    added = app.put("/__admin/cassettes/team/new", content=go_vcr(interaction(chat("hi"), response_body="v1")))
    assert added.status_code == 201 and added.json()["created"] is True
    assert added.json()["cassette"]["name"] == "team/new" and added.json()["load_errors"] == []
    assert (cassette_dir / "team" / "new.yaml").is_file()
    assert app.post("/v1/chat/completions", content=chat("hi")).content == b"v1"
    replaced = app.put("/__admin/cassettes/team/new", content=go_vcr(interaction(chat("hi"), response_body="v2")))
    assert replaced.status_code == 200 and replaced.json()["created"] is False
    assert app.post("/v1/chat/completions", content=chat("hi")).content == b"v2"
    assert sorted(p.name for p in (cassette_dir / "team").iterdir()) == ["new.yaml"]  # no temporary files left


def test_put_replaces_an_existing_yml_file(cassette_dir: Path, client) -> None:
    (cassette_dir / "old.yml").write_text(go_vcr(interaction(response_body="v1")))
    app = client()
    assert app.put("/__admin/cassettes/old", content=go_vcr(interaction(response_body="v2"))).status_code == 200
    assert sorted(p.name for p in cassette_dir.iterdir()) == ["old.yml"]


def test_put_keeps_a_json_cassette_json(cassette_dir: Path, client) -> None:
    def as_json(response_body: str) -> str:
        return json.dumps({"version": 2, "interactions": [{"id": 0, **interaction(response_body=response_body)}]})

    stored = cassette_dir / "j.json"
    stored.write_text(as_json("v1"))
    app = client()
    refused = app.put("/__admin/cassettes/j", content=go_vcr(interaction(response_body="v2")))
    assert refused.status_code == 409 and "stored as JSON" in refused.json()["error"]["message"]
    assert json.loads(stored.read_text()) == json.loads(as_json("v1"))  # untouched, still served
    assert app.post("/v1/chat/completions", content=interaction()["request"]["body"]).content == b"v1"
    replaced = app.put("/__admin/cassettes/j", content=as_json("v2"))
    assert replaced.status_code == 200 and replaced.json()["cassette"]["file"] == str(stored)
    assert app.post("/v1/chat/completions", content=interaction()["request"]["body"]).content == b"v2"
    assert sorted(p.name for p in cassette_dir.iterdir()) == ["j.json"]


def test_put_of_a_name_loaded_from_another_file_is_a_conflict_that_says_which(cassette_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "shared.yaml").write_text(go_vcr(interaction(response_body="v1")))
    (cassette_dir / "packed.yaml.gz").write_bytes(gzip.compress(go_vcr(interaction(chat("p"))).encode()))
    app = TestClient(create_app(Settings(paths=(cassette_dir, elsewhere / "shared.yaml"), speed=0)), base_url=LOCAL)
    outside = app.put("/__admin/cassettes/shared", content=go_vcr(interaction(response_body="v2")))
    assert outside.status_code == 409
    assert f"already loaded from {elsewhere / 'shared.yaml'}, outside {cassette_dir}" in outside.json()["error"]["message"]
    compressed = app.put("/__admin/cassettes/packed", content=go_vcr(interaction(chat("p"), response_body="v2")))
    message = compressed.json()["error"]["message"]
    assert compressed.status_code == 409 and "packed.yaml.gz, a compressed file, which a PUT does not rewrite" in message
    assert "outside" not in message
    assert sorted(p.name for p in cassette_dir.iterdir()) == ["packed.yaml.gz"]  # nothing written beside it


def test_a_reload_lets_the_old_interactions_go_and_the_journal_still_names_them(write_cassette, client) -> None:
    big = "x" * 2_000_000
    write_cassette("big", interaction(chat("hi"), response_body=big))
    app = client()
    assert app.post("/v1/chat/completions", content=chat("hi")).status_code == 200
    assert app.post("/v1/chat/completions", content=chat("hi there")).status_code == 404  # its near miss is big#0
    [old] = app.app.service.index.by_name["big"].interactions
    gone = weakref.ref(old)
    del old
    write_cassette("big", interaction(chat("hi"), response_body="small now"))
    assert app.post("/__admin/reload").status_code == 200
    gc.collect()
    assert gone() is None  # the journal no longer holds the 2 MB body
    miss, hit = app.get("/__admin/requests").json()
    assert hit["interaction"] == "big#0" and hit["status"] == 200 and miss["status"] == 404
    [miss] = app.get("/__admin/requests/unmatched").json()
    assert miss["near_misses"][0]["interaction"] == "big#0" and "big.yaml:3" in miss["error"]["message"]
    assert app.post("/v1/chat/completions", content=chat("hi")).content == b"small now"


def test_put_validates_before_writing(cassette_dir: Path, client) -> None:
    app = client()
    no_url = "version: 2\ninteractions:\n- id: 0\n  request: {method: POST}\n  response: {code: 200}\n"
    response = app.put("/__admin/cassettes/bad", content=no_url)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "request body:3: interaction 0: request.url is missing" in message and "nothing was written" in message
    assert list(cassette_dir.iterdir()) == []


@pytest.mark.parametrize(("name", "problem"), [
    ("%2E%2E/escaped", "'..' part"),  # the server decodes it: the name is ../escaped
    ("a/..%2F..%2Fescaped", "'..' part"),
    ("%2Fetc/escaped", "absolute path"),
    ("a%5C..%5Cescaped", "backslash"),
    (".hidden/escaped", "starting with '.'"),
    ("escaped.yaml", "extension"),
    ("a//escaped", "empty"),
    ("escaped" + "b" * 250, "longer than 200 bytes"),  # was a 500: the file system refused the name
    ("a/escaped" + "b" * 250, "longer than 200 bytes"),  # was a 409 not_writable
    ("escaped%0A", "control characters"),  # was routed as 'escaped', and written
    ("a%0Aescaped", "control characters"),  # was routed nowhere
    ("escaped%0D", "control characters"),
])
def test_put_refuses_names_that_leave_the_directory(cassette_dir: Path, client, name: str, problem: str) -> None:
    response = client().put(f"/__admin/cassettes/{name}", content=go_vcr(interaction()))
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert message.startswith("cassette name") and problem in message and "use a relative name" in message
    assert not list(cassette_dir.parent.rglob("escaped*")) and list(cassette_dir.iterdir()) == []


def test_put_refuses_a_symlink_out_of_the_directory(cassette_dir: Path, tmp_path: Path, client) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (cassette_dir / "link").symlink_to(outside, target_is_directory=True)
    response = client().put("/__admin/cassettes/link/x", content=go_vcr(interaction()))
    assert response.status_code == 400 and "symbolic link" in response.json()["error"]["message"]
    assert list(outside.iterdir()) == []


def test_put_without_a_cassette_directory_is_a_conflict(write_cassette, cassette_dir: Path) -> None:
    file = write_cassette("only", interaction())
    app = TestClient(create_app(Settings(paths=(file,), speed=0)), base_url=LOCAL)
    response = app.put("/__admin/cassettes/new", content=go_vcr(interaction()))
    assert response.status_code == 409 and "no cassette directory" in response.json()["error"]["message"]


def test_put_onto_a_directory_is_a_json_error_naming_the_path(cassette_dir: Path, client) -> None:
    (cassette_dir / "taken.yaml").mkdir()
    response = client().put("/__admin/cassettes/taken", content=go_vcr(interaction()))
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "not_writable" and str(cassette_dir / "taken.yaml") in error["message"]
    assert "Is a directory" in error["message"] and "PUT under another name" in error["message"]
    assert [p.name for p in cassette_dir.iterdir()] == ["taken.yaml"]  # no temporary file left


@pytest.mark.parametrize(("failure", "advice"), [
    (OSError(errno.EROFS, "Read-only file system"), "mount it read-write"),
    (PermissionError(errno.EACCES, "Permission denied"), f"writable for uid {os.geteuid()}"),
    (OSError(errno.ENOSPC, "No space left on device"), "free some space"),
])
def test_put_that_cannot_write_says_why_and_what_to_do(cassette_dir: Path, client, monkeypatch, failure, advice) -> None:
    app = client()

    def refuse(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr("server.storage.os.replace", refuse)
    response = app.put("/__admin/cassettes/new", content=go_vcr(interaction()))
    assert response.status_code == 409, response.text
    message = response.json()["error"]["message"]
    assert message.startswith(f"cannot write cassette file {cassette_dir / 'new.yaml'}: {failure.strerror}")
    assert advice in message and list(cassette_dir.iterdir()) == []
    assert app.get("/__admin/health").json()["cassettes"] == 0


@pytest.mark.parametrize(("method", "path", "service_method"), [
    ("POST", "/__admin/reset", "reset"), ("POST", "/__admin/reload", "reload"),  # async and threaded routes
])
def test_any_admin_failure_is_a_logged_json_500(client, monkeypatch, caplog, method, path, service_method) -> None:
    app = client()

    def broken(*args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(app.app.service, service_method, broken)
    with caplog.at_level(logging.ERROR, logger="cassette_server"):
        response = app.request(method, path)
    assert response.status_code == 500 and response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "internal_error" and "disk on fire" in error["message"] and path in error["message"]
    [record] = [r for r in caplog.records if r.exc_info]
    assert path in record.getMessage() and record.exc_info[1].args == ("disk on fire",)


def put_raw(app: object, name: str, headers: list[tuple[bytes, bytes]], messages: list[dict]) -> tuple[list[dict], int]:
    """PUT /__admin/cassettes/NAME straight through ASGI, the body as the given ``receive``
    messages (what in-process clients cannot do: they buffer the body first). Returns what was
    sent back and how many messages the server took."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT", "scheme": "http",
             "path": f"/__admin/cassettes/{name}", "raw_path": f"/__admin/cassettes/{name}".encode(), "root_path": "",
             "query_string": b"", "headers": headers, "server": ("test", 80), "client": ("test", 1)}
    sent: list[dict] = []
    taken = 0

    async def receive() -> dict:
        nonlocal taken
        taken += 1
        return messages[taken - 1]

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[operator]
    return sent, taken


def test_a_client_gone_before_its_body_is_no_internal_error(cassette_dir: Path, caplog) -> None:
    app = create_app(Settings(paths=(cassette_dir,)))
    with caplog.at_level(logging.DEBUG, logger="cassette_server"):
        sent, _ = put_raw(app, "x", [(b"content-length", b"100")], [{"type": "http.disconnect"}])
    assert sent == [] and [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert list(cassette_dir.iterdir()) == []


def test_put_bodies_over_the_size_limit_are_a_413(cassette_dir: Path, client) -> None:
    app = client(max_cassette_size=1000)
    big = go_vcr(interaction(response_body="x" * 1000))
    response = app.put("/__admin/cassettes/big", content=big)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"]) == ("too_large", "request_too_large")
    assert f"the body is {len(big)} bytes, more than the 1000" in error["message"] and "--max-cassette-size" in error["message"]
    assert list(cassette_dir.iterdir()) == []
    assert app.put("/__admin/cassettes/small", content=go_vcr(interaction())).status_code == 201


def test_put_refuses_a_body_too_large_before_reading_it(cassette_dir: Path) -> None:
    app = create_app(Settings(paths=(cassette_dir,), max_cassette_size=1000))
    chunk = {"type": "http.request", "body": b"x" * 400, "more_body": True}
    declared, taken = put_raw(app, "big", [(b"content-length", b"60000000")], [chunk] * 10)
    assert declared[0]["status"] == 413 and taken == 0  # Content-Length said so: nothing read
    streamed, taken = put_raw(app, "big", [(b"transfer-encoding", b"chunked")], [chunk] * 10)
    assert streamed[0]["status"] == 413 and taken == 3  # stopped at the chunk that crossed the limit
    assert b"at least 1200 bytes" in streamed[1]["body"] and list(cassette_dir.iterdir()) == []


def test_token_required_when_set(write_cassette, client) -> None:
    write_cassette("chat", interaction())
    app = client(admin_token="s3cret")
    assert app.get("/__admin/health").status_code == 200
    for method, path in [("GET", "/__admin/cassettes"), ("GET", "/__admin/requests"), ("POST", "/__admin/reset"),
                         ("POST", "/__admin/reload"), ("PUT", "/__admin/cassettes/x"), ("GET", "/__admin/unused")]:
        missing = app.request(method, path)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        error = missing.json()["error"]
        assert error["code"] == "unauthorized" and "Authorization: Bearer" in error["message"]
    wrong = app.get("/__admin/cassettes", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong token" in wrong.json()["error"]["message"]
    assert app.get("/__admin/cassettes", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert app.get("/__admin/cassettes", headers={"Authorization": "bearer s3cret"}).status_code == 200
    assert app.get("/__admin/cassettes", headers={"Authorization": "Bearer "}).status_code == 401
    # the replay endpoint is not an admin call
    assert ask(app, interaction()["request"]["body"]) == 200


def test_docs_load_without_the_token_and_offer_to_send_it(client) -> None:
    app = client(admin_token="s3cret")
    # a browser cannot send the token to load the page and the document it describes
    docs = app.get("/__admin/docs")
    assert docs.status_code == 200 and "/__admin/openapi.json" in docs.text
    schema = app.get("/__admin/openapi.json").json()
    assert schema["components"]["securitySchemes"]["adminToken"] == {**schema["components"]["securitySchemes"]["adminToken"],
                                                                    "type": "http", "scheme": "bearer"}
    assert schema["security"] == [{"adminToken": []}] and schema["paths"]["/__admin/health"]["get"]["security"] == []
    assert "s3cret" not in json.dumps(schema)
    assert app.get("/__admin/openapi.json").json() == schema  # built once
    plain = client().get("/__admin/openapi.json").json()  # without a token there is nothing to send
    assert "security" not in plain and "securitySchemes" not in plain.get("components", {})


def test_the_docs_page_can_send_a_cassette_to_put(write_cassette, client) -> None:
    # Swagger UI at /__admin/docs offers a body field only for what the OpenAPI document declares
    write_cassette("chat", interaction())
    app = client()
    put = app.get("/__admin/openapi.json").json()["paths"]["/__admin/cassettes/{name}"]["put"]
    assert put["requestBody"]["required"] is True
    assert {"application/yaml", "application/json"} <= set(put["requestBody"]["content"])
    assert put["requestBody"]["content"]["application/yaml"]["schema"]["type"] == "string"
    sent = app.put("/__admin/cassettes/team/new", content=go_vcr(interaction()), headers={"Content-Type": "application/yaml"})
    assert sent.status_code == 201 and sent.json()["cassette"]["name"] == "team/new"


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_health_answers_head_for_probes_that_send_no_get(client, token: str | None) -> None:
    probe = client(admin_token=token).head("/__admin/health")  # wget --spider, curl -I
    assert probe.status_code == 200 and probe.content == b""


@pytest.mark.parametrize("token", [None, "s3cret"])
def test_the_openapi_document_declares_bad_parameters_as_they_are_answered(client, token: str | None) -> None:
    app = client(admin_token=token)
    schema = app.get("/__admin/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], f"{method.upper()} {path}"
    assert "400" in schema["paths"]["/__admin/requests"]["get"]["responses"]
    assert "ValidationError" not in json.dumps(schema)
    bad = app.get("/__admin/requests?limit=0", headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("token", ["", "  "])
def test_an_empty_token_is_refused_not_ignored(cassette_dir: Path, token: str) -> None:
    with pytest.raises(ValueError, match="admin token is empty"):
        create_app(Settings(paths=(cassette_dir,), admin_token=token))


def test_the_token_is_compared_without_surrounding_whitespace(client) -> None:
    app = client(admin_token=" s3cret\n")
    assert app.get("/__admin/cassettes", headers={"Authorization": "Bearer s3cret"}).status_code == 200


_FIRST_CALLS = """
import asyncio, json, sys
from pathlib import Path
from server import Settings, create_app

app = create_app(Settings(paths=(Path(sys.argv[1]),)))

async def call(method, path):
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        sent.append(message)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "headers": [(b"host", b"127.0.0.1:8080")],
             "scheme": "http", "root_path": "", "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5000)}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])

for method, path in (("GET", "/__admin/health"), ("HEAD", "/__admin/health"), ("GET", "/__admin/cassettes")):
    status, body = asyncio.run(call(method, path))
    print(json.dumps([method, path, status, body.decode(), "fastapi" in sys.modules, "httpx" in sys.modules]))
"""


def test_health_is_answered_without_importing_fastapi_which_comes_with_the_first_other_admin_call(
        write_cassette, cassette_dir: Path, tmp_path: Path) -> None:
    write_cassette("weather", interaction())
    script = tmp_path / "first_calls.py"
    script.write_text(_FIRST_CALLS)
    done = subprocess.run([sys.executable, str(script), str(cassette_dir)], capture_output=True, text=True,
                          timeout=60, check=True)
    health, probe, listing = (json.loads(line) for line in done.stdout.splitlines())
    assert health[2] == 200 and json.loads(health[3])["interactions"] == 1
    assert health[4:] == [False, False]  # neither FastAPI nor the recorder's httpx: a replaying server never needs them
    assert probe[2:] == [200, "", False, False]
    assert listing[2] == 200 and json.loads(listing[3])[0]["name"] == "weather" and listing[4] is True
