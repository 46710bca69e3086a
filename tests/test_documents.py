"""Cassette text → data: line numbers, and what parsing costs; data → text (for the recorder), read
back as the same data."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from server.documents import CassetteLoader, construct, dump_document, may_have_anchor, parse_document
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


TEXTS = ["", "plain", "a\nb\n", "data: x\r\n\r\n", "  leading\nx", "trailing \nx", "x\n\n\n", "\n", "tab\there\n",
         "é\u2028x\n", "\u2029", "\x00\x01\x7f\n", "\ufeffbom\n", "a\x85b\n", "---\n", "...\n", "# hash\n- dash\n",
         "😀 emoji\n", "x\n ", "yes", "0o17", "1e3", "null", "~", "'quoted'", '"double"', "key: value",
         "x" * 5000 + " " + "y" * 5000]


def test_text_reads_back_exactly_and_multi_line_text_is_a_block() -> None:
    data = {"version": 2, "interactions": [{"body": text, "offsets": [0.0, 1e-06, 0.187412]} for text in TEXTS]}
    written = dump_document(data, explicit_start=True)
    assert parse_document(written, file="t").data == data
    assert written.startswith(b"---\n") and b"body: |\n    a\n    b\n" in written
    assert b"offsets: [0.0, 1.0e-06, 0.187412]" in written
    assert all(len(line) < 11_000 for line in written.splitlines())  # the long line is not folded


def test_bytes_are_binary_in_yaml_and_refused_in_json() -> None:
    data = {"interactions": [{"body": b"\xff\x00\x80"}], "version": 1}
    assert parse_document(dump_document(data), file="t").data == data
    with pytest.raises(ValueError, match="binary body needs a YAML cassette"):
        dump_document(data, syntax="json")


def test_json_is_written_as_vcrpys_json_serializer_writes_it() -> None:
    data = {"interactions": [{"body": "caf\u00e9"}], "version": 1}
    written = dump_document(data, syntax="json")
    assert written == b'{\n    "interactions": [\n        {\n            "body": "caf\\u00e9"\n        }\n    ],\n' \
                      b'    "version": 1\n}\n'
    document = parse_document(written, file="t")
    assert document.data == data and document.syntax == "json"


@given(st.lists(st.sampled_from(b"& \t\r\n[{,a:"), max_size=40).map(bytes))
def test_the_anchor_search_finds_an_ampersand_where_a_node_starts_followed_by_a_name(text: bytes) -> None:
    node_start = re.compile(rb"(?:^|[ \t\r\n\[{,])&[^ \t\r\n]", re.MULTILINE)  # what YAML calls an anchor's start
    assert may_have_anchor(text) == bool(node_start.search(text))


_YAML_DATA = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(max_size=20)
    | st.datetimes(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5) | st.integers() | st.booleans(), children, max_size=4),
    max_leaves=20,
)


def _both_ways(text: bytes) -> tuple[object, object]:
    """The data PyYAML's constructor builds from ``text``, and the direct construction's (or
    the exception each raised)."""
    built = []
    for plain in (False, True):
        loader = CassetteLoader(text)
        try:
            built.append(construct(loader, loader.get_single_node(), plain=plain))
        except yaml.YAMLError as error:
            built.append(type(error))
        finally:
            loader.dispose()
    return built[0], built[1]


@given(_YAML_DATA)
def test_documents_without_anchors_are_built_directly_into_the_data_pyyaml_builds(data: object) -> None:
    pyyaml, direct = _both_ways(yaml.safe_dump({"interactions": [data]}).encode())
    assert direct == pyyaml


@pytest.mark.parametrize("text", [
    "base: {a: 1}\nmerged: {<<: {a: 1}, b: 2}\n",  # merge key
    "s: !!set {a, b}\no: !!omap [{a: 1}]\n",
    "? [a, b]\n: value\n",  # a key that is a sequence: PyYAML refuses it
    "x: !!str {a: 1}\n",  # a tag that does not fit the node: PyYAML refuses it
    "v: !!python/unicode 'old vcrpy'\nt: !!python/tuple [1, 2]\n",
    "= : value\n",
    "when: 2024-01-02 03:04:05\nbody: !!binary aGk=\nn: 0x1F\nf: .inf\n",
])
def test_unusual_documents_get_pyyamls_data_or_error(text: str) -> None:
    pyyaml, direct = _both_ways(text.encode())
    assert direct == pyyaml


@given(st.text(max_size=12) | st.sampled_from(["yes", "No", "0755", "12:30", "1.5e3", "~", "", "null", ".inf",
                                                 "2024-01-02", "0x1F", "<<", "=", "-1_000"]),
       st.booleans(), st.booleans())
def test_tags_are_resolved_as_pyyaml_resolves_them(value: str, plain: bool, quoted: bool) -> None:
    loader = CassetteLoader("")
    try:
        for _ in range(2):  # the second time from the cache
            assert loader.resolve(yaml.ScalarNode, value, (plain, quoted)) == yaml.SafeLoader.resolve(
                loader, yaml.ScalarNode, value, (plain, quoted))
        for kind in (yaml.MappingNode, yaml.SequenceNode):
            assert loader.resolve(kind, None, (plain, quoted)) == yaml.SafeLoader.resolve(loader, kind, None, (plain, quoted))
    finally:
        loader.dispose()
