"""Loading cassette files: formats, names, line-numbered errors, safety."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from server.loader import load_paths
from server.models import BodyKind

from .conftest import BUNDLED, ROOT, go_vcr, interaction


def test_bundled_cassettes_all_load() -> None:
    result = load_paths([BUNDLED])
    assert result.errors == []
    names = {cassette.name for cassette in result.cassettes}
    assert {"weather", "openai/haiku", "openai/model-not-found", "anthropic/multi-turn"} <= names


def test_names_are_relative_paths_without_extension(write_cassette, cassette_dir: Path) -> None:
    write_cassette("top", interaction())
    nested = write_cassette("openai/chat/simple", interaction())
    result = load_paths([cassette_dir, nested])  # the nested file also given directly: loaded once
    assert [c.name for c in result.cassettes] == ["openai/chat/simple", "top"]


def test_file_given_directly_is_named_by_its_stem(write_cassette) -> None:
    path = write_cassette("deep/inside/weather", interaction())
    assert [c.name for c in load_paths([path]).cassettes] == ["weather"]


def test_yml_suffix_and_hidden_files(cassette_dir: Path) -> None:
    (cassette_dir / "a.yml").write_text(go_vcr(interaction()))
    (cassette_dir / ".hidden.yaml").write_text(go_vcr(interaction()))
    (cassette_dir / "notes.txt").write_text("not a cassette")
    assert [c.name for c in load_paths([cassette_dir]).cassettes] == ["a"]


def test_seed_cassette_reads_as_recorded() -> None:
    [weather] = [c for c in load_paths([BUNDLED]).cassettes if c.name == "weather"]
    first, second = weather.interactions
    assert first.request.method == "POST" and first.request.path == "/v1/chat/completions"
    assert first.response.duration == pytest.approx(2.459145959)
    assert second.response.duration == pytest.approx(0.488971083)
    assert first.response.kind is BodyKind.SSE
    assert b"".join(first.response.chunks) == first.response.body
    assert first.response.chunks[-1] == b"data: [DONE]\n\n"
    assert len(first.response.chunks) == 12


def test_bad_yaml_names_file_and_line_and_others_still_load(write_cassette, cassette_dir: Path) -> None:
    write_cassette("good", interaction())
    write_cassette("bad", "version: 2\ninteractions:\n- id: 0\n  request: {method: POST\n  response: x\n")
    result = load_paths([cassette_dir])
    assert [c.name for c in result.cassettes] == ["good"]
    [failure] = result.failures
    assert failure.name == "bad"
    [error] = failure.errors
    assert error.file.endswith("bad.yaml") and error.line in (4, 5)
    assert "invalid YAML" in error.reason


def test_missing_fields_are_reported_per_interaction_with_line(write_cassette) -> None:
    text = go_vcr(interaction(), interaction())
    broken = text.replace("method: POST", "verb: POST", 1)
    path = write_cassette("broken", broken)
    [failure] = load_paths([path]).failures
    [error] = failure.errors
    assert "interaction 0" in error.reason and "request.method is missing" in error.reason
    assert error.line == 3  # the "- id: 0" line


def test_every_bad_interaction_is_listed(write_cassette) -> None:
    bad = interaction(code=999)
    path = write_cassette("two-bad", interaction(duration="soon"), bad)
    [failure] = load_paths([path]).failures
    reasons = [error.reason for error in failure.errors]
    assert len(reasons) == 2
    assert "'soon' is not a duration" in reasons[0]
    assert "999" in reasons[1]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("version: 3\ninteractions: []\n", "unknown cassette format (version: 3)"),
        ("- just\n- a list\n", "not a cassette"),
        ("version: 2\ninteractions: {}\n", "`interactions` must be a list"),
        ("", "not a cassette"),
    ],
)
def test_wrong_shapes(write_cassette, text: str, expected: str) -> None:
    path = write_cassette("wrong", text)
    [failure] = load_paths([path]).failures
    assert expected in failure.errors[0].reason


def test_alias_bombs_and_cycles_are_refused_but_anchors_load(write_cassette, cassette_dir: Path) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
        f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]" for previous, name in zip("abcdef", "bcdefg")
    ]
    write_cassette("bomb", "version: 2\n" + "\n".join(levels) + "\ninteractions: []\n")
    write_cassette("cycle", "version: 2\nloop: &l [1, *l]\ninteractions: []\n")
    anchored = go_vcr(interaction(), interaction()).replace("    headers: {}\n", "    headers: &h {X: [y]}\n", 1)
    anchored = anchored.replace("    headers: {}\n", "    headers: *h\n", 1)
    write_cassette("anchored", anchored)
    result = load_paths([cassette_dir])
    assert [c.name for c in result.cassettes] == ["anchored"]
    assert result.cassettes[0].interactions[1].request.headers == (("x", "y"),)
    reasons = {failure.name: failure.errors[0].reason for failure in result.failures}
    assert "aliases expand to more than" in reasons["bomb"]
    assert "refers to the node that contains it" in reasons["cycle"]


def test_python_tags_are_refused(write_cassette) -> None:
    path = write_cassette("evil", "version: 2\ninteractions: !!python/object/apply:os.system ['echo pwned']\n")
    [failure] = load_paths([path]).failures
    assert failure.errors[0].line == 2
    assert "python/object" in failure.errors[0].reason


def test_missing_path_is_a_load_error(tmp_path: Path) -> None:
    result = load_paths([tmp_path / "nope"])
    assert result.cassettes == ()
    assert "no such file" in result.errors[0].reason


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.yaml").write_text(go_vcr(interaction()))
    result = load_paths([tmp_path / "a", tmp_path / "b"])
    assert [c.file for c in result.cassettes] == [str(tmp_path / "a" / "same.yaml")]
    assert "already used" in result.errors[0].reason


def test_binary_bodies_and_version_1(write_cassette) -> None:
    frame = b"\x00\x01\xffbinary"
    text = (
        "version: 1\ninteractions:\n- request:\n    body: !!binary " + base64.b64encode(b"\xff\xfe").decode()
        + "\n    url: http://x/upload\n    method: put\n  response:\n    body: !!binary "
        + base64.b64encode(frame).decode() + "\n    status: 201 Created\n    duration: 1.5s\n"
    )
    [cassette] = load_paths([write_cassette("v1", text)]).cassettes
    [item] = cassette.interactions
    assert cassette.format == "go-vcr v1"
    assert item.id == 0 and item.request.method == "PUT" and item.request.body == b"\xff\xfe"
    assert item.response.body == frame and item.response.status == 201 and item.response.reason == "Created"
    assert item.response.duration == 1.5


def test_interactions_are_ordered_by_id(write_cassette) -> None:
    text = go_vcr(interaction(response_body="first"), interaction(response_body="second"))
    text = text.replace("- id: 0", "- id: 7", 1)
    [cassette] = load_paths([write_cassette("ordered", text)]).cassettes
    assert [i.id for i in cassette.interactions] == [1, 7]


@pytest.mark.parametrize(
    "value, seconds",
    [("2.459145959s", 2.459145959), ("488.971083ms", 0.488971083), ("1m2.5s", 62.5), ("150µs", 0.00015), ("0s", 0.0), ("0", 0.0), (1500000000, 1.5)],
)
def test_go_durations(write_cassette, value: object, seconds: float) -> None:
    item = interaction()
    item["response"]["duration"] = value
    [cassette] = load_paths([write_cassette("d", item)]).cassettes
    assert cassette.interactions[0].response.duration == pytest.approx(seconds)


def test_go_vcr_uncompressed_drops_content_encoding(write_cassette) -> None:
    """Go's transport decoded the body (`uncompressed: true`): the header goes, even when the
    decoded body happens to start like gzip."""
    looks_gzipped = b"\x1f\x8b but really plain text"
    flagged = interaction(response_body=looks_gzipped, response_headers={"Content-Encoding": ["gzip"]}, uncompressed=True)
    unflagged = interaction(response_body=looks_gzipped, response_headers={"Content-Encoding": ["gzip"]})
    [cassette] = load_paths([write_cassette("uncompressed", flagged, unflagged)]).cassettes
    first, second = cassette.interactions
    assert all(name != b"content-encoding" for name, _ in first.response.headers)
    assert (b"content-encoding", b"gzip") in second.response.headers  # the magic bytes are trusted


def test_file_names_that_are_not_utf8_are_refused_and_the_rest_load(cassette_dir: Path) -> None:
    import os

    (cassette_dir / "good.yaml").write_text(go_vcr(interaction()))
    with open(os.path.join(os.fsencode(cassette_dir), b"bad\xffname.yaml"), "w") as handle:
        handle.write(go_vcr(interaction()))
    result = load_paths([cassette_dir])
    assert [c.name for c in result.cassettes] == ["good"]
    [failure] = result.failures
    assert "not valid UTF-8" in failure.errors[0].reason and failure.file.endswith("bad\ufffdname.yaml")
    failure.file.encode("utf-8")  # printable, JSON-safe


def test_lone_surrogates_in_recorded_json_load(cassette_dir: Path) -> None:
    import json

    from server.matching.index import Exhausted, Index
    from server.matching.keys import MatchRules

    cassette = {"version": 1, "interactions": [{
        "request": {"method": "POST", "uri": "https://x/v1/chat", "headers": {},
                    "body": '{"content":"cut \\ud83d"}'},  # JSON text with the escape: a string cut mid-emoji
        "response": {"status": {"code": 200, "message": "OK"}, "headers": {}, "body": {"string": "part \ud83d"}},
    }]}
    (cassette_dir / "cut.json").write_text(json.dumps(cassette))
    result = load_paths([cassette_dir])
    assert result.errors == []
    [item] = result.cassettes[0].interactions
    assert item.response.body == "part \ud83d".encode("utf-8", "surrogatepass")
    Index(result.cassettes, MatchRules(), Exhausted.ERROR)  # match keys are computable


def _names_loaded_in_a_subprocess(directory: Path) -> list[str]:
    """The cassette names loaded from ``directory``, by a child process that is killed after a
    while: without a cycle check, walking self-links never finishes."""
    code = "import json, sys; from pathlib import Path; from server.loader import load_paths; " \
           "print(json.dumps([c.name for c in load_paths([Path(sys.argv[1])]).cassettes]))"
    try:
        done = subprocess.run([sys.executable, "-c", code, str(directory)], capture_output=True, text=True,
                              timeout=30, cwd=ROOT, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {directory} did not finish in 30 s")
    return json.loads(done.stdout)


def test_two_directory_links_to_themselves_are_each_searched_once(cassette_dir: Path) -> None:
    (cassette_dir / "chat.yaml").write_text(go_vcr(interaction()))
    (cassette_dir / "again").symlink_to(".", target_is_directory=True)
    (cassette_dir / "and-again").symlink_to(".", target_is_directory=True)
    assert _names_loaded_in_a_subprocess(cassette_dir) == ["chat"]


def test_a_link_back_up_is_not_followed_around_the_loop(cassette_dir: Path) -> None:
    (cassette_dir / "openai" / "chat").mkdir(parents=True)
    (cassette_dir / "top.yaml").write_text(go_vcr(interaction()))
    (cassette_dir / "openai" / "chat" / "simple.yaml").write_text(go_vcr(interaction()))
    (cassette_dir / "openai" / "chat" / "root").symlink_to("../..", target_is_directory=True)
    result = load_paths([cassette_dir])
    assert result.errors == []
    assert [c.name for c in result.cassettes] == ["openai/chat/simple", "top"]


def test_a_directory_reached_by_several_paths_is_named_by_the_shortest(cassette_dir: Path) -> None:
    shared = cassette_dir / "archive" / "2024" / "shared"
    shared.mkdir(parents=True)
    (shared / "chat.yaml").write_text(go_vcr(interaction()))
    (cassette_dir / "current").symlink_to(shared, target_is_directory=True)
    (cassette_dir / "archive" / "2024" / "latest.yaml").symlink_to(shared / "chat.yaml")  # a file: the same rule
    result = load_paths([cassette_dir])
    assert [(c.name, c.file) for c in result.cassettes] == [("current/chat", str(cassette_dir / "current" / "chat.yaml"))]


# What Go's YAML writers leave unquoted, and YAML 1.1 would read as something else.
TYPED_LOOKING = {"X-Retry": "false", "X-Mode": "0755", "X-Time": "12:30", "X-Yes": "yes", "X-Ratio": "1.50",
                 "X-Date": "2024-01-01t10:00:00Z"}


def test_go_vcr_header_values_and_bodies_are_the_text_written(write_cassette) -> None:
    headers = "{" + ", ".join(f"{name}: [{value}]" for name, value in TYPED_LOOKING.items()) + "}"
    path = write_cassette("typed", f"""\
version: 2
interactions:
- id: 7
  request:
    url: https://api.openai.com/v1/x
    method: POST
    headers: {headers}
    body: 12:30
  response:
    code: 200
    status: 200 OK
    headers: {{x-should-retry: [false], Content-Type: [text/plain], On: [on]}}
    body: 0755
    duration: 1
    event_offsets: [0, 0.5]
""")
    [cassette] = load_paths([path]).cassettes
    [item] = cassette.interactions
    assert item.id == 7 and item.response.status == 200 and item.response.duration == pytest.approx(1e-9)
    assert dict(item.request.headers) == {name.lower(): value for name, value in TYPED_LOOKING.items()}
    assert item.request.body == b"12:30"
    assert (b"x-should-retry", b"false") in item.response.headers and (b"on", b"on") in item.response.headers
    assert item.response.body == b"0755"
