"""The recorded answers every server in the benchmark serves, written as a cassette directory
(for cassette-server and the bare app) and as WireMock stubs, all from the same bytes.

The bytes come from the bundled example cassettes (recorded API answers), read with PyYAML
rather than through the server, so the benchmark does not depend on the server's internals:

- ``json``:   ``openai/haiku``, a whole 888 B chat completion;
- ``sse``:    ``weather#0``, a 4.3 KB stream of 12 events, replayed at speed 0;
- ``paced``:  the same events repeated to 20, 50 ms apart, headers 100 ms after the request
              (``duration`` and ``event_offsets``), replayed at speed 1;
- ``miss``:   a request nobody recorded (cassette-server answers a 404 with the closest recordings).

Corpora of many interactions (startup time, lookup against corpus size) are generated from a
text template: building them with yaml.dump would take longer than the thing measured.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "cassettes"

PACED_EVENTS = 20
PACED_HEADER_DELAY = 0.100  # seconds from request to headers
PACED_EVENT_GAP = 0.050  # seconds between events, the first at the headers
SPEED_HEADER = ("X-Replay-Speed", "1")  # cassette-server runs at --speed 0; paced requests ask for 1
INTERACTIONS_PER_FILE = 10  # corpora: many small cassettes, as recorders write them


@dataclass(frozen=True)
class Answer:
    """A recorded response, as every server must send it."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    events: tuple[bytes, ...] | None = None  # SSE: the events, which concatenate to ``body``
    duration: float = 0.0  # seconds from request to headers, at speed 1
    event_offsets: tuple[float, ...] | None = None  # seconds from headers to each event, at speed 1

    @property
    def content_type(self) -> str:
        return next((value for name, value in self.headers if name.lower() == "content-type"), "")


@dataclass(frozen=True)
class Case:
    """One request of the benchmark and what it must get back (``answer`` None: a miss)."""

    name: str
    path: str
    body: bytes
    answer: Answer | None
    extra_headers: tuple[tuple[str, str], ...] = ()
    method: str = "POST"

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", **dict(self.extra_headers)}


def split_events(body: bytes) -> tuple[bytes, ...]:
    """SSE events, each with its blank-line terminator (LF or CRLF), concatenating to ``body``."""
    events: list[bytes] = []
    start = 0
    while start < len(body):
        ends = [found + len(sep) for sep in (b"\n\n", b"\r\n\r\n") if (found := body.find(sep, start)) >= 0]
        end = min(ends) if ends else len(body)
        events.append(body[start:end])
        start = end
    return tuple(events)


def _bundled(cassette: str, number: int) -> dict:
    data = yaml.load((BUNDLED / f"{cassette}.yaml").read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    return data["interactions"][number]


def _recorded_case(name: str, cassette: str, number: int) -> Case:
    interaction = _bundled(cassette, number)
    request, response = interaction["request"], interaction["response"]
    body = response["body"].encode()
    headers = tuple((name, values[0]) for name, values in response["headers"].items())
    is_sse = any(value.startswith("text/event-stream") for _, value in headers)
    answer = Answer(response["code"], headers, body, events=split_events(body) if is_sse else None)
    return Case(name, urlsplit(request["url"]).path, request["body"].encode(), answer)


def benchmark_cases() -> dict[str, Case]:
    """The four cases, by name."""
    json_case = _recorded_case("json", "openai/haiku", 0)
    sse_case = _recorded_case("sse", "weather", 0)
    assert sse_case.answer is not None and sse_case.answer.events is not None
    recorded = sse_case.answer.events[:-1]  # all but `data: [DONE]`, repeated, then [DONE]
    events = tuple(recorded[position % len(recorded)] for position in range(PACED_EVENTS - 1))
    events += sse_case.answer.events[-1:]
    paced_request = json.loads(sse_case.body)
    paced_request["messages"][-1]["content"] += " (paced)"
    paced = Case(
        "paced", sse_case.path, json.dumps(paced_request, separators=(",", ":")).encode(),
        Answer(200, sse_case.answer.headers, b"".join(events), events=events, duration=PACED_HEADER_DELAY,
               event_offsets=tuple(round(position * PACED_EVENT_GAP, 6) for position in range(PACED_EVENTS))),
        extra_headers=(SPEED_HEADER,),
    )
    miss = Case("miss", json_case.path,
                b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Write a haiku about vinyl records."}]}',
                None)
    return {case.name: case for case in (json_case, sse_case, paced, miss)}


def write_cassettes(cases: dict[str, Case], directory: Path) -> Path:
    """One go-vcr cassette holding every recorded case; returns the directory."""
    interactions = []
    for number, case in enumerate(case for case in cases.values() if case.answer is not None):
        answer = case.answer
        response: dict = {
            "status": f"{answer.status} OK", "code": answer.status, "body": answer.body.decode(),
            "headers": {name: [value] for name, value in answer.headers},
            "duration": f"{answer.duration * 1000:g}ms",
        }
        if answer.event_offsets is not None:
            response["event_offsets"] = list(answer.event_offsets)
        interactions.append({
            "id": number,
            "request": {"method": case.method, "url": f"https://api.example.com{case.path}", "body": case.body.decode(),
                        "headers": {"Content-Type": ["application/json"]}},
            "response": response,
        })
    directory.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({"version": 2, "interactions": interactions}, sort_keys=False, allow_unicode=True,
                          width=1 << 20)
    (directory / "bench.yaml").write_text(text, encoding="utf-8")
    return directory


def write_wiremock_root(cases: dict[str, Case], root: Path) -> Path:
    """WireMock's ``--root-dir``: one stub per recorded case (``mappings/``), the body bytes in
    ``__files/``. Requests match on method, path and the JSON body (``equalToJson``), like
    cassette-server's default matching. SSE bodies are whole (WireMock's free version cannot
    pace events), with the recorded ``content-type: text/event-stream``."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "mappings").mkdir(parents=True)
    (root / "__files").mkdir()
    for case in cases.values():
        if case.answer is None:
            continue
        (root / "__files" / f"{case.name}.body").write_bytes(case.answer.body)
        stub = {
            "request": {"method": case.method, "urlPath": case.path,
                        "bodyPatterns": [{"equalToJson": case.body.decode()}]},
            "response": {"status": case.answer.status, "headers": dict(case.answer.headers),
                         "bodyFileName": f"{case.name}.body"},
        }
        (root / "mappings" / f"{case.name}.json").write_text(json.dumps(stub, indent=2), encoding="utf-8")
    return root


def corpus_request(number: int) -> bytes:
    """The request body of interaction ``number`` of a generated corpus."""
    return (b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Question %d: what is %d squared?"}]}'
            % (number, number))


CORPUS_PATH = "/v1/chat/completions"

_CORPUS_INTERACTION = """\
- id: {id}
  request:
    body: '{request}'
    headers:
      Content-Type:
      - application/json
    url: https://api.openai.com{path}
    method: POST
  response:
    body: '{response}'
    headers:
      Content-Type:
      - application/json
      X-Request-Id:
      - req_{number:032x}
    status: 200 OK
    code: 200
    duration: 412.503917ms
"""


def _corpus_response(number: int) -> str:
    return json.dumps({
        "id": f"chatcmpl-{number:024x}", "object": "chat.completion", "created": 1763980412,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": f"{number} squared is {number * number}.",
                                             "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 15, "completion_tokens": 9, "total_tokens": 24},
        "system_fingerprint": "fp_560af6e559",
    }, separators=(",", ":"))


def write_corpus(directory: Path, size: int) -> Path:
    """A corpus of ``size`` distinct interactions, ``INTERACTIONS_PER_FILE`` per go-vcr file
    (about 1.2 KB of YAML each); reuses the directory when it already holds that corpus."""
    marker = directory / ".size"
    if marker.exists() and marker.read_text() == str(size):
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for first in range(0, size, INTERACTIONS_PER_FILE):
        numbers = range(first, min(first + INTERACTIONS_PER_FILE, size))
        text = "version: 2\ninteractions:\n" + "".join(
            _CORPUS_INTERACTION.format(id=number - first, number=number, path=CORPUS_PATH,
                                       request=corpus_request(number).decode(), response=_corpus_response(number))
            for number in numbers
        )
        (directory / f"c{first // INTERACTIONS_PER_FILE:05d}.yaml").write_text(text, encoding="utf-8")
    marker.write_text(str(size))
    return directory
