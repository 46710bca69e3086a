"""The admin API against a real uvicorn: what in-process clients cannot show (streams in flight,
the file watcher, raw request paths). Timing assertions are lower bounds or generous deadlines.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import interaction

BODY = interaction()["request"]["body"]
OLD_EVENTS = [f"data: old {n}\n\n".encode() for n in range(6)]
NEW_EVENTS = [b"data: new\n\n"]
EMPTY = "version: 2\ninteractions: []\n"


def sse(events: list[bytes]) -> dict:
    return interaction(response_body=b"".join(events).decode(), content_type="text/event-stream")


def wait_for(condition, seconds: float = 10.0, poke=None) -> None:
    """Poll ``condition`` until it holds; call ``poke`` every second meanwhile (to repeat a change
    a file watcher may not have been ready for)."""
    deadline = time.monotonic() + seconds
    next_poke = time.monotonic()
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        if poke and time.monotonic() > next_poke:
            poke()
            next_poke = time.monotonic() + 1.0
        time.sleep(0.05)


def test_reload_while_a_stream_is_in_flight(write_cassette, cassette_dir: Path, serve) -> None:
    write_cassette("s", sse(OLD_EVENTS))
    url, _ = serve(cassette_dir, event_interval=0.1)
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url + "/v1/chat/completions", content=BODY) as response:
            pieces = iter(response.iter_raw())
            received = [next(pieces)]
            write_cassette("s", sse(NEW_EVENTS))
            report = client.post(url + "/__admin/reload").json()
            assert report["cassettes"] == 1 and report["load_errors"] == []
            received += list(pieces)
        assert received == OLD_EVENTS  # the stream finished on the index it started with
        assert client.post(url + "/v1/chat/completions", content=BODY).content == b"".join(NEW_EVENTS)


def test_journal_measures_a_stream_until_its_last_event(write_cassette, cassette_dir: Path, serve) -> None:
    write_cassette("s", sse(OLD_EVENTS))
    url, _ = serve(cassette_dir, event_interval=0.05)
    httpx.post(url + "/v1/chat/completions", content=BODY, headers={"X-Cassette-Session": "live"})
    [entry] = httpx.get(url + "/__admin/requests").json()
    assert entry["interaction"] == "s#0" and entry["session"] == "live" and entry["status"] == 200
    assert entry["duration"] >= 0.05 * (len(OLD_EVENTS) - 1) * 0.9


def test_watch_picks_up_a_new_and_a_changed_file(write_cassette, cassette_dir: Path, serve) -> None:
    write_cassette("first", interaction(response_body="first"))
    url, _ = serve(cassette_dir, watch=True, speed=0)

    def names() -> list[str]:
        return [entry["name"] for entry in httpx.get(url + "/__admin/cassettes").json()]

    wait_for(lambda: names() == ["first", "nested/second"],
             poke=lambda: write_cassette("nested/second", interaction('{"q":2}', response_body="second")))
    assert httpx.post(url + "/v1/chat/completions", content='{"q":2}').content == b"second"

    wait_for(lambda: httpx.post(url + "/v1/chat/completions", content=BODY).content == b"changed",
             poke=lambda: write_cassette("first", interaction(response_body="changed")))


class WatcherLog:
    """What the file watcher logged (it runs in the server's thread): each batch of changes it
    saw, and whether it reloaded for it. Tests wait for these definite events, never for a time
    the watcher is supposed to take."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="cassette_server")
        self.caplog = caplog

    def messages(self) -> list[str]:
        return [record.getMessage() for record in list(self.caplog.records) if record.name == "cassette_server"]

    def batches(self, path: Path) -> list[str]:
        """The watcher's messages about batches of changes that name ``path``."""
        return [m for m in self.messages() if m.startswith("Cassette files changed (") and f"{os.sep}{path.name}" in m]

    def reloaded_for(self, path: Path) -> bool:
        """Whether the watcher reloaded for a change of ``path`` and that reload has finished."""
        messages = self.messages()
        batch = next((n for n, m in enumerate(messages) if m in self.batches(path) and m.endswith(": reloading")), None)
        return batch is not None and any(m.startswith("Loaded ") for m in messages[batch + 1 :])

    def settle(self, directory: Path) -> None:
        """Return once the watcher is running and has handled every change made so far. It may
        start a moment after the server, so a file is changed until a reload shows; then a
        marker file is changed once: batches come in order, so once the marker's reload is
        done, nothing older is pending."""
        ready, pokes = directory / "ready.yaml", itertools.count()
        wait_for(lambda: self.reloaded_for(ready), seconds=30,
                 poke=lambda: ready.write_text(f"# poke {next(pokes)}\n{EMPTY}"))
        marker = directory / "settled.yaml"
        marker.write_text(EMPTY)
        wait_for(lambda: self.reloaded_for(marker), seconds=30)


def test_watch_does_not_reload_again_after_a_put(cassette_dir: Path, serve, caplog) -> None:
    """A second reload would rewind the sequence the client has just started."""
    watcher = WatcherLog(caplog)
    url, _ = serve(cassette_dir, watch=True, speed=0)
    watcher.settle(cassette_dir)
    sequence = "\n".join(["version: 2", "interactions:"] + [
        f"- {{id: {n}, request: {{method: POST, url: 'https://x/v1/chat/completions', body: '{{}}'}}, response: {{code: 200, body: '{n}'}}}}"
        for n in range(2)])
    assert httpx.put(url + "/__admin/cassettes/seq", content=sequence).status_code == 201
    assert httpx.post(url + "/v1/chat/completions", content="{}").content == b"0"
    seq = cassette_dir / "seq.yaml"
    wait_for(lambda: watcher.batches(seq), seconds=30)  # the watcher has seen the file PUT wrote: a definite event
    assert [message.endswith("not reloading again") for message in watcher.batches(seq)] == [True]
    assert httpx.post(url + "/v1/chat/completions", content="{}").content == b"1"


def test_a_watched_change_keeps_every_sessions_place(write_cassette, cassette_dir: Path, serve, caplog) -> None:
    watcher = WatcherLog(caplog)
    write_cassette("seq", interaction(response_body="one"), interaction(response_body="two"))
    url, _ = serve(cassette_dir, watch=True, speed=0)
    watcher.settle(cassette_dir)
    assert httpx.post(url + "/v1/chat/completions", content=BODY).content == b"one"
    unrelated = write_cassette("unrelated", interaction('{"q": "unrelated"}'))
    wait_for(lambda: watcher.reloaded_for(unrelated), seconds=30)
    assert httpx.post(url + "/v1/chat/completions", content=BODY).content == b"two"


def test_watch_reloads_for_json_cassettes_only(cassette_dir: Path, serve, caplog) -> None:
    """package.json is no cassette: changing it must not rewind every session's sequences."""
    watcher = WatcherLog(caplog)
    url, _ = serve(cassette_dir, watch=True, speed=0)
    watcher.settle(cassette_dir)
    (cassette_dir / "package.json").write_text('{"name": "tests", "private": true}')
    cassette = {"version": 2, "interactions": [{"id": 0, **interaction('{"q":"json"}', response_body="from json")}]}
    (cassette_dir / "recorded.json").write_text(json.dumps(cassette))
    wait_for(lambda: watcher.reloaded_for(cassette_dir / "recorded.json"), seconds=30)
    assert httpx.post(url + "/v1/chat/completions", content='{"q":"json"}').content == b"from json"
    # package.json was written first: had the watcher let it through, it would be named in this batch or an earlier one
    assert watcher.batches(cassette_dir / "package.json") == []


def test_raw_dot_dot_in_a_put_is_refused(cassette_dir: Path, serve, tmp_path: Path) -> None:
    """As curl --path-as-is would send it: no client-side normalisation of the path."""
    url, _ = serve(cassette_dir)
    parts = urlsplit(url)
    body = b"version: 2\ninteractions: []\n"
    request = (b"PUT /__admin/cassettes/../escaped HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b"cassette name '../escaped'" in reply
    assert not list(tmp_path.rglob("escaped*"))
