"""A corpus of bad cassettes, each generated into one directory beside a good one: every bad
file is a load error naming its file, its line (where the text has one) and what to do, the
good cassette is served, and loading stays bounded in memory (a 200 MB file is refused before
it is read). Loaded with ``load_paths`` and by a live server.

Kinds covered elsewhere too: alias bombs and cycles, symbolic link loops (test_loader.py),
hybrids of go-vcr and vcrpy and gzip bombs (test_shapes.py).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from server.checks import check_paths
from server.loader import load_paths
from server.matching.keys import MatchRules

from .conftest import ROOT, go_vcr, interaction

GOOD_BODY = interaction()["request"]["body"]
BIG = 200 * 1024 * 1024


def sparse_200_mb(path: Path) -> None:
    """A 200 MB cassette whose body is one long string; sparse on disk (written in a moment)."""
    with path.open("wb") as handle:
        handle.write(b"version: 2\ninteractions:\n- id: 0\n  request: {method: GET, url: 'https://x/big'}\n"
                     b"  response: {code: 200, body: '")
        handle.seek(BIG)
        handle.write(b"'}\n")


def alias_bomb() -> str:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
        f"{name}: &{name} [{', '.join([f'*{previous}'] * 10)}]" for previous, name in zip("abcdefgh", "bcdefghi")]
    return "version: 2\n" + "\n".join(levels) + "\ninteractions: []\n"


WRONG_TYPES = """\
version: 2
interactions:
- just a string
- request: [GET, 'https://x/']
  response: {code: 200}
- request: {method: 5, url: 'https://x/'}
  response: {code: 200}
- request: {method: GET, url: 7}
  response: {code: 200}
- request: {method: GET, url: 'https://x/', headers: [a, b]}
  response: {code: 200}
- request: {method: GET, url: 'https://x/'}
  response: {code: '2xx'}
- request: {method: GET, url: 'https://x/'}
  response: {code: 200, headers: 5}
- request: {method: GET, url: 'https://x/'}
  response: {code: 200, body: [1, 2]}
- request: {method: GET, url: 'https://x/'}
  response: {code: 200, duration: [1]}
- request: {method: GET, url: 'https://x/'}
  response: {code: 200, event_offsets: soon}
- id: first
  request: {method: GET, url: 'https://x/'}
  response: {code: 200}
"""

LATIN_1 = ("version: 2\ninteractions:\n- id: 0\n  request: {method: GET, url: 'https://x/caf\xe9'}\n"
           "  response: {code: 200}\n").encode("latin-1")

# file name → (content: text, bytes or a function writing the file; the reason expected; its line)
CORPUS: dict[str, tuple[str | bytes | Callable[[Path], None], str, int | None]] = {
    "truncated.yaml": ("version: 2\ninteractions:\n- id: 0\n  request:\n    method: POST\n    url: 'https://x/\n",
                       "invalid YAML: found unexpected end of stream (while scanning a quoted scalar that starts at "
                       "line 6)", 7),
    "truncated.json": ('{"version": 2, "interactions": [{"id": 0, "request": {"method": "GET",',
                       "invalid JSON: Expecting property name enclosed in double quotes", 1),
    "top-level-list.yaml": ("- a\n- b\n", "not a cassette: expected a mapping with `version` and `interactions`, "
                            "found a list", 1),
    "interactions-string.yaml": ("version: 2\ninteractions: none yet\n", "`interactions` must be a list", 2),
    "alias-bomb.yaml": (alias_bomb(), "its aliases expand to more than", 7),
    "deep.yaml": ("version: 2\ninteractions: " + "[" * 100_000 + "]" * 100_000 + "\n",
                  "invalid YAML: exceeded maximum nesting depth", 2),
    "deep.json": ('{"version": 2, "interactions": ' + "[" * 100_000 + "]" * 100_000 + "}",
                  "invalid JSON: nested too deeply", None),
    "latin-1.yaml": (LATIN_1, "not UTF-8 text (invalid trailing UTF-8 octet at byte 78)", 4),
    "binary.yaml": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "not UTF-8 text", 1),
    "control-character.yaml": ("version: 2\ninteractions:\n- id: 0\n  request: {method: GET, url: 'https://x/'}\n"
                               "  response: {code: 200, body: 'bell \x07'}\n",
                               "a character YAML does not allow in text (#x0007", 5),
    "two-hundred-mb.yaml": (sparse_200_mb, "it is 209,715,2", None),  # 200 MB and a few bytes
    "fifo.yaml": (lambda path: os.mkfifo(path), "not a regular file (a FIFO): a cassette is a file", None),
    "fifo.json": (lambda path: os.mkfifo(path), "not a regular file (a FIFO)", None),
    "dangling.yaml": (lambda path: path.symlink_to(path.parent / "gone.yaml"),
                      "cannot read: No such file or directory; it is a symbolic link whose target is missing", None),
    "empty.yaml": ("", "not a cassette: expected a mapping with `version` and `interactions`, found an empty document",
                   1),
    "unknown-version.yaml": ("version: 3\ninteractions: []\n", "unknown cassette format (version: 3)", 1),
    "hybrid.yaml": ("version: 2\ninteractions:\n- request: {method: GET, uri: 'https://x/'}\n"
                    "  response: {status: {code: 200}, body: {string: ''}}\n",
                    "`version: 2` is go-vcr's, but the interactions are written as vcrpy writes them", 1),
    "tabs.yaml": ("version: 2\ninteractions:\n\t- id: 0\n", "invalid YAML: found character that cannot start any token",
                  3),
    "not-gzip.yaml.gz": (b"version: 2\ninteractions: []\n", "not gzip data, though the name ends in .gz", None),
    "gzip-bomb.yaml.gz": (lambda path: path.write_bytes(gzip.compress(b"#" * (80 * 1024 * 1024), compresslevel=1)),
                          "decompressed, it is 67,108,865 bytes or more, more than the 67,108,864 a cassette may be "
                          "(--max-cassette-size, CASSETTE_SERVER_MAX_CASSETTE_SIZE); raise the limit", None),
}
WRONG_TYPE_REASONS = [
    (3, "interaction 0: the interaction must be a mapping, not str 'just a string'"),
    (4, "interaction 1: request must be a mapping, not list ['GET', 'https://x/']"),
    (6, "interaction 2: request.method must be text like POST, not 5"),
    (8, "interaction 3: request.url must be a URL like 'https://api.openai.com/v1/…', not 7"),
    (10, "interaction 4: request.headers must be a mapping of header names to lists of values"),
    (12, "interaction 5: response.code must be an HTTP status (100-599), not '2xx'"),
    (14, "interaction 6: response.headers must be a mapping of header names to lists of values"),
    (16, "interaction 7: response.body must be a string or !!binary, not list"),
    (18, "interaction 8: response.duration [1] is not a duration like '1.5s' or '250ms'"),
    (20, "interaction 9: response.event_offsets must be a list of offsets"),
    (22, "interaction 10: id must be an integer, not 'first'"),
]
# Not errors: what real writers produce loads (BOMs, CRLF, a directory named like a cassette), and
# repeated go-vcr ids load with a note (go-vcr replays them too).
LOADS = {
    "bom-utf8.yaml": "\ufeff" + go_vcr(interaction(GOOD_BODY.replace("hi", "bom8"))),
    "crlf.yaml": go_vcr(interaction(GOOD_BODY.replace("hi", "crlf"))).replace("\n", "\r\n"),
    "directory.yaml/inside.yaml": go_vcr(interaction(GOOD_BODY.replace("hi", "inside"))),
    "repeated-ids.yaml": "version: 2\ninteractions:\n" + "".join(
        f"- id: 0\n  request: {{method: GET, url: 'https://x/{n}'}}\n  response: {{code: 200, body: '{n}'}}\n"
        for n in "ab"),
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bad") / "cassettes"
    directory.mkdir()
    (directory / "good.yaml").write_text(go_vcr(interaction()))
    (directory / "wrong-types.yaml").write_text(WRONG_TYPES)
    (directory / "bom-utf16.yaml").write_bytes(go_vcr(interaction(GOOD_BODY.replace("hi", "bom16"))).encode("utf-16"))
    for name, text in LOADS.items():
        (directory / name).parent.mkdir(exist_ok=True)
        (directory / name).write_text(text)
    for name, (content, _, _) in CORPUS.items():
        path = directory / name
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    (directory / "loop").symlink_to(directory)
    return directory


def test_every_bad_file_is_a_clear_error_and_the_good_ones_load_with_bounded_memory(corpus: Path) -> None:
    tracemalloc.start()
    result = load_paths([corpus])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 150 * 1024 * 1024, f"{peak / 2**20:.0f} MB"  # the 200 MB file and the 80 MB gzip bomb not held
    errors = {Path(error.file).name: error for error in result.errors if error.file != str(corpus / "wrong-types.yaml")}
    assert len(CORPUS) >= 15 and set(errors) == set(CORPUS)
    for name, (_, reason, line) in CORPUS.items():
        assert reason in errors[name].reason, (name, errors[name].reason)
        assert errors[name].line == line, (name, errors[name].line)
        assert errors[name].file == str(corpus / name)
    wrong = [(error.line, error.reason) for error in result.errors if error.file == str(corpus / "wrong-types.yaml")]
    assert wrong == WRONG_TYPE_REASONS
    loaded = {cassette.name: cassette for cassette in result.cassettes}
    assert set(loaded) == {"good", "bom-utf8", "bom-utf16", "crlf", "directory.yaml/inside", "repeated-ids"}
    assert [i.line for i in loaded["crlf"].interactions] == [3]
    assert loaded["repeated-ids"].notes == (
        "id 0 is used by 2 interactions (lines 3, 6): they are served in file order, but repeated-ids#0 names each "
        "of them in the journal and listings; number them apart",)
    assert [i.response.body for i in loaded["repeated-ids"].interactions] == [b"a", b"b"]


def test_a_live_server_reports_each_with_file_and_line_and_serves_the_good_ones(corpus: Path, serve) -> None:
    url, _ = serve(corpus, speed=0)
    health = httpx.get(url + "/__admin/health").json()
    assert health["status"] == "ok" and health["cassettes"] == 6
    assert health["load_errors"] == len(CORPUS) + len(WRONG_TYPE_REASONS)
    listing = httpx.get(url + "/__admin/cassettes").json()
    failed = {Path(entry["file"]).name: entry["load_errors"] for entry in listing if entry.get("load_errors")}
    [truncated] = failed["truncated.yaml"]
    assert (truncated["file"], truncated["line"], truncated["reason"]) == (
        str(corpus / "truncated.yaml"), 7, CORPUS["truncated.yaml"][1])
    assert len(failed["wrong-types.yaml"]) == len(WRONG_TYPE_REASONS)
    for text in ("hi", "bom8", "bom16", "crlf"):
        response = httpx.post(url + "/v1/chat/completions", content=GOOD_BODY.replace("hi", text))
        assert (response.status_code, response.content) == (200, b'{"ok":true}'), text
    assert httpx.post(url + "/__cassette/directory.yaml/inside/v1/chat/completions",
                      content=GOOD_BODY.replace("hi", "inside")).status_code == 200


def test_check_reports_them_as_errors_and_the_notes_as_warnings(corpus: Path) -> None:
    report = check_paths([corpus], MatchRules.build())
    errors = {(Path(finding.file).name, finding.line) for finding in report.errors}
    assert {(name, line) for name, (_, _, line) in CORPUS.items()} <= errors
    assert any(finding.kind == "note" and "repeated-ids" in finding.file for finding in report.warnings)


def test_a_file_the_server_may_not_read_says_so(tmp_path: Path) -> None:
    """Root reads any file, so as root the loader runs as nobody in a process of its own."""
    directory = Path(os.path.realpath(tmp_path)) / "private"
    directory.mkdir()
    secret = directory / "secret.yaml"
    secret.write_text(go_vcr(interaction()))
    secret.chmod(0)
    for part in [directory, *directory.parents]:
        part.chmod(part.stat().st_mode | 0o005)  # nobody may look into the directories, not read the file
    nobody = "os.setgid(65534); os.setuid(65534); " if os.geteuid() == 0 else ""  # after the imports: it reads them
    code = ("import json, os, sys; from pathlib import Path; from server.loader import load_paths; " + nobody +
            "print(json.dumps([[e.file, e.line, e.reason] for e in load_paths([Path(sys.argv[1])]).errors]))")
    done = subprocess.run([sys.executable, "-c", code, str(directory)], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[str(secret), None, "cannot read: Permission denied; give the server's user "
                                        "read permission on it (and on its directories)"]]


@pytest.mark.parametrize("syntax", ["yaml", "json"])
def test_a_big_cassette_under_the_limit_loads_in_a_few_times_its_size(tmp_path: Path, syntax: str) -> None:
    """What loading may hold at once is bounded by a multiple of --max-cassette-size: the text,
    the parsed document, the body's bytes (measured: about 3.5 times the file's size)."""
    path = tmp_path / f"big.{syntax}"
    body = "x" * 8_000_000
    if syntax == "json":
        path.write_text(json.dumps({"version": 2, "interactions": [{"id": 0, **interaction(response_body=body)}]}))
    else:  # by hand: PyYAML's emitter takes seconds over such a string
        path.write_text("version: 2\ninteractions:\n- id: 0\n  request: {method: POST, url: 'https://x/'}\n"
                        f"  response:\n    code: 200\n    body: '{body}'\n")
    tracemalloc.start()
    [cassette] = load_paths([path]).cassettes
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(cassette.interactions[0].response.body) == 8_000_000
    assert peak < 6 * path.stat().st_size, f"{peak / path.stat().st_size:.1f} times the file"
