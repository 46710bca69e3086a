"""Sequences of identical requests, sessions and scoping."""

from __future__ import annotations

from pathlib import Path

from server.loader import load_paths
from server.matching.index import Exhausted, Index
from server.matching.keys import MatchRules

from .conftest import interaction

RULES = MatchRules()
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def key(body: bytes = BODY):
    return RULES.key("POST", "/v1/chat/completions", "", {}.get, body)


def index(write_cassette, cassette_dir: Path, exhausted: Exhausted = Exhausted.REPEAT_LAST) -> Index:
    write_cassette("a", interaction(response_body="a0"), interaction(response_body="a1"))
    write_cassette("b", interaction(response_body="b0"))
    return Index(load_paths([cassette_dir]).cassettes, RULES, exhausted)


def bodies(idx: Index, count: int, **kw) -> list[bytes | None]:
    out = []
    for _ in range(count):
        take = idx.take(key(), **kw)
        out.append(take.interaction.response.body if take.interaction else None)
    return out


def test_recorded_order_then_repeat_last(write_cassette, cassette_dir) -> None:
    idx = index(write_cassette, cassette_dir)
    assert bodies(idx, 5) == [b"a0", b"a1", b"b0", b"b0", b"b0"]


def test_exhausted_error_is_a_miss_listing_the_candidates(write_cassette, cassette_dir) -> None:
    idx = index(write_cassette, cassette_dir, Exhausted.ERROR)
    assert bodies(idx, 3) == [b"a0", b"a1", b"b0"]
    take = idx.take(key())
    assert take.interaction is None and [i.label for i in take.candidates] == ["a#0", "a#1", "b#0"]


def test_sessions_have_their_own_positions(write_cassette, cassette_dir) -> None:
    idx = index(write_cassette, cassette_dir)
    assert bodies(idx, 1, session="s1") == [b"a0"]
    assert bodies(idx, 1, session="s2") == [b"a0"]
    assert bodies(idx, 1, session="s1") == [b"a1"]
    assert bodies(idx, 1) == [b"a0"]


def test_scope_limits_to_one_cassette(write_cassette, cassette_dir) -> None:
    idx = index(write_cassette, cassette_dir)
    assert bodies(idx, 2, scope="b") == [b"b0", b"b0"]
    assert bodies(idx, 1, scope="a") == [b"a0"]
    assert idx.take(key(b"{}"), scope="a").interaction is None


def test_reset_one_session_or_all(write_cassette, cassette_dir) -> None:
    idx = index(write_cassette, cassette_dir)
    bodies(idx, 2, session="s1")
    bodies(idx, 2, session="s2")
    idx.reset("s1")
    assert bodies(idx, 1, session="s1") == [b"a0"]
    assert bodies(idx, 1, session="s2") == [b"b0"]
    idx.reset()
    assert bodies(idx, 1, session="s2") == [b"a0"]


def test_served_counts(write_cassette, cassette_dir) -> None:
    idx = index(write_cassette, cassette_dir)
    bodies(idx, 4, session="s")
    counts = {(session, i.label): n for (session, i), n in idx.served.items()}
    assert counts == {("s", "a#0"): 1, ("s", "a#1"): 1, ("s", "b#0"): 2}
