"""vcrpy cassettes as real suites keep them: every body shape, untidy fields, JSON, old tags."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest

from server.loader import load_paths
from server.models import BodyKind

PLAIN = """\
interactions:
- request:
    body: '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    headers:
      Content-Type:
      - application/json
    method: POST
    uri: https://api.openai.com/v1/chat/completions?trace=1
  response:
    body:
      string: '{"id": "chatcmpl-1", "choices": []}'
    headers:
      Content-Type:
      - application/json
      Transfer-Encoding:
      - chunked
    status:
      code: 201
      message: Created
version: 1
"""


def load_one(path: Path):
    result = load_paths([path])
    assert result.errors == [], [str(e) for e in result.errors]
    [cassette] = result.cassettes
    return cassette


def test_plain_vcrpy_cassette(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(PLAIN)
    cassette = load_one(path)
    assert cassette.format == "vcrpy v1"
    [item] = cassette.interactions
    assert item.id == 0 and item.line == 2
    assert (item.request.method, item.request.path, item.request.query) == ("POST", "/v1/chat/completions", "trace=1")
    assert item.request.header("content-type") == "application/json"
    assert item.response.status == 201 and item.response.reason == "Created"
    assert item.response.body == b'{"id": "chatcmpl-1", "choices": []}'
    assert item.response.duration == 0.0
    assert (b"transfer-encoding", b"chunked") not in item.response.headers


def test_untidy_cassette(tmp_path: Path) -> None:
    """Lower-case method, no request body key, null body, no response headers (SSE inferred),
    a recorded 500, and the same GET recorded three times (polling)."""
    text = """\
version: 1
interactions:
- request: {method: post, uri: 'https://api.anthropic.com/v1/messages'}
  response:
    status: {code: 200, message: OK}
    body: {string: "event: message_start\\ndata: {}\\n\\nevent: message_stop\\ndata: {}\\n\\n"}
- request: {method: get, uri: 'https://api.openai.com/v1/batches/b1', body: null}
  response: {status: {code: 200, message: OK}, headers: {}, body: {string: '{"status":"in_progress"}'}}
- request: {method: get, uri: 'https://api.openai.com/v1/batches/b1', body: null}
  response: {status: {code: 200, message: OK}, headers: {}, body: {string: '{"status":"in_progress"}'}}
- request: {method: get, uri: 'https://api.openai.com/v1/batches/b1', body: null}
  response: {status: {code: 200, message: OK}, headers: {}, body: {string: '{"status":"completed"}'}}
- request: {method: DELETE, uri: 'https://api.openai.com/v1/files/f1', body: ''}
  response: {status: {code: 500, message: Internal Server Error}, body: {string: null}}
"""
    path = tmp_path / "untidy.yaml"
    path.write_text(text)
    first, *polls, failed = load_one(path).interactions
    assert first.request.method == "POST" and first.request.body == b""
    assert first.response.kind is BodyKind.SSE and len(first.response.chunks) == 2
    assert [p.request.method for p in polls] == ["GET"] * 3
    assert [p.response.body for p in polls][-1] == b'{"status":"completed"}'
    assert [p.line for p in polls] == [7, 9, 11]
    assert failed.response.status == 500 and failed.response.body == b""


def test_gzip_body_is_kept_compressed_with_its_header(tmp_path: Path) -> None:
    compressed = gzip.compress(b'{"ok": true}')
    text = f"""\
interactions:
- request: {{method: GET, uri: 'https://example.com/v1/models', body: null, headers: {{}}}}
  response:
    body: {{string: !!binary {base64.b64encode(compressed).decode()}}}
    headers: {{Content-Encoding: [gzip], Content-Type: [application/json]}}
    status: {{code: 200, message: OK}}
version: 1
"""
    path = tmp_path / "gzip.yaml"
    path.write_text(text)
    [item] = load_one(path).interactions
    assert item.response.body == compressed
    assert (b"content-encoding", b"gzip") in item.response.headers
    assert (b"content-length", str(len(compressed)).encode()) in item.response.headers


def test_content_encoding_left_on_a_decoded_body_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "stale.yaml"
    path.write_text(PLAIN.replace("      Transfer-Encoding:\n      - chunked\n", "      Content-Encoding:\n      - gzip\n"))
    [item] = load_one(path).interactions
    assert all(name != b"content-encoding" for name, _ in item.response.headers)
    assert "not encoded" in item.response.notes[0]


def test_parsed_body_variant(tmp_path: Path) -> None:
    """pydantic-ai's serializer: JSON bodies as YAML mappings under `parsed_body`, replayed as
    its deserializer rebuilds them (json.dumps)."""
    text = """\
interactions:
- request:
    headers:
      content-type:
      - application/json
    method: POST
    parsed_body:
      max_tokens: 1024
      messages:
      - content: Où est la gare ?
        role: user
      model: claude-sonnet-4-0
      stream: false
    uri: https://api.anthropic.com/v1/messages?beta=true
  response:
    headers:
      content-type:
      - application/json
      content-length:
      - '999'
    parsed_body:
      content:
      - text: À droite.
        type: text
      id: msg_1
      stop_reason: end_turn
    status:
      code: 200
      message: OK
version: 1
"""
    path = tmp_path / "parsed.yaml"
    path.write_text(text)
    [item] = load_one(path).interactions
    assert json.loads(item.request.body)["messages"][0]["content"] == "Où est la gare ?"
    expected = {"content": [{"text": "À droite.", "type": "text"}], "id": "msg_1", "stop_reason": "end_turn"}
    assert item.response.body == json.dumps(expected).encode()
    assert (b"content-length", str(len(item.response.body)).encode()) in item.response.headers


def test_typed_body_variant(tmp_path: Path) -> None:
    """The typed layout (`body: {type, content}`, `status: 200`)."""
    text = """\
version: 1
interactions:
- request:
    method: POST
    uri: https://api.anthropic.com/v1/messages
    body:
      type: json
      content: {model: claude-3-opus-latest, max_tokens: 10, messages: [{role: user, content: hi}]}
  response:
    status: 200
    headers: {content-type: [application/json]}
    body:
      type: json
      content: {id: msg_2, content: [{type: text, text: é}]}
- request: {method: GET, uri: 'https://x/blob', body: {type: none}}
  response:
    status: 200
    body: {type: binary, content: AAEC}
- request: {method: GET, uri: 'https://x/text', body: {type: none}}
  response:
    status: 404
    body: {type: text, content: not here}
"""
    path = tmp_path / "typed.yaml"
    path.write_text(text)
    json_item, blob, missing = load_one(path).interactions
    assert json.loads(json_item.request.body)["model"] == "claude-3-opus-latest"
    assert json_item.response.body == '{"id":"msg_2","content":[{"type":"text","text":"é"}]}'.encode()
    assert blob.request.body == b"" and blob.response.body == b"\x00\x01\x02"
    assert missing.response.status == 404 and missing.response.body == b"not here"


def test_old_httpx_layout_and_python_tags(tmp_path: Path) -> None:
    """vcrpy < 4's httpx stub (`status_code`, `content`) and Python 2's `!!python/unicode`."""
    text = """\
interactions:
- request:
    body: !!python/unicode '{"q": 1}'
    headers: {Accept: !!python/unicode '*/*'}
    method: !!python/str POST
    uri: !!python/unicode 'https://api.example.com/v1/search'
  response:
    status_code: 200
    http_version: HTTP/1.1
    headers: {content-type: application/json}
    content: !!python/unicode '{"hits": []}'
version: 1
"""
    path = tmp_path / "old.yaml"
    path.write_text(text)
    [item] = load_one(path).interactions
    assert item.request.body == b'{"q": 1}' and item.request.header("accept") == "*/*"
    assert item.response.status == 200 and item.response.body == b'{"hits": []}'


def test_python_object_tags_are_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text(PLAIN.replace("method: POST", "method: !!python/object/apply:os.getcwd []"))
    [failure] = load_paths([path]).failures
    assert failure.errors[0].line == 7 and "python/object/apply:os.getcwd" in failure.errors[0].reason


def test_bytesio_request_body_becomes_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bytesio.yaml"
    path.write_text(PLAIN.replace(
        "    body: '{\"model\"", "    body: !!python/object/new:_io.BytesIO\n      state: !!python/tuple [!!binary aGk=, 0, null]\n    x: '{\"model\"", 1))
    [item] = load_one(path).interactions
    assert item.request.body == b"hi"


def test_json_cassette(tmp_path: Path) -> None:
    """vcrpy's JSON serializer: indent 4, ASCII escapes (a surrogate pair for the emoji)."""
    data = {
        "interactions": [
            {"request": {"body": None, "headers": {}, "method": "GET", "uri": "https://api.example.com/v1/a"},
             "response": {"body": {"string": "smile \U0001F600"}, "headers": {"Content-Type": ["text/plain"]},
                          "status": {"code": 200, "message": "OK"}}},
            {"request": {"body": "x", "headers": {}, "method": "POST", "uri": "https://api.example.com/v1/b"},
             "response": {"body": {"string": ""}, "headers": {}, "status": {"code": 204, "message": "No Content"}}},
        ],
        "version": 1,
    }
    path = tmp_path / "recorded.json"
    path.write_text(json.dumps(data, indent=4) + "\n")
    cassette = load_one(path)
    assert cassette.format == "vcrpy v1 (JSON)" and cassette.name == "recorded"
    first, second = cassette.interactions
    assert first.response.body == "smile \U0001F600".encode()
    assert (first.line, second.line) == (3, 25)
    assert second.response.status == 204


def test_json_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "version": 1,\n  "interactions": [\n    {"request": {]}\n  ]\n}\n')
    [failure] = load_paths([path]).failures
    assert failure.errors[0].line == 4 and "invalid JSON" in failure.errors[0].reason


def test_json_interaction_errors_name_the_line(tmp_path: Path) -> None:
    good = {"request": {"method": "GET", "uri": "https://x/a"}, "response": {"status": {"code": 200}, "body": {"string": ""}}}
    bad = {"request": {"method": "GET", "uri": "https://x/b"}, "response": {"status": {"code": 999}}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"version": 1, "interactions": [good, bad]}, indent=2))
    [failure] = load_paths([path]).failures
    [error] = failure.errors
    assert "interaction 1" in error.reason and "999" in error.reason
    starts = [number for number, line in enumerate(path.read_text().splitlines(), 1) if line == "    {"]
    assert error.line == starts[1]


def test_unrelated_json_files_in_a_directory_are_passed_over(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text('{"name": "x", "dependencies": {}}')
    (tmp_path / "broken-fixture.json").write_text("{ not json")
    (tmp_path / "cassette.json").write_text(json.dumps({"version": 1, "interactions": []}))
    (tmp_path / "plain.yaml").write_text(PLAIN)
    result = load_paths([tmp_path])
    assert result.errors == []
    assert [c.name for c in result.cassettes] == ["cassette", "plain"]
    # named on the command line, a JSON file is always a cassette: its problem is reported
    [failure] = load_paths([tmp_path / "package.json"]).failures
    assert "not a cassette" in failure.errors[0].reason


@pytest.mark.parametrize(
    "text, expected",
    [
        ("- request: {uri: x}\n  response: {}\n", "before vcrpy 1.0"),
        ("version: 1\ninteractions:\n- request: {uri: 'https://x/'}\n  response: {status: {code: 200}}\n",
         "request.method is missing"),
        ("version: 1\ninteractions:\n- request: {method: GET, uri: 'https://x/'}\n  response: {body: {string: ''}}\n",
         "response.status.code must be an HTTP status"),
        ("version: 1\ninteractions:\n- request: {method: GET, uri: 'https://x/', body: {type: binary, content: '%%'}}\n"
         "  response: {status: 200}\n", "must be base64 or !!binary"),
    ],
)
def test_bad_vcrpy_cassettes(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    [failure] = load_paths([path]).failures
    assert expected in failure.errors[0].reason
    assert failure.errors[0].line is not None


@pytest.mark.parametrize(
    "body, reason, line",
    [
        ("    parsed_body: &loop [*loop]\n", "an alias refers to the node that contains it", 6),
        ("    parsed_body: {blob: !!binary AAEC}\n", "is not JSON data", 3),
        ("    body: {type: json, content: &c [*c]}\n", "an alias refers to the node that contains it", 6),
    ],
)
def test_bodies_that_are_not_json_are_load_errors(tmp_path: Path, body: str, reason: str, line: int) -> None:
    path = tmp_path / "cycle.yaml"
    path.write_text(f"version: 1\ninteractions:\n- request:\n    method: POST\n    uri: https://x/\n{body}  response: {{status: 200}}\n")
    [failure] = load_paths([path]).failures
    assert reason in failure.errors[0].reason and failure.errors[0].line == line


def test_header_values_and_bodies_are_the_text_written_numbers_in_data_stay_numbers(tmp_path: Path) -> None:
    path = tmp_path / "typed.yaml"
    path.write_text("""\
interactions:
- request:
    body: 12:30
    headers: {X-Mode: [0755], X-Flag: [off]}
    method: POST
    uri: https://api.openai.com/v1/x
  response:
    body: {string: 1.50}
    headers: {x-should-retry: [false]}
    status: {code: 200, message: OK}
- request:
    parsed_body: {max_tokens: 100, stream: false, ratio: 1.50}
    method: POST
    uri: https://api.openai.com/v1/y
  response:
    body: {type: text, content: 12:30}
    status: 200
version: 1
""")
    first, second = load_one(path).interactions
    assert dict(first.request.headers) == {"x-mode": "0755", "x-flag": "off"}
    assert first.request.body == b"12:30"
    assert (b"x-should-retry", b"false") in first.response.headers and first.response.body == b"1.50"
    assert json.loads(second.request.body) == {"max_tokens": 100, "stream": False, "ratio": 1.5}
    assert second.response.body == b"12:30" and second.response.status == 200


def test_json_header_values_keep_their_json_spelling(tmp_path: Path) -> None:
    path = tmp_path / "typed.json"
    path.write_text(json.dumps({"version": 1, "interactions": [{
        "request": {"method": "GET", "uri": "https://x/v1/models", "body": None, "headers": {"X-Flag": [True, 7]}},
        "response": {"status": {"code": 200, "message": "OK"}, "body": {"string": "{}"},
                     "headers": {"x-should-retry": [False], "x-ratio": 1.5}},
    }]}))
    [item] = load_one(path).interactions
    assert item.request.headers == (("x-flag", "true"), ("x-flag", "7"))
    assert (b"x-should-retry", b"false") in item.response.headers and (b"x-ratio", b"1.5") in item.response.headers
