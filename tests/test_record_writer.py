"""Writing recorded exchanges: go-vcr's and vcrpy's layout, appending to cassettes that exist
(hand-written, vcrpy's YAML and JSON) without changing what they replay, deliberate repeats,
concurrent writers, and refusals that leave the file as it was."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from server.checks import check_paths
from server.formats import govcr
from server.loader import load_file
from server.matching.keys import MatchRules
from server.models import Cassette, Exchange
from server.record.timing import event_offsets
from server.record.writer import CassetteWriter, RecordingFailed

SSE = b'data: {"n":1}\n\ndata: {"n":2}\n\ndata: [DONE]\n\n'


def exchange(body: bytes = b'{"ok":true}', *, request: bytes = b'{"q":1}', url: str = "https://api.openai.com/v1/chat",
             content_type: str = "application/json", offsets: tuple[float, ...] | None = None) -> Exchange:
    return Exchange(
        method="POST", url=url, request_proto="HTTP/1.1",
        request_headers=(("content-type", "application/json"), ("user-agent", "test/1"), ("anthropic-beta", "x")),
        request_body=request, status=200, reason="OK", response_proto="HTTP/2.0",
        response_headers=(("x-request-id", "req_1"), ("content-type", content_type), ("vary", "a"), ("vary", "b")),
        response_body=body, content_length=None, chunked=False, decoded=True, duration_ns=1_234_567_891,
        event_offsets=offsets,
    )


def writer(directory: Path, fmt: str = "go-vcr", loaded: dict[str, str] | None = None,
           max_size: int = 64 << 20) -> CassetteWriter:
    return CassetteWriter(directory=directory, new_format=fmt, rules=MatchRules(), loaded_file=(loaded or {}).get,
                          max_size=max_size)


def append(target: CassetteWriter, name: str, item: Exchange) -> Cassette:
    published: list[Cassette] = []
    target.append(name, item, published.append)
    return published[0]


def test_go_vcr_interactions_are_written_as_go_vcr_marshals_them(tmp_path: Path) -> None:
    item = exchange(SSE, url="https://generativelanguage.googleapis.com/v1beta/models/m:streamGenerateContent?alt=sse&"
                    "key=REDACTED", content_type="text/event-stream", offsets=(0.0, 0.25, 0.5))
    cassette = append(writer(tmp_path), "chat", item)
    text = (tmp_path / "chat.yaml").read_text()
    data = yaml.safe_load(text)
    [raw] = data["interactions"]
    assert text.startswith("---\nversion: 2\n")
    assert list(raw) == ["id", "request", "response"]
    assert list(raw["request"]) == ["proto", "proto_major", "proto_minor", "content_length", "host", "body", "form",
                                    "headers", "url", "method"]
    assert list(raw["response"]) == ["proto", "proto_major", "proto_minor", "content_length", "uncompressed", "body",
                                     "headers", "status", "code", "duration", "event_offsets"]
    assert raw["request"]["form"] == {"alt": ["sse"], "key": ["REDACTED"]}
    assert list(raw["request"]["headers"]) == ["Anthropic-Beta", "Content-Type", "User-Agent"]
    assert raw["response"]["headers"] == {"Content-Type": ["text/event-stream"], "Vary": ["a", "b"],
                                          "X-Request-Id": ["req_1"]}
    assert raw["response"]["duration"] == "1.234567891s" and raw["response"]["status"] == "200 OK"
    assert raw["response"]["proto"] == "HTTP/2.0" and raw["response"]["content_length"] == -1
    assert "event_offsets: [0.0, 0.25, 0.5]" in text and "body: |" in text  # readable
    [interaction] = cassette.interactions
    assert interaction.response.body == SSE and interaction.response.event_offsets == (0.0, 0.25, 0.5)
    assert interaction.response.duration == pytest.approx(1.234567891)


def test_empty_request_bodies_and_forms_are_left_out_as_go_omits_them(tmp_path: Path) -> None:
    append(writer(tmp_path), "get", exchange(request=b""))
    [raw] = yaml.safe_load((tmp_path / "get.yaml").read_text())["interactions"]
    assert "body" not in raw["request"] and "form" not in raw["request"] and raw["request"]["content_length"] == 0


@pytest.mark.parametrize(("method", "status", "sent", "written"), [
    ("POST", 200, 11, 11), ("POST", 200, None, -1), ("DELETE", 204, None, 0), ("GET", 304, None, 0),
    ("HEAD", 200, 1024, 1024), ("HEAD", 200, None, -1),
])
def test_response_content_length_is_what_go_reports(tmp_path: Path, method: str, status: int, sent: int | None,
                                                    written: int) -> None:
    """Go's transport: 0 for answers without a body (1xx, 204, 304), the header for HEAD, -1 unknown."""
    item = dataclasses.replace(exchange(b"" if status in (204, 304) or method == "HEAD" else b'{"ok":true}'),
                               method=method, status=status, content_length=sent, decoded=False)
    append(writer(tmp_path), "c", item)
    [raw] = yaml.safe_load((tmp_path / "c.yaml").read_text())["interactions"]
    assert raw["response"]["content_length"] == written


def test_bodies_that_are_not_utf8_are_written_as_binary(tmp_path: Path) -> None:
    body = bytes(range(256))
    cassette = append(writer(tmp_path), "bin", exchange(body, content_type="application/octet-stream"))
    assert "body: !!binary" in (tmp_path / "bin.yaml").read_text()
    assert cassette.interactions[0].response.body == body


def test_vcrpy_interactions_are_written_as_vcrpy_saves_them(tmp_path: Path) -> None:
    append(writer(tmp_path, "vcrpy"), "v", exchange())
    data = yaml.safe_load((tmp_path / "v.yaml").read_text())
    assert list(data) == ["interactions", "version"] and data["version"] == 1
    [raw] = data["interactions"]
    assert list(raw["request"]) == ["body", "headers", "method", "uri"]
    assert list(raw["response"]) == ["body", "headers", "status"]
    assert raw["response"]["status"] == {"code": 200, "message": "OK"}
    assert raw["response"]["headers"]["vary"] == ["a", "b"] and raw["response"]["body"] == {"string": '{"ok":true}'}


HAND_WRITTEN = """# a cassette someone wrote by hand
version: 2
interactions:
  - id: 3   # ids need not start at 0
    request: {method: post, url: 'https://api.openai.com/v1/chat/completions', body: '{"a": 1}'}
    response: &ok
      code: 200
      headers: {Content-Type: [application/json]}
      body: '{"first": true}'
      duration: 1.5s
  - id: 7
    request:
      method: POST
      url: https://api.openai.com/v1/chat/completions
      body: '{"a": 2}'
    response: *ok
"""


def test_appending_keeps_what_every_existing_interaction_replays(tmp_path: Path) -> None:
    file = tmp_path / "hand.yaml"
    file.write_text(HAND_WRITTEN)
    before = load_file(file, name="hand")
    after = append(writer(tmp_path, "vcrpy", {"hand": str(file)}), "hand", exchange())
    assert [i.id for i in after.interactions] == [3, 7, 8]  # the file's own format (go-vcr), the next id
    for was, now in zip(before.interactions, after.interactions):
        assert (was.request, was.response) == (now.request, now.response)
    assert load_file(file, name="hand").interactions[-1].response.body == b'{"ok":true}'


def test_a_vcrpy_json_cassette_stays_json(tmp_path: Path) -> None:
    file = tmp_path / "j.json"
    original = {"interactions": [{"request": {"method": "GET", "uri": "https://x.test/v1/models", "body": None,
                                              "headers": {}},
                                  "response": {"status": {"code": 200, "message": "OK"}, "headers": {},
                                               "body": {"string": "caf\u00e9"}}}], "version": 1}
    file.write_text(json.dumps(original, indent=4))
    append(writer(tmp_path, "go-vcr", {"j": str(file)}), "j", exchange())
    data = json.loads(file.read_text())
    assert data["interactions"][0] == original["interactions"][0] and len(data["interactions"]) == 2
    assert "uri" in data["interactions"][1]["request"]  # vcrpy's layout
    with pytest.raises(RecordingFailed, match="binary body needs a YAML cassette"):
        append(writer(tmp_path, "go-vcr", {"j": str(file)}), "j", exchange(b"\xff\xfe"))
    assert len(json.loads(file.read_text())["interactions"]) == 2


def test_a_file_that_does_not_load_is_left_alone(tmp_path: Path) -> None:
    file = tmp_path / "broken.yaml"
    file.write_text("version: 2\ninteractions: [\n")
    with pytest.raises(RecordingFailed, match="fix the file"):
        append(writer(tmp_path), "broken", exchange())
    assert file.read_text() == "version: 2\ninteractions: [\n"


def test_a_file_that_cannot_be_written_is_a_failure_saying_why(tmp_path: Path) -> None:
    (tmp_path / "in-the-way").write_text("a file, not a folder")
    with pytest.raises(RecordingFailed, match="cannot write cassette file"):
        append(writer(tmp_path), "in-the-way/chat", exchange())


@pytest.mark.parametrize("fmt", ["go-vcr", "vcrpy"])
def test_a_cassette_is_never_written_larger_than_the_server_loads(tmp_path: Path, fmt: str) -> None:
    target = writer(tmp_path, fmt, max_size=8000)
    append(target, "big", exchange(b"a" * 3000))
    append(target, "big", exchange(b"b" * 3000, request=b'{"q":2}'))
    before = (tmp_path / "big.yaml").read_bytes()
    with pytest.raises(RecordingFailed, match="--max-cassette-size"):
        append(target, "big", exchange(b"c" * 3000, request=b'{"q":3}'))
    assert (tmp_path / "big.yaml").read_bytes() == before
    assert len(load_file(tmp_path / "big.yaml", name="big", max_size=8000).interactions) == 2


def test_a_request_recorded_again_in_one_run_is_a_deliberate_sequence(tmp_path: Path) -> None:
    first = writer(tmp_path)
    append(first, "poll", exchange(b'{"status":"running"}'))
    append(first, "poll", exchange(b'{"status":"done"}'))
    data = yaml.safe_load((tmp_path / "poll.yaml").read_text())
    assert [item.get("deliberate_repeat") for item in data["interactions"]] == [None, True]
    assert check_paths([tmp_path], MatchRules()).findings == ()
    # a later run appending the same request again is a second take, which check reports
    append(writer(tmp_path), "poll", exchange(b'{"status":"again"}'))
    [finding] = check_paths([tmp_path], MatchRules()).findings
    assert finding.kind == "duplicate"


def test_concurrent_appends_all_land_with_distinct_ids(tmp_path: Path) -> None:
    target = writer(tmp_path)
    errors: list[BaseException] = []

    def record(number: int) -> None:
        try:
            append(target, "busy", exchange(request=json.dumps({"n": number}).encode()))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=record, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    cassette = load_file(tmp_path / "busy.yaml", name="busy")
    assert [i.id for i in cassette.interactions] == list(range(20))
    assert sorted(json.loads(i.request.body)["n"] for i in cassette.interactions) == list(range(20))


def test_event_offsets_are_the_arrival_of_each_events_last_byte() -> None:
    pieces = [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]
    # chunks: the first event and half the second, the rest of the second, the third
    chunks = [(13, 1_100_000_000), (5, 1_300_000_000), (9, 1_700_000_000)]
    assert event_offsets(pieces, chunks, headers_ns=1_000_000_000) == (0.1, 0.3, 0.7)
    assert event_offsets([b""], [], headers_ns=5) == (0.0,)


@pytest.mark.parametrize(("nanoseconds", "text"), [
    (0, "0s"), (999, "999ns"), (1_500, "1.5µs"), (1_000_000, "1ms"), (488_971_083, "488.971083ms"),
    (2_459_145_959, "2.459145959s"), (61_500_000_000, "1m1.5s"), (3_600_000_000_000, "1h0m0s"),
])
def test_durations_are_printed_as_go_prints_them(nanoseconds: int, text: str) -> None:
    assert govcr.go_duration(nanoseconds) == text


def test_header_names_and_map_keys_follow_go() -> None:
    assert govcr.canonical_header_name("x-goog-api-client") == "X-Goog-Api-Client"
    assert govcr.canonical_header_name("weird name") == "weird name"
    assert govcr.go_yaml_order(["b", "a10", "a9", "A", "a-b"]) == ["A", "a-b", "a9", "a10", "b"]


def test_later_appends_add_text_and_read_back_as_the_whole_file_does(tmp_path: Path) -> None:
    """After its first write, the writer appends each interaction as text: what it publishes must
    be what loading the whole file gives, also after bodies that end the YAML document (`...`)."""
    target = writer(tmp_path)
    bodies = [SSE, b'{"a":1}', SSE + b"\n\n", b"\xff\xfe binary", b"x\r\n\r\n", SSE]
    published = []
    for number, body in enumerate(bodies):
        offsets = (0.0, 0.5, 1.0) if body == SSE else None
        item = exchange(body, request=json.dumps({"n": number}).encode(), offsets=offsets,
                        content_type="text/event-stream" if offsets else "application/octet-stream")
        published.append(append(target, "long", item))
    text = (tmp_path / "long.yaml").read_text(encoding="utf-8", errors="replace")
    assert text.count("\n...\n") <= 1 and text.count("---") == 1
    loaded = load_file(tmp_path / "long.yaml", name="long")
    for was, now in zip(published[-1].interactions, loaded.interactions, strict=True):
        assert (was.id, was.request, was.response, was.line) == (now.id, now.request, now.response, now.line)
    assert [i.response.body for i in loaded.interactions] == bodies


def test_a_file_changed_by_someone_else_is_read_again_before_appending(tmp_path: Path) -> None:
    target = writer(tmp_path)
    append(target, "shared", exchange(b'{"first":1}'))
    file = tmp_path / "shared.yaml"
    file.write_text(file.read_text().replace('{"first":1}', '{"edited":1}'))  # a hand edit in between
    cassette = append(target, "shared", exchange(b'{"second":2}', request=b'{"q":2}'))
    assert [i.response.body for i in cassette.interactions] == [b'{"edited":1}', b'{"second":2}']
    assert [i.response.body for i in load_file(file, name="shared").interactions] == [b'{"edited":1}', b'{"second":2}']


_WRITER_PROCESS = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.test_record_writer import append, exchange, writer
target = writer(Path(sys.argv[1]))
for n in range(25):
    append(target, "shared", exchange(request=f'{{"q":"{sys.argv[2]}-{n}"}}'.encode()))
"""


def test_two_processes_recording_into_one_cassette_lose_nothing(tmp_path: Path) -> None:
    """Two servers (or pytest-xdist workers) writing one cassette: each reads the file as the
    other left it, so every interaction is there once, under its own id."""
    root = str(Path(__file__).resolve().parent.parent)
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER_PROCESS, str(tmp_path), name, root]) for name in "ab"]
    assert [process.wait(timeout=120) for process in writers] == [0, 0]
    cassette = load_file(tmp_path / "shared.yaml", name="shared")
    bodies = sorted(interaction.request.body.decode() for interaction in cassette.interactions)
    assert bodies == sorted(f'{{"q":"{name}-{n}"}}' for name in "ab" for n in range(25))
    assert sorted(interaction.id for interaction in cassette.interactions) == list(range(50))
