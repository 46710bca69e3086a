"""``check``: load errors, unknown versions, duplicates with different responses, secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.checks import ERROR, WARNING, check_paths, is_placeholder, preview
from server.matching.keys import MatchRules

from .conftest import BUNDLED, go_vcr, interaction

OPENAI_KEY = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 2


def kinds(paths: list[Path], **kw) -> list[tuple[str, str, int | None]]:
    return [(f.kind, f.severity, f.line) for f in check_paths(paths, MatchRules(), **kw).findings]


def test_bundled_cassettes_are_clean() -> None:
    report = check_paths([BUNDLED], MatchRules())
    assert report.findings == () and len(report.result.cassettes) == 6


def test_finds_a_planted_secret_in_a_body(write_cassette, cassette_dir: Path) -> None:
    write_cassette("leak", interaction(f'{{"model":"m","api_key":"{OPENAI_KEY}"}}'))
    [finding] = check_paths([cassette_dir], MatchRules()).findings
    assert (finding.kind, finding.severity) == ("secret", ERROR)
    assert finding.file.endswith("leak.yaml") and OPENAI_KEY in Path(finding.file).read_text().splitlines()[finding.line - 1]
    assert "sk-proj…" in finding.message and OPENAI_KEY not in str(finding)  # never printed whole
    assert "REDACTED" in finding.message


def test_finds_credential_headers_and_query_keys(write_cassette, cassette_dir: Path) -> None:
    write_cassette("headers", interaction(request_headers={
        "Authorization": [f"Bearer {OPENAI_KEY}"],  # reported once, as a header, not again as an sk- key
        "X-Api-Key": ["sk-ant-api03-" + "Zz9" * 30],
        "X-Goog-Api-Key": ["AIzaSyD-real-looking-key-123456"],
        "Api-Key": ["REDACTED"],
        "User-Agent": ["sk-but-not-a-key"],
    }), interaction(url="https://generativelanguage.googleapis.com/v1beta/models/m:generateContent?key=AIzaSyD123456789abcdefghijkl&alt=sse"))
    findings = check_paths([cassette_dir], MatchRules()).findings
    assert [f.kind for f in findings] == ["secret"] * 4
    messages = "\n".join(f.message for f in findings)
    for where in ("request header authorization", "request header x-api-key", "request header x-goog-api-key",
                  "query parameter key="):
        assert where in messages
    assert "'Bearer sk-proj…'" in messages and "request header api-key" not in messages  # REDACTED
    lines = Path(findings[0].file).read_text().splitlines()
    assert "Authorization:" in lines[findings[0].line - 1]


def test_finds_credential_headers_and_query_keys_in_files_that_do_not_load(write_cassette, cassette_dir: Path) -> None:
    headers = {"Authorization": [f"Bearer {OPENAI_KEY}"], "X-Goog-Api-Key": ["AIzaSyD-real-looking-key-123456"],
               "Api-Key": ["REDACTED"], "X-Api-Key": []}
    leaky = interaction(request_headers=headers, url="https://g.example/v1beta/m:generateContent?alt=sse&key=AIzaSyD123456789abc")
    write_cassette("yaml", go_vcr(leaky) + "- id: 1\n  request: [unclosed\n")  # bad YAML after the leak
    del leaky["request"]["url"]  # JSON that parses, but is no cassette we load
    (cassette_dir / "json.json").write_text(json.dumps({"version": 2, "interactions": [{"id": 0, **leaky}]}, indent=2))
    (cassette_dir / "line.json").write_text(json.dumps({"version": 2, "interactions": [{"id": 0, **leaky}]}))
    (cassette_dir / "flow.yaml").write_text("version: 2\ninteractions:\n- request: {headers: {x-api-key: [sk-ant-api03-"
                                            + "Zz9" * 30 + "]}}\n")
    findings = [f for f in check_paths([cassette_dir], MatchRules()).findings if f.kind == "secret"]
    found = {(Path(f.file).name, f.message.split(" (in the text")[0]) for f in findings}
    assert found == {("yaml.yaml", "request header authorization"), ("yaml.yaml", "request header x-goog-api-key"),
                     ("yaml.yaml", "query parameter key= in a URL"), ("json.json", "request header authorization"),
                     ("json.json", "request header x-goog-api-key"), ("line.json", "request header authorization"),
                     ("line.json", "request header x-goog-api-key"), ("flow.yaml", "request header x-api-key")}
    for finding in findings:  # each at the line that names it; the key is never printed whole
        line = Path(finding.file).read_text().splitlines()[finding.line - 1].lower()
        assert ("key=" if "query" in finding.message else finding.message.split()[2]) in line
        assert "did not load" in finding.message and OPENAI_KEY not in finding.message and "AIzaSyD123456" not in finding.message
    assert "'Bearer sk-proj…'" in next(f.message for f in findings if f.file.endswith("json.json"))


@pytest.mark.parametrize("value", ["", "REDACTED", "[FILTERED]", "Bearer ***", "Bearer xxxxxxxx", "<your-api-key>",
                                   "${OPENAI_API_KEY}", "dummy"])
def test_placeholders_are_not_secrets(value: str) -> None:
    assert is_placeholder(value)


@pytest.mark.parametrize("value", [OPENAI_KEY, "Bearer eyJhbGciOiJIUzI1NiJ9.abc.def", "AIzaSyD123456789"])
def test_real_looking_values_are_secrets(value: str) -> None:
    assert not is_placeholder(value)


def test_preview_shows_only_a_prefix() -> None:
    assert preview(OPENAI_KEY) == "'sk-proj…'"
    assert preview("Bearer abcdefghijkl") == "'Bearer abcd…'"


def test_load_errors_and_unknown_versions_with_file_and_line(write_cassette, cassette_dir: Path) -> None:
    write_cassette("broken", "version: 2\ninteractions:\n- id: 0\n  request: [unclosed\n")
    write_cassette("future", "# a comment\nversion: 7\ninteractions: []\n")
    findings = check_paths([cassette_dir], MatchRules()).findings
    assert [(f.kind, Path(f.file).name, f.line) for f in findings] == [("load-error", "broken.yaml", 5),
                                                                         ("unknown-version", "future.yaml", 2)]
    assert str(findings[1]).startswith(f"{cassette_dir / 'future.yaml'}:2: error: unknown cassette format (version: 7)")


def test_duplicates_with_different_responses(write_cassette, cassette_dir: Path) -> None:
    write_cassette("a", interaction(response_body="one"), interaction(response_body="one"), interaction(response_body="two"))
    write_cassette("b", interaction('{"x":1}', response_body="b"))
    write_cassette("c", interaction('{ "x" : 1.0 }', response_body="c"))  # the same request, as matching sees it
    findings = check_paths([cassette_dir], MatchRules()).findings
    assert [(f.kind, f.severity, Path(f.file).name) for f in findings] == [("duplicate", ERROR, "a.yaml"),
                                                                          ("duplicate", ERROR, "c.yaml")]
    assert "a#0" in findings[0].message and "a#2" in findings[0].message and "--allow-duplicates" in findings[0].message
    assert "b#0" in findings[1].message and "X-Cassette" in findings[1].message
    assert [severity for _, severity, _ in kinds([cassette_dir], allow_duplicates=True)] == [WARNING, WARNING]


def test_duplicates_follow_the_match_rules(write_cassette, cassette_dir: Path) -> None:
    write_cassette("a", interaction('{"q":1,"user":"u1"}', response_body="one"), interaction('{"q":1,"user":"u2"}', response_body="two"))
    assert kinds([cassette_dir]) == []
    ignoring_user = check_paths([cassette_dir], MatchRules.build(ignore_fields=("user",)))
    assert [f.kind for f in ignoring_user.findings] == ["duplicate"]


def test_placeholder_keys_in_text_are_not_reported(write_cassette, cassette_dir: Path) -> None:
    write_cassette("fine", interaction('{"note":"use sk-xxxxxxxxxxxxxxxxxxxxxxxx or sk-REDACTED-0000000000000000000 or scikit-learn"}'))
    assert kinds([cassette_dir]) == []


def test_nothing_to_check_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text("{}")
    assert kinds([tmp_path]) == [("load-error", ERROR, None)]
    [finding] = check_paths([tmp_path], MatchRules()).findings
    assert "no cassette files (*.yaml, *.yml, *.yaml.gz, *.yml.gz, or *.json with \"interactions\") found" in finding.message
    assert kinds([tmp_path / "missing"]) == [("load-error", ERROR, None)]
