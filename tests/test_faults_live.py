"""Faults against a real uvicorn: what reaches the socket (an unterminated chunked stream, a body
shorter than its Content-Length, no answer at all, a stall), the admin API, the header, startup
rules, the journal, and the sequence rule (a fault never uses up a recording).

Timing assertions are lower bounds ("not before S seconds"), with S small.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from server import Settings, create_app
from server.matching.index import Exhausted
from server.replay.faults import parse_spec

from .conftest import interaction, live_server, running_server

EVENTS = [f'data: {{"n":{n}}}\n\n'.encode() for n in range(5)] + [b"data: [DONE]\n\n"]
BODY = interaction()["request"]["body"]
WHOLE = b'{"id":"cmpl-1","choices":[{"message":{"content":"a recorded answer"}}]}'
PATH = "/v1/chat/completions"


def stream_cassette(**extra) -> dict:
    return interaction(response_body=b"".join(EVENTS).decode(), content_type="text/event-stream", **extra)


def whole_cassette(body: bytes = WHOLE, **extra) -> dict:
    return interaction(response_body=body.decode(), **extra)


class Raw:
    """One HTTP/1.1 exchange on a plain socket: the bytes as they came, and when."""

    def __init__(self, url: str, path: str = PATH, body: str = BODY, headers: dict[str, str] | None = None) -> None:
        host, port = url.removeprefix("http://").split(":")
        lines = {"Host": "127.0.0.1", "Content-Type": "application/json", "Content-Length": str(len(body)),
                 "Connection": "close", **(headers or {})}
        request = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines.items()) + "\r\n"
        self.start = time.monotonic()
        self.arrivals: list[tuple[float, bytes]] = []
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(request.encode() + body.encode())
            while piece := sock.recv(65536):  # b"": the server closed the connection
                self.arrivals.append((time.monotonic() - self.start, piece))
        self.closed_after = time.monotonic() - self.start
        self.data = b"".join(piece for _, piece in self.arrivals)
        self.head, _, self.body = self.data.partition(b"\r\n\r\n")

    @property
    def status(self) -> int:
        return int(self.head.split(b" ")[1])

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.encode():
                return value.strip().decode()
        return None

    def chunks(self) -> tuple[list[bytes], bool]:
        """The chunked body's chunks, and whether the terminating zero-length chunk came."""
        rest, chunks = self.body, []
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                return chunks, rest == b"\r\n"
            chunks.append(rest[:size])
            assert rest[size:size + 2] == b"\r\n", "a chunk cut short"
            rest = rest[size + 2:]
        return chunks, False

    def first_body_byte(self) -> float:
        """Seconds from the request to the first byte after the headers."""
        seen = 0
        for arrival, piece in self.arrivals:
            seen += len(piece)
            if seen > len(self.head) + 4:
                return arrival
        raise AssertionError("no body byte came")


@contextmanager
def uvicorn_warnings() -> Iterator[list[logging.LogRecord]]:
    """What uvicorn logs at WARNING and above meanwhile. Its loggers do not propagate to pytest's
    caplog, and a server starting configures them afresh: so enter this once the server runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def post(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(url + PATH, content=BODY, headers=headers or {})


def add(client: httpx.Client, url: str, **rule) -> dict:
    response = client.post(url + "/__admin/faults", json=rule)
    assert response.status_code == 201, response.text
    return response.json()


def journal(client: httpx.Client, url: str) -> list[dict]:
    return client.get(url + "/__admin/requests").json()


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- what reaches the socket ------------------------------------------------------------------


def test_cut_stream_leaves_the_chunked_stream_unterminated(write_cassette, cassette_dir, serve) -> None:
    write_cassette("s", stream_cassette())
    url, _ = serve(cassette_dir, speed=0)
    with uvicorn_warnings() as server_log:
        raw = Raw(url, headers={"X-Replay-Fault": "cut_stream; after_events=3"})
    assert raw.status == 200 and raw.header("transfer-encoding") == "chunked"
    chunks, terminated = raw.chunks()
    assert chunks == EVENTS[:3] and not terminated
    assert raw.closed_after < 3  # closed by the fault, not by the keep-alive timeout
    assert server_log == []  # uvicorn saw a client leave, not an app error


def test_truncate_sends_fewer_bytes_than_the_content_length(write_cassette, cassette_dir, serve) -> None:
    write_cassette("w", whole_cassette())
    url, _ = serve(cassette_dir, speed=0)
    raw = Raw(url, headers={"X-Replay-Fault": "truncate; after_bytes=12"})
    assert raw.status == 200 and raw.header("content-length") == str(len(WHOLE))
    assert raw.body == WHOLE[:12] and raw.closed_after < 3


def test_disconnect_closes_before_any_response(write_cassette, cassette_dir, serve) -> None:
    write_cassette("w", whole_cassette())
    url, _ = serve(cassette_dir, speed=0)
    with uvicorn_warnings() as server_log:
        raw = Raw(url, headers={"X-Replay-Fault": "disconnect"})
    assert raw.data == b"" and raw.closed_after < 3  # no 500, no byte at all
    assert server_log == []


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_every_uvicorn_protocol_closes_without_a_word(write_cassette, cassette_dir, http: str) -> None:
    write_cassette("s", stream_cassette())
    app = create_app(Settings(paths=(cassette_dir,), speed=0))
    with running_server(app, http=http, loop="asyncio") as (url, _), uvicorn_warnings() as server_log:
        assert Raw(url, headers={"X-Replay-Fault": "disconnect"}).data == b""
        assert Raw(url, headers={"X-Replay-Fault": "cut_stream; after_events=2"}).chunks() == (EVENTS[:2], False)
    assert server_log == []


def test_recorded_bytes_are_untouched_when_no_fault_fires(write_cassette, cassette_dir, serve) -> None:
    write_cassette("s", stream_cassette())
    write_cassette("w", whole_cassette(url="https://api.openai.com/v1/responses"))
    url, _ = serve(cassette_dir, speed=0)
    before = [Raw(url).data, Raw(url, path="/v1/responses").data]
    with httpx.Client() as client:
        add(client, url, kind="server_error", path="/v1/embeddings")  # never matches
        add(client, url, kind="truncate", after_bytes=10_000)  # longer than every body: cuts nothing
        add(client, url, kind="cut_stream", after_events=6)  # as many as there are: cuts nothing
        add(client, url, kind="rate_limit", session="another")
        after = [Raw(url).data, Raw(url, path="/v1/responses").data]
        assert after == before
        assert b"".join(Raw(url).chunks()[0]) == b"".join(EVENTS)
        assert [rule["fired"] for rule in client.get(url + "/__admin/faults").json()] == [0, 0, 0, 0]


def test_stall_sends_the_headers_then_nothing_for_its_seconds(write_cassette, cassette_dir, serve) -> None:
    write_cassette("s", stream_cassette())
    url, _ = serve(cassette_dir, speed=0)
    raw = Raw(url, headers={"X-Replay-Fault": "stall; seconds=0.4"})
    assert raw.arrivals[0][0] < 0.3 and raw.arrivals[0][1].startswith(b"HTTP/1.1 200")  # headers on time
    assert raw.first_body_byte() >= 0.4
    chunks, terminated = raw.chunks()
    assert chunks == EVENTS and terminated  # then the whole recorded stream


def test_stall_after_some_events(write_cassette, cassette_dir, serve) -> None:
    write_cassette("s", stream_cassette())
    url, _ = serve(cassette_dir, speed=0)
    raw = Raw(url, headers={"X-Replay-Fault": "stall; seconds=0.4; after_events=2"})
    seen, times = b"", []
    for arrival, piece in raw.arrivals:
        seen += piece
        times.append((arrival, seen.count(b"data: ")))
    before_stall = [t for t, events in times if events <= 2]
    after_stall = [t for t, events in times if events > 2]
    assert after_stall[0] - before_stall[-1] >= 0.35 and after_stall[0] >= 0.4
    assert raw.chunks() == (EVENTS, True)


def test_delay_adds_to_the_time_to_headers(write_cassette, cassette_dir, serve) -> None:
    write_cassette("w", whole_cassette(duration="200ms"))
    url, _ = serve(cassette_dir)
    raw = Raw(url, headers={"X-Replay-Fault": "delay; seconds=0.3"})
    assert raw.arrivals[0][0] >= 0.5 and raw.body == WHOLE


def test_a_client_that_gives_up_on_a_stall_leaves_the_recording_for_its_retry(write_cassette, cassette_dir, serve) -> None:
    write_cassette("w", whole_cassette(), whole_cassette(body=b'{"second":true}'))
    url, _ = serve(cassette_dir, speed=0)
    with httpx.Client(timeout=httpx.Timeout(5, read=0.2)) as client:
        with pytest.raises(httpx.ReadTimeout):
            post(client, url, {"X-Replay-Fault": "stall; seconds=3"})
        wait_for(lambda: journal(client, url))  # the server has seen the client go (an SDK backs off first)
        assert journal(client, url)[0]["outcome"] == "client_left_mid_stream"
        assert post(client, url).content == WHOLE
        assert post(client, url).content == b'{"second":true}'


# --- the sequence rule ------------------------------------------------------------------------


def test_a_fault_never_uses_up_a_recording(write_cassette, cassette_dir, serve) -> None:
    write_cassette("s", stream_cassette(), whole_cassette(body=b'{"second":true}'))
    url, _ = serve(cassette_dir, speed=0, exhausted=Exhausted.ERROR)
    with httpx.Client() as client:
        add(client, url, kind="rate_limit", times=1)
        add(client, url, kind="cut_stream", after_events=1, times=1)
        add(client, url, kind="disconnect", times=1)
        assert post(client, url).status_code == 429
        with pytest.raises(httpx.RemoteProtocolError):
            post(client, url)  # cut
        with pytest.raises(httpx.RemoteProtocolError):
            post(client, url)  # disconnected
        assert post(client, url).content == b"".join(EVENTS)  # recording #0, whole
        assert post(client, url).content == b'{"second":true}'  # then #1
        assert post(client, url).status_code == 404  # --exhausted error: both used, none skipped
        entries = journal(client, url)[::-1]
        assert [(e["status"], e["outcome"], e["fault"], e["id"]) for e in entries] == [
            (429, "replaced_by_fault", {"kind": "rate_limit", "rule": "f1"}, 0),
            (200, "cut_by_fault", {"kind": "cut_stream", "rule": "f2"}, 0),
            (444, "replaced_by_fault", {"kind": "disconnect", "rule": "f3"}, 0),
            (200, "complete", None, 0),
            (200, "complete", None, 1),
            (404, None, None, None),
        ]
        assert entries[1]["pieces_sent"] == 1 and entries[1]["pieces_total"] == len(EVENTS)
        assert client.get(url + "/__admin/unused").json() == []


def test_a_miss_is_answered_as_a_miss_and_spends_nothing(write_cassette, cassette_dir, serve) -> None:
    write_cassette("w", whole_cassette())
    url, _ = serve(cassette_dir, speed=0)
    with httpx.Client() as client:
        add(client, url, kind="rate_limit", times=1)
        miss = client.post(url + PATH, content='{"model":"other"}', headers={"X-Replay-Fault": "server_error"})
        assert miss.status_code == 404 and miss.json()["error"]["code"] == "cassette_miss"
        assert client.get(url + "/__admin/faults").json()[0]["fired"] == 0
        assert post(client, url).status_code == 429


# --- the header -------------------------------------------------------------------------------


def test_the_header_form(write_cassette, cassette_dir, serve) -> None:
    write_cassette("w", whole_cassette())
    url, _ = serve(cassette_dir, speed=0)
    with httpx.Client() as client:
        answer = post(client, url, {"X-Replay-Fault": "rate_limit; retry_after=2"})
        assert answer.status_code == 429 and answer.headers["retry-after"] == "2"
        assert answer.json()["error"]["code"] == "rate_limit_exceeded"
        assert journal(client, url)[0]["fault"] == {"kind": "rate_limit", "rule": "header"}
        assert post(client, url).content == WHOLE  # the header's request did not use the recording


@pytest.mark.parametrize("header, words", [
    ("explode", "x-replay-fault: kind: 'explode' is not a fault kind"),
    ("rate_limit; times=1", "x-replay-fault: times: a filter"),
    ("stall", "x-replay-fault: seconds: required by kind stall"),
])
def test_a_bad_header_is_a_400_and_uses_nothing(write_cassette, cassette_dir, serve, header, words) -> None:
    write_cassette("w", whole_cassette(), whole_cassette(body=b'{"second":true}'))
    url, _ = serve(cassette_dir, speed=0)
    with httpx.Client() as client:
        answer = post(client, url, {"X-Replay-Fault": header})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_request"
        assert words in answer.json()["error"]["message"]
        assert post(client, url).content == WHOLE


# --- the admin API ----------------------------------------------------------------------------


def test_add_list_remove(write_cassette, cassette_dir, serve) -> None:
    write_cassette("w", whole_cassette())
    url, _ = serve(cassette_dir, speed=0)
    with httpx.Client() as client:
        first = add(client, url, kind="server_error", times=2)
        second = add(client, url, kind="status", status=418, path="/v1/*")
        assert (first["id"], first["fired"], first["remaining"], first["source"]) == ("f1", 0, 2, "api")
        post(client, url)
        listed = client.get(url + "/__admin/faults").json()
        assert [(r["id"], r["fired"], r["remaining"]) for r in listed] == [("f1", 1, 1), ("f2", 0, None)]
        removed = client.delete(url + "/__admin/faults/f1")
        assert removed.status_code == 200 and removed.json()["fired"] == 1
        assert post(client, url).status_code == 418
        missing = client.delete(url + "/__admin/faults/f1")
        assert missing.status_code == 404 and "rules held: f2" in missing.json()["error"]["message"]
        assert client.delete(url + "/__admin/faults").json() == {"status": "ok", "removed": 1}
        assert client.get(url + "/__admin/faults").json() == [] and second["id"] == "f2"
        assert post(client, url).content == WHOLE


@pytest.mark.parametrize("body, words", [
    ('{"kind": "rate_limit", "retry_after": "soon"}', "fault rule: retry_after: must be a number"),
    ('{"kind": "cut_stream", "seconds": 1}', "fault rule: seconds: does not apply to kind cut_stream"),
    ('{"kind": "nope"}', "fault rule: kind: 'nope' is not a fault kind"),
    ('[1, 2]', "a fault rule is a JSON object"),
    ('{"kind": ', "the body is not JSON"),
    ('{"kind": "rate_limit", "times": 1e400}', "times: must be a whole number"),
    ('{"kind": ["rate_limit"]}', "kind: ['rate_limit'] is not a fault kind"),
    ('{"kind": "rate_limit", "retry_after": NaN}', "retry_after: must be a number, not nan"),
    ("[" * 30_000 + "]" * 30_000, "the body is not JSON"),
])
def test_bad_rules_are_400s_naming_the_field(write_cassette, cassette_dir, serve, body, words) -> None:
    url, _ = serve(cassette_dir)
    answer = httpx.post(url + "/__admin/faults", content=body)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_request"
    assert words in answer.json()["error"]["message"]


def test_rules_are_bounded(cassette_dir, serve) -> None:
    url, app = serve(cassette_dir)
    app.service.faults.limit = 2  # the real bound is 1,000; the behaviour at it is the same
    with httpx.Client() as client:
        add(client, url, kind="server_error")
        add(client, url, kind="server_error")
        refused = client.post(url + "/__admin/faults", json={"kind": "server_error"})
        assert refused.status_code == 409 and "2 fault rules already" in refused.json()["error"]["message"]
        big = client.post(url + "/__admin/faults", content=b'{"kind": "server_error", "path": "' + b"x" * 70_000 + b'"}')
        assert big.status_code == 413 and "a fault rule is at most 64 KiB" in big.json()["error"]["message"]


def test_reset_clears_rules_all_or_per_session(write_cassette, cassette_dir, serve) -> None:
    write_cassette("w", whole_cassette())
    url, _ = serve(cassette_dir, speed=0)
    with httpx.Client() as client:
        add(client, url, kind="server_error", session="a")
        add(client, url, kind="status", status=418, session="b")
        assert client.post(url + "/__admin/reset", params={"session": "a"}).status_code == 200
        assert [r["session"] for r in client.get(url + "/__admin/faults").json()] == ["b"]
        assert post(client, url, {"X-Cassette-Session": "a"}).status_code == 200
        assert post(client, url, {"X-Cassette-Session": "b"}).status_code == 418
        client.post(url + "/__admin/reset")
        assert client.get(url + "/__admin/faults").json() == []


def test_writes_are_refused_when_exposed_without_a_token(cassette_dir) -> None:
    with live_server(Settings(paths=(cassette_dir,), host="0.0.0.0")) as (url, _), httpx.Client() as client:
        assert client.post(url + "/__admin/faults", json={"kind": "server_error"}).status_code == 403
        assert client.delete(url + "/__admin/faults").status_code == 403
        assert client.get(url + "/__admin/faults").status_code == 200


# --- startup ----------------------------------------------------------------------------------


def test_rules_from_startup_fire_and_come_back_on_reset(write_cassette, cassette_dir: Path, tmp_path: Path) -> None:
    write_cassette("w", whole_cassette())
    faults_file = tmp_path / "faults.json"
    faults_file.write_text(json.dumps([{"kind": "overloaded", "times": 1}]))
    settings = Settings(paths=(cassette_dir,), speed=0, faults=(parse_spec("rate_limit; times=1; path=/v1/chat/*"),),
                        faults_file=faults_file)
    with live_server(settings) as (url, _), httpx.Client() as client:
        listed = client.get(url + "/__admin/faults").json()
        assert [(r["id"], r["kind"], r["source"]) for r in listed] == [("f1", "rate_limit", "startup"),
                                                                     ("f2", "overloaded", "startup")]
        assert [post(client, url).status_code for _ in range(3)] == [429, 503, 200]
        client.post(url + "/__admin/reset")
        assert [post(client, url).status_code for _ in range(3)] == [429, 503, 200]
