"""Cassette text → data: line numbers, and what parsing costs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from server.documents import parse_document
from server.loader import load_file


def test_json_lines_of_top_level_keys_and_interactions() -> None:
    text = (
        '{"version": 1,\n'
        ' "note": {"interactions": ["not these"], "tricky": "}]\\"\\n{"},\n'
        ' "interactions": [\n'
        '  {"request": "one"},\n'
        '  "a bad one",\n'
        '  [\n'
        '   {"x": "}"}], 7\n'
        ' ]\n'
        '}\n'
    )
    document = parse_document(text.encode(), file="x.json")
    assert document.syntax == "json"
    assert document.key_lines == {"version": 1, "note": 2, "interactions": 3}
    assert document.interaction_lines == (4, 5, 6, 7)


def test_a_json_cassette_with_a_huge_string_loads_about_as_fast_as_json_parses_it(tmp_path: Path) -> None:
    """Finding the lines once took hundreds of times longer than parsing (7.75 s for one 20 MB
    string): the bound is relative to json.loads on this machine, with a wide margin."""
    huge = "a" * 20_000_000 + '\\"{"model": "m"}\\"' * 1000
    cassette = {"version": 1, "interactions": [{
        "request": {"method": "POST", "uri": "https://api.openai.com/v1/x", "body": huge, "headers": {}},
        "response": {"status": {"code": 200, "message": "OK"}, "headers": {}, "body": {"string": "ok"}},
    }]}
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(cassette))
    text = path.read_bytes()
    parse_time = min(_seconds(lambda: json.loads(text)) for _ in range(3))

    started = time.perf_counter()
    loaded = load_file(path, name="huge")
    load_time = time.perf_counter() - started

    assert loaded.interactions[0].request.body == huge.encode()
    assert loaded.interactions[0].line == 1
    assert load_time < 10 * parse_time + 0.5, (load_time, parse_time)


def _seconds(work) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started
