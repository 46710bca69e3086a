"""Cassette shapes found in public LLM SDK and agent framework repositories, each as a small
synthetic copy in ``tests/cassettes/shapes/`` (never the originals), loaded and replayed
through the app with the bytes a client must get.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from server import Settings
from server.checks import check_paths
from server.loader import load_paths
from server.matching.keys import MatchRules

from .test_app import call

SHAPES = Path(__file__).parent / "cassettes" / "shapes"


def only_cassette(path: Path):
    result = load_paths([path])
    assert result.errors == [], [str(error) for error in result.errors]
    [cassette] = result.cassettes
    return cassette


def replay(path: Path, method: str, url: str, body: bytes | str | None = None) -> tuple[int, bytes]:
    [response] = call(Settings(paths=(path,), speed=0), (method, url, {"content": body}))
    return response.status_code, response.content


def test_vcrpy_without_a_version_is_read_by_its_interactions_with_a_note() -> None:
    path = SHAPES / "vcrpy-no-version.yaml"
    cassette = only_cassette(path)
    assert cassette.format == "vcrpy (no version)"
    assert cassette.notes == ("no `version` key: read as vcrpy, which its interactions look like (add `version: 1` "
                              "to say so)",)
    sent = json.dumps({"messages": [{"content": "no version", "role": "user"}], "model": "gpt-4o-mini"})
    status, body = replay(path, "POST", "/v1/chat/completions", sent)  # another key order: matched by value
    assert (status, json.loads(body)["choices"][0]["message"]["content"]) == (200, "read all the same")


def test_go_vcr_without_a_version_and_with_an_empty_duration() -> None:
    cassette = only_cassette(SHAPES / "go-vcr-no-version.yaml")
    assert cassette.format == "go-vcr (no version)" and "read as go-vcr" in cassette.notes[0]
    assert cassette.interactions[0].response.duration == 0.0
    go_v1 = only_cassette(SHAPES / "go-vcr-v1-no-duration.yaml")
    assert (go_v1.format, go_v1.notes, go_v1.interactions[0].response.duration) == ("go-vcr v1", (), 0.0)
    status, body = replay(SHAPES / "go-vcr-v1-no-duration.yaml", "POST", "/v1/chat/completions",
                          '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "go v1"}]}')
    assert (status, body) == (200, b'{"id":"chatcmpl-go1","choices":[]}')


def test_structured_yaml_bodies_are_compact_json_matched_by_value() -> None:
    path = SHAPES / "vcrpy-structured-bodies.yaml"
    message, models = only_cassette(path).interactions
    # a date in the data stays the text written: JSON has no dates
    assert message.request.body == ('{"model":"claude-haiku-4-5","max_tokens":64,"messages":[{"role":"user",'
                                    '"content":"Où est la gare ?"}],"metadata":{"since":"2024-05-01"}}').encode()
    sent = {"max_tokens": 64, "metadata": {"since": "2024-05-01"}, "model": "claude-haiku-4-5",
            "messages": [{"content": "Où est la gare ?", "role": "user"}]}
    status, body = replay(path, "POST", "/v1/messages", json.dumps(sent, indent=2))
    assert status == 200
    assert body == ('{"id":"msg_structured","type":"message","content":[{"type":"text","text":"À droite."}],'
                    '"stop_reason":"end_turn"}').encode()
    assert models.response.body == b'[{"id":"gpt-4o-mini","object":"model"},{"id":"gpt-4o","object":"model"}]'
    assert replay(path, "GET", "/v1/models") == (200, models.response.body)


def test_a_request_body_wrapped_like_a_response_body_and_scalar_headers() -> None:
    path = SHAPES / "vcrpy-string-wrapped-request.yaml"
    [item] = only_cassette(path).interactions
    assert item.request.body == b'{"input": "wrapped", "model": "text-embedding-3-small"}'
    assert item.request.header("content-type") == "application/json"
    status, body = replay(path, "POST", "/v1/embeddings", '{"model":"text-embedding-3-small","input":"wrapped"}')
    assert (status, body) == (200, b'{"data": [{"embedding": [0.25, -0.5]}]}')


def test_langchain_gzip_cassettes_with_request_and_response_lists(tmp_path: Path) -> None:
    directory = tmp_path / "cassettes"
    directory.mkdir()
    gz = directory / "TestChatOpenAI.test_stream[model0].yaml.gz"
    gz.write_bytes(gzip.compress((SHAPES / "langchain-lists.yaml").read_bytes()))
    shutil.copy(SHAPES / "langchain-lists.yaml", directory / "plain.yml")
    result = load_paths([directory])
    assert result.errors == []
    lists, plain = result.cassettes
    assert lists.name == "TestChatOpenAI.test_stream[model0]" and lists.file == str(gz)
    assert lists.format == "vcrpy (no version)" and "`requests` and `responses` lists" in lists.notes[0]
    [item] = lists.interactions
    assert item.line == 5  # the line of the request in the (decompressed) text
    # no headers were kept, yet the body is plainly SSE: streamed event by event
    assert item.response.chunks == (b'data: {"choices":[{"delta":{"content":"paired"}}]}\n\n', b"data: [DONE]\n\n")
    assert plain.interactions[0].response.body == item.response.body
    status, body = replay(gz, "POST", "/v1/chat/completions",
                          '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"lists"}],"stream":true}')
    assert (status, body) == (200, b"".join(item.response.chunks))


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"not gzip at all", "not gzip data, though the name ends in .gz"),
        (gzip.compress(b"requests: []\nresponses: []\n")[:-12], "the gzip data is cut short"),
        (gzip.compress(b"requests: [{}]\nresponses: []\n"), "1 requests but 0 responses"),
    ],
)
def test_bad_gzip_cassettes_say_why(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.yaml.gz"
    path.write_bytes(content)
    [failure] = load_paths([path]).failures
    assert failure.name == "bad" and reason in failure.errors[0].reason


def test_a_gzip_bomb_is_refused_once_it_inflates_past_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml.gz"
    path.write_bytes(gzip.compress(b"#" * 5_000_000))  # 5 MB of comment in a few kilobytes
    [failure] = load_paths([path], max_file_size=1_000_000).failures
    assert "decompressed, it is 1,000,001 bytes or more, more than the 1,000,000" in failure.errors[0].reason


def test_check_reports_what_loading_told_as_a_warning_not_an_error() -> None:
    report = check_paths([SHAPES], MatchRules.build())
    assert report.errors == []
    notes = [str(finding) for finding in report.warnings if finding.kind == "note"]
    assert any(note.startswith(f"{SHAPES / 'vcrpy-no-version.yaml'}:1: warning: vcrpy-no-version: no `version` key")
               for note in notes), notes


@pytest.mark.parametrize(
    "text, expected",
    [
        # go-vcr's version over vcrpy's interactions: one clear error, not one per interaction
        ("version: 2\ninteractions:\n- request: {method: GET, uri: 'https://x/'}\n  response: {status: {code: 200}}\n",
         "`version: 2` is go-vcr's, but the interactions are written as vcrpy writes them"),
        ("version: 1\ninteractions:\n- request: {method: GET, uri: 'https://x/'}\n  response: {status: {code: 200}}\n"
         "- request: {method: GET, url: 'https://x/'}\n  response: {status: {code: 200}}\n",
         "interaction 1: request.uri is missing; the request has `url`"),
        ("version: 3\ninteractions:\n- request: {method: GET, uri: 'https://x/'}\n  response: {status: {code: 200}}\n",
         "unknown cassette format (version: 3); expected go-vcr (version 1 or 2) or vcrpy (version 1); its "
         "interactions look like vcrpy's: if vcrpy wrote it, set `version: 1`"),
        ("interactions:\n- request: {method: GET}\n  response: {}\n", "unknown cassette format (version: None)"),
        ("http_interactions: []\nrecorded_with: VCR 6.0.0\n", "`http_interactions` is the layout of Ruby's VCR"),
    ],
)
def test_hybrids_and_unknown_shapes_are_clear_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    [failure] = load_paths([path]).failures
    assert expected in failure.errors[0].reason and failure.errors[0].line is not None


def test_check_reads_secrets_inside_compressed_cassettes(tmp_path: Path) -> None:
    text = (SHAPES / "langchain-lists.yaml").read_text().replace(
        "    - application/json\n", "    - application/json\n    authorization:\n    - Bearer sk-proj-abcdefghijklmnopqrstuvwx\n", 1)
    (tmp_path / "leak.yaml.gz").write_bytes(gzip.compress(text.encode()))
    [finding] = [f for f in check_paths([tmp_path], MatchRules.build()).errors if f.kind == "secret"]
    assert finding.line == 11 and "request header authorization holds a credential" in finding.message
