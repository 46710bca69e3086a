"""Fuzzing the replay endpoint and the admin API: whatever a client sends — any method, paths
with percent-encodings and /__cassette/ prefixes, query strings, header values with non-ASCII
bytes, invalid UTF-8, deeply nested or huge JSON, junk cassettes PUT — the answer is never a
5xx, and every error is the JSON error shape with ``error.message``.

The bulk runs in-process (httpx.ASGITransport: the app sees exactly the bytes generated); a
smaller part sends raw bytes over a socket to a live uvicorn, whose own parser sees them first.
Hypothesis is derandomized with bounded example counts, so the run is the same every time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from server import Settings, create_app

from .conftest import BUNDLED

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE"]) | st.text(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ-_!#", min_size=1, max_size=10)
PREFIXES = st.sampled_from(["/", "/v1/", "/v1/chat/", "/__cassette/", "/__cassette/weather/", "/__cassette/openai/",
                            "/__cassette/openai/haiku/v1/", "/__admin", "/__admin/", "/__admin/cassettes/",
                            "/__admin/requests", "/__admin/requests/unmatched", "/__admin/unused", "/__admin/reset",
                            "/__admin/reload", "/__admin/health", "/__admin/docs", "/__admin/openapi.json",
                            "/model/claude-v1%3A0/", "/v1beta/models/"])
SEGMENT = st.one_of(
    st.text(max_size=12).map(lambda text: quote(text, safe="")),
    st.text(max_size=12).map(lambda text: quote(text, safe="/:@!$&'()*+,;=")),
    st.sampled_from(["..", ".", "", "%", "%z", "%zz", "%ff", "%00", "%C3%28", "%2F", "%2e%2e", "chat", "completions",
                     "messages", ":streamGenerateContent", "weather", "haiku", "a" * 300]),
)
PATHS = st.builds(lambda prefix, parts: prefix + "/".join(parts), PREFIXES, st.lists(SEGMENT, max_size=4))
QUERIES = st.one_of(st.just(""), st.text(max_size=30).map(lambda text: quote(text, safe="=&")),
                    st.sampled_from(["limit=abc", "limit=0", "limit=99999999999999999999", "matched=maybe",
                                     "session=%ff", "cassette=%00", "beta=true", "api-version=x&api-version=y",
                                     "alt=sse&&&==", "limit=-1"]))
HEADER_NAMES = st.sampled_from(["x-cassette", "x-cassette-session", "x-replay-speed", "content-type", "authorization",
                                "origin", "sec-fetch-site", "content-encoding", "accept", "x-anything"])
HEADER_VALUES = st.one_of(
    st.binary(max_size=40).filter(lambda value: b"\r" not in value and b"\n" not in value and b"\x00" not in value),
    st.text(max_size=30).map(lambda text: text.encode("utf-8")).filter(lambda value: b"\r" not in value and b"\n" not in value),
    st.sampled_from([b"0", b"-1", b"nan", b"inf", b"1e309", b"0.0001", b"weather", b"openai/haiku", b"nope",
                     b"multipart/form-data; boundary=", b"application/x-www-form-urlencoded", b"null",
                     b"https://evil.example", b"Bearer x", "caf\xe9".encode("latin-1"), "€".encode()]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
BODIES = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"\xff\xfe\xfd", b'{"a": "\xc3\x28"}', b'{"model": "\xed\xa0\x80"}', b"\x00" * 10,
                     b'{"a":1e999999}', b'{"a":' + b"9" * 5000 + b"}", b"--x\r\nContent-Disposition: form-data\r\n\r\n",
                     b"a=1&a=2&%zz=%ff"]),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 100_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 100_000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
)
CASSETTE_TEXTS = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.sampled_from([b"version: 2\ninteractions: []\n", b"version: 1\ninteractions:\n- request: {}\n  response: {}\n",
                     b'{"version": 2, "interactions": [{"request": 1}]}', b"a: &a [*a]\n", b"interactions:\n- x\n",
                     b"requests: [{}]\nresponses: []\n", b"version: 2\ninteractions:\n- id: 0\n  request: {method: GET, "
                     b"url: 'https://x/'}\n  response: {code: 200, body: [1, {a: 2}]}\n"]),
)

HUGE_JSON = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "é" * 3_000_000}]}).encode()


def assert_well_answered(response: httpx.Response, method: str) -> None:
    """Never a 5xx; an error is the JSON error shape (a HEAD answer has no body to show it)."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400 and method != "HEAD":
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"], response.text[:500]
        assert response.headers["content-type"].startswith("application/json")


@pytest.fixture(scope="module")
def cassettes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundled cassettes: PUT may write into it."""
    directory = tmp_path_factory.mktemp("fuzz") / "cassettes"
    directory.mkdir()
    for file in BUNDLED.rglob("*.yaml"):
        target = directory / file.relative_to(BUNDLED)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.read_bytes())
    return directory


@pytest.fixture(scope="module")
def app(cassettes: Path) -> Iterator[Any]:
    quiet = logging.getLogger("cassette_server")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # thousands of misses, each logged as a warning: not kept in memory by pytest
    yield create_app(Settings(paths=(cassettes,), speed=0, event_interval=0, max_body_size=8 * 1024 * 1024))
    quiet.setLevel(level)


def send(app: Any, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> httpx.Response:
    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
            # absolute: a relative URL may not start with "//", a path may
            return await client.request(method, "http://127.0.0.1:8080" + url, headers=headers, content=body)

    return asyncio.run(run())


@settings(FUZZ, max_examples=250)
@given(method=METHODS, path=PATHS, query=QUERIES, headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=4),
       body=BODIES)
@example(method="POST", path="/v1/chat/completions", query="", headers=[], body=HUGE_JSON)
@example(method="POST", path="/v1/chat/completions", query="", headers=[("x-replay-speed", b"0")],
         body=b"[" * 100_000 + b"]" * 100_000)
@example(method="POST", path="/v1/chat/completions", query="", headers=[("content-type", b"multipart/form-data; "
         b"boundary=x")], body=b"--x\r\nContent-Disposition: form-data; name=\"\xff\"\r\n\r\n\xff\r\n--x--\r\n")
def test_replay_and_admin_never_fail(app: Any, method: str, path: str, query: str, headers: list[tuple[str, bytes]],
                                     body: bytes) -> None:
    url = path + ("?" + query if query else "")
    response = send(app, method, url, [(name.encode(), value) for name, value in headers], body)
    assert_well_answered(response, method)


@settings(FUZZ, max_examples=80)
@given(method=st.sampled_from(["PUT", "POST", "DELETE", "GET", "PATCH"]), name=st.lists(SEGMENT, min_size=1, max_size=3),
       body=CASSETTE_TEXTS, content_type=st.sampled_from([b"application/json", b"application/yaml", b"text/plain"]))
def test_admin_cassette_writes_with_junk_never_fail(app: Any, method: str, name: list[str], body: bytes,
                                                    content_type: bytes) -> None:
    response = send(app, method, "/__admin/cassettes/" + "/".join(name), [(b"content-type", content_type)], body)
    assert_well_answered(response, method)


@pytest.fixture(scope="module")
def live(cassettes: Path) -> Any:
    from .conftest import live_server

    with live_server(Settings(paths=(cassettes,), speed=0, event_interval=0)) as (url, _):
        yield int(url.rsplit(":", 1)[1])


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """(status, headers, body) of the answer to raw request bytes; the request says
    Connection: close, so the answer ends when the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in header_lines if b": " in line)
    if headers.get(b"transfer-encoding") == b"chunked":
        body = dechunk(body)
    return int(status_line.split(b" ")[1]), {name.lower(): value for name, value in headers.items()}, body


def dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        length = int(size, 16)
        body, data = body + data[:length], data[length + 2:]
        if not length:
            break
    return body


RAW_TARGETS = st.builds(lambda prefix, tail: prefix.encode() + tail, PREFIXES,
                        st.binary(max_size=30).filter(lambda value: not any(b in value for b in b" \r\n\x00?#")))


@settings(FUZZ, max_examples=60)
@given(method=st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE"]), target=RAW_TARGETS,
       headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=4), body=BODIES.filter(lambda b: len(b) < 50_000))
@example(method=b"POST", target=b"/v1/chat/completions", headers=[("x-cassette-session", "caf\xe9".encode("latin-1")),
         ("x-cassette", b"\xff\xfe")], body=b'{"a": "\xc3\x28"}')
@example(method=b"GET", target=b"/__admin/cassettes/\xc3\x28", headers=[("origin", b"\xe2\x82\xac")], body=b"")
def test_raw_bytes_through_uvicorn_never_fail(live: int, method: bytes, target: bytes, headers: list[tuple[str, bytes]],
                                              body: bytes) -> None:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
             b"Content-Length: " + str(len(body)).encode()] + [name.encode() + b": " + value for name, value in headers]
    status, answer_headers, answer = raw_exchange(live, b"\r\n".join(lines) + b"\r\n\r\n" + body)
    assert status < 500, (status, answer[:500])
    if status >= 400:
        assert answer_headers[b"content-type"].startswith(b"application/json"), answer[:300]
        assert json.loads(answer)["error"]["message"]


@pytest.mark.parametrize("request_bytes", [
    b"GET /v1/x y HTTP/1.1\r\nHost: x\r\n\r\n",  # a space in the target
    b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
    b"POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /v1/x HTTP/1.1\r\nBad Header\r\n\r\n",
])
def test_requests_uvicorn_cannot_parse_get_the_json_error_shape_too(live: int, request_bytes: bytes) -> None:
    status, headers, body = raw_exchange(live, request_bytes)
    assert status == 400 and headers[b"content-type"] == b"application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "bad_request" and "could not be read as HTTP/1.1" in error["message"]
