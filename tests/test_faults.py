"""Fault rules in-process: parsing and validation (JSON, header, --fault text, faults files),
which requests a rule applies to, times, seeded probability, reset and the rule limit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.models import Interaction, RecordedRequest
from server.replay.faults import (
    DEFAULT_RETRY_AFTER,
    HEADER_RULE,
    Fault,
    FaultRuleError,
    Faults,
    Filters,
    Kind,
    RuleSpec,
    TooManyRules,
    load_rules_file,
    parse_header,
    parse_rule,
    parse_spec,
)
from server.responses import build_response

EVENTS = b"".join(f"data: {n}\n\n".encode() for n in range(5))


def recording(*, cassette: str = "c", stream: bool = False, body: bytes = b'{"ok":true}',
              url: str = "https://api.openai.com/v1/chat/completions") -> Interaction:
    content_type = "text/event-stream" if stream else "application/json"
    response = build_response(status=200, reason=None, headers=[("Content-Type", content_type)],
                              body=EVENTS if stream else body, duration=0)
    request = RecordedRequest("POST", url, "/v1/chat/completions", "", (), b"{}")
    return Interaction(cassette, 0, request, response, f"{cassette}.yaml")


def pick(faults: Faults, interaction: Interaction | None = None, *, session: str = "default", method: str = "POST",
         path: str = "/v1/chat/completions", header: Fault | None = None):
    return faults.pick(session=session, method=method, path=path, interaction=interaction or recording(), header=header)


def rule(**data) -> RuleSpec:
    return parse_rule(data)


# --- parsing ---------------------------------------------------------------------------------


def test_a_json_rule_with_its_parameters_and_filters() -> None:
    spec = rule(kind="status", status=418, retry_after=0.5, session="s", cassette="weather", method="post",
                path="/v1/*", times=2, probability=0.5, seed=7)
    assert spec.fault == Fault(Kind.STATUS, status=418, retry_after=0.5)
    assert spec.filters == Filters(session="s", cassette="weather", method="POST", path="/v1/*", times=2,
                                   probability=0.5, seed=7)


def test_defaults_per_kind() -> None:
    assert rule(kind="rate_limit").fault.retry_after == DEFAULT_RETRY_AFTER
    assert rule(kind="server_error").fault.retry_after is None
    assert rule(kind="cut_stream").fault.after_events == 0
    assert rule(kind="truncate").fault.after_bytes == 0


def test_the_header_and_flag_text_use_the_same_validator() -> None:
    assert parse_spec("rate_limit; retry_after=2; times=1; path=/v1/chat/*") == rule(
        kind="rate_limit", retry_after=2, times=1, path="/v1/chat/*")
    assert parse_header(" cut_stream ;after_events = 3 ") == Fault(Kind.CUT_STREAM, after_events=3)
    assert parse_spec("stall; seconds=0.25; seed=abc; probability=1").filters.seed == "abc"


@pytest.mark.parametrize("data, field, words", [
    ({}, "kind", "missing"),
    ({"kind": "explode"}, "kind", "not a fault kind"),
    ({"kind": "status"}, "status", "required by kind status"),
    ({"kind": "status", "status": 200}, "status", "from 400 to 599"),
    ({"kind": "status", "status": "429"}, "status", "whole number"),
    ({"kind": "rate_limit", "status": 430}, "status", "does not apply to kind rate_limit"),
    ({"kind": "rate_limit", "retry_after": -1}, "retry_after", "from 0 to 3600"),
    ({"kind": "rate_limit", "retry_after": True}, "retry_after", "must be a number"),
    ({"kind": "stall"}, "seconds", "required by kind stall"),
    ({"kind": "delay", "seconds": 0}, "seconds", "more than 0"),
    ({"kind": "cut_stream", "after_bytes": 3}, "after_bytes", "does not apply to kind cut_stream"),
    ({"kind": "cut_stream", "after_events": 1.5}, "after_events", "whole number"),
    ({"kind": "disconnect", "retry_after": 1}, "retry_after", "takes no parameter"),
    ({"kind": "disconnect", "times": 0}, "times", "from 1"),
    ({"kind": "disconnect", "probability": 0}, "probability", "more than 0"),
    ({"kind": "disconnect", "probability": 1.5}, "probability", "to 1"),
    ({"kind": "disconnect", "seed": 3}, "seed", "give a probability too"),
    ({"kind": "disconnect", "method": "PO ST"}, "method", "HTTP method"),
    ({"kind": "disconnect", "path": ""}, "path", "non-empty string"),
    ({"kind": "disconnect", "session": "s" * 201}, "session", "longer than 200"),
    ({"kind": "disconnect", "colour": "red"}, "colour", "not a fault rule field"),
])
def test_bad_rules_name_the_field(data, field, words) -> None:
    with pytest.raises(FaultRuleError) as raised:
        parse_rule(data)
    assert raised.value.field == field and words in str(raised.value)
    assert str(raised.value).startswith(f"{field}: ")


@pytest.mark.parametrize("text, words", [
    ("rate_limit; times=1", "times: a filter, which only a rule takes"),
    ("rate_limit; retry_after", "expected name=value"),
    ("rate_limit; retry_after=1; retry_after=2", "retry_after: given twice"),
    ("rate_limit; retry_after=soon", "retry_after: must be a number"),
    ("", "kind: '' is not a fault kind"),
    ("rate_limit" + " " * 5000, "longer than 4096"),
])
def test_bad_header_text(text, words) -> None:
    with pytest.raises(FaultRuleError, match=words):
        parse_header(text)


def test_not_an_object() -> None:
    with pytest.raises(FaultRuleError, match="a JSON object"):
        parse_rule(["rate_limit"])


def test_a_faults_file_in_json_or_yaml(tmp_path: Path) -> None:
    as_json = tmp_path / "faults.json"
    as_json.write_text(json.dumps([{"kind": "rate_limit", "times": 1}, {"kind": "delay", "seconds": 2}]))
    as_yaml = tmp_path / "faults.yaml"
    as_yaml.write_text("- kind: rate_limit\n  times: 1\n- {kind: delay, seconds: 2}\n")
    assert load_rules_file(as_json) == load_rules_file(as_yaml) == (
        rule(kind="rate_limit", times=1), rule(kind="delay", seconds=2))


def test_a_bad_faults_file_names_the_file_and_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text("- kind: rate_limit\n- kind: stall\n")
    with pytest.raises(ValueError, match=r"faults.yaml, rule 2: seconds: required by kind stall"):
        load_rules_file(path)
    path.write_text("kind: rate_limit\n")
    with pytest.raises(ValueError, match="must hold a list of rules"):
        load_rules_file(path)
    with pytest.raises(ValueError, match="cannot read the faults file"):
        load_rules_file(tmp_path / "missing.yaml")


# --- which requests a rule applies to ------------------------------------------------------------


def test_no_rule_is_inactive_and_picks_nothing() -> None:
    faults = Faults()
    assert not faults.active and pick(faults) is None


def test_filters() -> None:
    faults = Faults()
    faults.add(rule(kind="server_error", session="s1", cassette="weather", method="GET", path="/v1/models/*"))
    weather = recording(cassette="weather")
    assert pick(faults, weather, session="s1", method="get", path="/v1/models/gpt") is not None
    assert pick(faults, weather, session="s2", method="GET", path="/v1/models/gpt") is None
    assert pick(faults, recording(cassette="other"), session="s1", method="GET", path="/v1/models/gpt") is None
    assert pick(faults, weather, session="s1", method="POST", path="/v1/models/gpt") is None
    assert pick(faults, weather, session="s1", method="GET", path="/v1/chat/completions") is None


def test_a_glob_star_crosses_slashes_and_matches_the_whole_path() -> None:
    faults = Faults()
    faults.add(rule(kind="server_error", path="/v1beta/*:streamGenerateContent"))
    assert pick(faults, path="/v1beta/models/gemini-2.5-flash:streamGenerateContent") is not None
    assert pick(faults, path="/v1beta/models/gemini-2.5-flash:generateContent") is None
    assert pick(faults, path="/prefix/v1beta/models/x:streamGenerateContent") is None


def test_cuts_apply_only_where_they_cut_something() -> None:
    faults = Faults()
    faults.add(rule(kind="cut_stream", after_events=3))
    faults.add(rule(kind="truncate", after_bytes=5))
    stream, whole = recording(stream=True), recording(body=b"0123456789")
    assert pick(faults, stream).rule == "f1"  # 5 events: 3 are sent
    assert pick(faults, whole).rule == "f2"  # a body sent whole is truncate's, not cut_stream's
    assert pick(faults, recording(body=b"01234")) is None  # 5 bytes: nothing left to cut
    assert pick(Faults([rule(kind="stall", seconds=1, after_events=5)]), stream) is None  # no piece after the 5th
    assert pick(Faults([rule(kind="cut_stream", after_events=5)]), stream) is None


def test_first_rule_that_applies_fires_and_times_spends_it() -> None:
    faults = Faults()
    first = faults.add(rule(kind="rate_limit", times=2))
    second = faults.add(rule(kind="server_error"))
    assert [pick(faults).kind for _ in range(4)] == [Kind.RATE_LIMIT, Kind.RATE_LIMIT, Kind.SERVER_ERROR,
                                                     Kind.SERVER_ERROR]
    assert (first.fired, first.remaining, first.spent) == (2, 0, True)
    assert (second.fired, second.remaining, second.spent) == (2, None, False)
    assert [r.id for r in faults.rules()] == ["f1", "f2"]  # a spent rule stays listed


def test_spent_rules_leave_the_server_inactive() -> None:
    faults = Faults()
    faults.add(rule(kind="rate_limit", times=1))
    assert faults.active
    assert pick(faults).rule == "f1"
    assert not faults.active and pick(faults) is None


def test_the_header_wins_over_rules_and_counts_nothing() -> None:
    faults = Faults()
    listed = faults.add(rule(kind="server_error"))
    fired = pick(faults, header=parse_header("rate_limit"))
    assert (fired.kind, fired.rule) == (Kind.RATE_LIMIT, HEADER_RULE) and listed.fired == 0
    assert pick(faults, recording(), header=parse_header("cut_stream")) is None  # a body sent whole: nothing to cut


def draws(seed: int, count: int = 40) -> list[bool]:
    faults = Faults()
    faults.add(rule(kind="server_error", probability=0.5, seed=seed))
    return [pick(faults) is not None for _ in range(count)]


def test_a_seeded_probability_fires_on_the_same_requests_every_time() -> None:
    first = draws(7)
    assert draws(7) == first
    assert 5 < sum(first) < 35  # about half
    assert draws(8) != first


def test_draws_are_taken_only_for_requests_that_pass_the_filters() -> None:
    faults = Faults()
    faults.add(rule(kind="server_error", probability=0.5, seed=7, session="s"))
    fired = []
    for n in range(40):
        pick(faults, session="other")  # never drawn for: the sequence of session s is unchanged
        fired.append(pick(faults, session="s") is not None)
    assert fired == draws(7)


def test_an_unseeded_probability_gets_a_seed_that_is_shown() -> None:
    faults = Faults()
    added = faults.add(rule(kind="server_error", probability=0.5))
    assert isinstance(added.seed, int) and added.to_json()["seed"] == added.seed


def test_an_unseeded_startup_rule_keeps_its_seed_across_resets() -> None:
    faults = Faults([rule(kind="server_error", probability=0.5)])
    seed = faults.rules()[0].seed
    first = [pick(faults) is not None for _ in range(30)]
    faults.clear()
    faults.reset()
    assert faults.rules()[0].seed == seed and [pick(faults) is not None for _ in range(30)] == first


def test_listing() -> None:
    faults = Faults([rule(kind="cut_stream", after_events=3, times=1)])
    faults.add(rule(kind="status", status=503, path="/v1/*"))
    pick(faults, recording(stream=True))
    assert [r.to_json() for r in faults.rules()] == [
        {"id": "f1", "kind": "cut_stream", "after_events": 3, "session": None, "cassette": None, "method": None,
         "path": None, "times": 1, "probability": None, "seed": None, "fired": 1, "remaining": 0, "spent": True,
         "source": "startup"},
        {"id": "f2", "kind": "status", "status": 503, "retry_after": None, "session": None, "cassette": None,
         "method": None, "path": "/v1/*", "times": None, "probability": None, "seed": None, "fired": 0,
         "remaining": None, "spent": False, "source": "api"},
    ]


def test_remove_and_clear() -> None:
    faults = Faults()
    faults.add(rule(kind="server_error"))
    faults.add(rule(kind="rate_limit"))
    assert faults.remove("f1").id == "f1" and faults.remove("f1") is None
    assert [r.id for r in faults.rules()] == ["f2"]
    assert faults.clear() == 1 and not faults.active and faults.rules() == []
    assert faults.add(rule(kind="rate_limit")).id == "f3"  # ids are never reused


def test_reset_removes_added_rules_and_rearms_startup_ones() -> None:
    faults = Faults([rule(kind="rate_limit", times=1), rule(kind="server_error", probability=0.5, seed=3)])
    faults.add(rule(kind="delay", seconds=1))

    def run() -> list[str]:
        return [fired.rule if fired.rule in ("f1", "f2") else "added" for fired in (pick(faults) for _ in range(12))]

    first = run()
    assert first[0] == "f1" and "f2" in first and "added" in first
    faults.clear()
    faults.reset()
    assert [(r.id, r.fired, r.startup) for r in faults.rules()] == [
        ("f1", 0, True), ("f2", 0, True)]
    faults.add(rule(kind="delay", seconds=1))
    assert run() == first  # fired again as new, with the same draws from the start


def test_reset_of_one_session() -> None:
    faults = Faults([rule(kind="rate_limit", session="a", times=1), rule(kind="rate_limit", times=1)])
    faults.add(rule(kind="server_error", session="a"))
    faults.add(rule(kind="server_error", session="b"))
    pick(faults, session="a")
    pick(faults, session="b")
    faults.reset("a")
    assert [(r.id, r.fired) for r in faults.rules()] == [("f1", 0), ("f2", 1), ("f4", 0)]


def test_the_number_of_rules_is_bounded() -> None:
    faults = Faults(limit=3)
    for _ in range(3):
        faults.add(rule(kind="server_error"))
    with pytest.raises(TooManyRules, match="3 fault rules already"):
        faults.add(rule(kind="server_error"))
