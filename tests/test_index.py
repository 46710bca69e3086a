"""Sequences of identical requests, sessions and scoping; indexes built from the previous one."""

from __future__ import annotations

import gc
import logging
import time
import tracemalloc
from pathlib import Path

from server.loader import load_paths
from server.matching.index import Exhausted, Index
from server.matching.keys import MatchRules
from server.matching.sessions import Sessions

from .conftest import interaction

RULES = MatchRules()
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


def key(body: bytes = BODY, path: str = "/v1/chat/completions"):
    return RULES.key("POST", path, "", {}.get, body)


def index(write_cassette, cassette_dir: Path, exhausted: Exhausted = Exhausted.REPEAT_LAST, **kw) -> Index:
    write_cassette("a", interaction(response_body="a0"), interaction(response_body="a1"))
    write_cassette("b", interaction(response_body="b0"))
    return Index(load_paths([cassette_dir]).cassettes, RULES, exhausted, **kw)


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


def test_scoped_and_unscoped_requests_share_one_position_per_recording(write_cassette, cassette_dir) -> None:
    idx = index(write_cassette, cassette_dir)
    assert bodies(idx, 1) == [b"a0"]
    assert bodies(idx, 1, scope="a") == [b"a1"]  # not a#0 again
    assert bodies(idx, 1, scope="b") == [b"b0"]
    assert bodies(idx, 1) == [b"b0"]  # everything used: the last one again
    assert bodies(idx, 1, scope="a") == [b"a1"]


def test_reset_one_session_or_all(write_cassette, cassette_dir) -> None:
    idx = index(write_cassette, cassette_dir)
    bodies(idx, 2, session="s1")
    bodies(idx, 2, session="s2")
    idx.sessions.reset("s1")
    assert bodies(idx, 1, session="s1") == [b"a0"]
    assert bodies(idx, 1, session="s2") == [b"b0"]
    idx.sessions.reset()
    assert bodies(idx, 1, session="s2") == [b"a0"]


def test_served_counts(write_cassette, cassette_dir) -> None:
    idx = index(write_cassette, cassette_dir)
    bodies(idx, 4, session="s")
    counts = {(session, i.label): n for i, by_session in idx.usage().items() for session, n in by_session.items()}
    assert counts == {("s", "a#0"): 1, ("s", "a#1"): 1, ("s", "b#0"): 2}


def test_a_position_given_back_is_served_next_smallest_first(write_cassette, cassette_dir) -> None:
    write_cassette("a", *[interaction(response_body=f"a{n}") for n in range(4)])
    idx = Index(load_paths([cassette_dir]).cassettes, RULES, Exhausted.REPEAT_LAST)
    takes = [idx.take(key(), session="s") for _ in range(3)]
    for given_back in (takes[2], takes[0]):  # their clients left before the headers
        idx.sessions.give_back("s", given_back.recording, advanced=True)
    assert bodies(idx, 4, session="s") == [b"a0", b"a2", b"a3", b"a3"]
    counts = {i.label: by_session["s"] for i, by_session in idx.usage().items()}
    assert counts == {"a#0": 1, "a#1": 1, "a#2": 1, "a#3": 2}  # what was given back was not counted twice


def test_sessions_are_bounded_least_recently_used_first(write_cassette, cassette_dir, caplog) -> None:
    idx = index(write_cassette, cassette_dir, sessions=Sessions(limit=2))
    with caplog.at_level(logging.INFO, logger="cassette_server"):
        for session in ("s1", "s2", "s1", "s3"):  # s2 is then the least recently used
            bodies(idx, 1, session=session)
    assert idx.sessions.names() == ["s1", "s3"]
    assert [r.getMessage() for r in caplog.records if "forgotten" in r.getMessage()] == [
        "Session 's2' forgotten: more than 2 sessions (--max-sessions), and it was used least recently; "
        "it starts its sequences afresh if it comes back"]
    assert bodies(idx, 1, session="s1") == [b"b0"]
    assert bodies(idx, 1, session="s2") == [b"a0"]


def test_positions_hold_no_copy_of_the_received_body(write_cassette, cassette_dir) -> None:
    big = b'{"messages":[{"role":"user","content":"' + b"x" * 100_000 + b'"}]}'
    write_cassette("big", interaction(big.decode()))
    idx = Index(load_paths([cassette_dir]).cassettes, RULES, Exhausted.REPEAT_LAST)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for session in range(1000):
            assert idx.take(key(bytes(big)), session=f"job-{session}").interaction is not None
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 5_000_000, grown  # a copy per session would be 100 MB


def test_keys_of_small_json_bodies_take_about_their_size(write_cassette, cassette_dir) -> None:
    """orjson's bytes keep the 4 KB buffer they were written in: an index keeping them as keys
    held 4 KB per recorded JSON body (39 MiB of a 10,000-interaction corpus)."""
    write_cassette("many", *(interaction(f'{{"model":"m","n":{number}}}') for number in range(1_000)))
    cassettes = load_paths([cassette_dir]).cassettes
    gc.collect()
    tracemalloc.start()
    try:
        idx = Index(cassettes, RULES, Exhausted.REPEAT_LAST, relax=False)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert idx.take(key(b'{"n":7,"model":"m"}')).interaction is not None
    assert held < 1_000_000, held  # 4.7 MB with orjson's buffers


def test_resetting_sessions_one_by_one_is_cheap(write_cassette, cassette_dir) -> None:
    idx = index(write_cassette, cassette_dir)
    sessions = [f"job-{n}" for n in range(5000)]
    for session in sessions:
        bodies(idx, 1, session=session)
    start = time.perf_counter()
    for session in sessions:
        idx.sessions.reset(session)
    assert time.perf_counter() - start < 1.0  # rebuilding every session's state on each reset took seconds
    assert len(idx.sessions) == 0


def test_a_new_index_takes_over_positions_and_counts(write_cassette, cassette_dir) -> None:
    old = index(write_cassette, cassette_dir)
    assert bodies(old, 2, session="s") == [b"a0", b"a1"]
    bodies(old, 1, session="t")
    cassettes = {cassette.name: cassette for cassette in old.cassettes}
    changed_b = load_paths([write_cassette("b", interaction(response_body="B0"))]).cassettes[0]
    new = Index((cassettes["a"], changed_b), RULES, Exhausted.REPEAT_LAST, previous=old)
    old.sessions.adopt(new.changed, new.sequence)
    assert new.changed == {"b"}
    assert bodies(new, 2, session="s") == [b"B0", b"B0"]  # a was used up before the swap
    assert bodies(new, 1, session="t") == [b"a1"]
    usage = {i.label: dict(by_session) for i, by_session in new.usage().items()}
    assert usage == {"a#0": {"s": 1, "t": 1}, "a#1": {"s": 1, "t": 1}, "b#0": {"s": 2}}


def test_positions_are_clamped_and_dropped_with_the_recordings(write_cassette, cassette_dir) -> None:
    old = index(write_cassette, cassette_dir)
    assert bodies(old, 3, session="s") == [b"a0", b"a1", b"b0"]
    shorter_a = load_paths([write_cassette("a", interaction(response_body="A0"))]).cassettes[0]
    new = Index((shorter_a,), RULES, Exhausted.ERROR, previous=old)  # b is gone, a has one recording left
    old.sessions.adopt(new.changed, new.sequence)
    assert new.changed == {"a", "b"}
    assert [i.label for i in new.usage()] == ["a#0"]
    longer_a = load_paths([write_cassette("a", *[interaction(response_body=f"A{n}") for n in range(3)])]).cassettes[0]
    newer = Index((longer_a,), RULES, Exhausted.REPEAT_LAST, previous=new)
    new.sessions.adopt(newer.changed, newer.sequence)
    assert bodies(newer, 1, session="s") == [b"A1"]  # clamped to 1 while a was one long


def test_an_index_built_from_the_previous_one_answers_like_a_fresh_one(write_cassette, cassette_dir) -> None:
    write_cassette("a", interaction(response_body="a0"), interaction(url="https://x/v1/messages?beta=true", response_body="m"))
    write_cassette("b", interaction(response_body="b0"))
    write_cassette("c", interaction(response_body="c0"))
    old = Index(load_paths([cassette_dir]).cassettes, RULES, Exhausted.ERROR)
    (cassette_dir / "a.yaml").unlink()
    write_cassette("b", interaction(response_body="B0"), interaction(url="https://x/v1/messages?beta=true", response_body="M"))
    reloaded = load_paths([cassette_dir], reuse={c.file: c for c in old.cassettes if c.name == "c"}).cassettes
    patched = Index(reloaded, RULES, Exhausted.ERROR, previous=old)
    fresh = Index(load_paths([cassette_dir]).cassettes, RULES, Exhausted.ERROR)
    assert patched.by_name["c"] is old.by_name["c"] and patched.changed == {"a", "b"}
    for idx in (patched, fresh):
        assert [i.response.body for i in idx.peek(key())] == [b"B0", b"c0"]
        assert [(i.label, k == key_) for (i, k), key_ in zip(idx.recorded(), [key(), key(path="/v1/messages"), key()])] \
            == [("b#0", True), ("b#1", False), ("c#0", True)]
        found = idx.relaxed.find(key(path="/messages"))
        assert found.recorded is not None and idx.take(found.recorded, session="x").interaction.label == "b#1"
        assert idx.relaxed.find(key(path="/v1/embeddings")).recorded is None
    assert old.relaxed.find(key(path="/messages")).recorded is not None  # the old index is left as it was
    assert [i.label for i in old.peek(key())] == ["a#0", "b#0", "c#0"]


def test_a_body_sent_as_recorded_is_keyed_without_parsing_it(write_cassette, cassette_dir, monkeypatch) -> None:
    recorded = '{"model": "m",  "messages": [{"role": "user", "content": "hi"}]}'  # not canonical JSON
    form = b"--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n--b--\r\n"
    write_cassette("c", interaction(recorded),
                   interaction(form, request_headers={"Content-Type": ["multipart/form-data; boundary=b"]}))
    rules = MatchRules()
    index = Index(load_paths([cassette_dir]).cassettes, rules, Exhausted.ERROR)
    assert list(index.known_bodies) == [recorded.encode()]  # JSON bodies only: a form's key depends on its headers

    def never(*_args, **_kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(MatchRules, "body_key", never)
    key = rules.key("POST", "/v1/chat/completions", "", lambda name: None, recorded.encode(), index.known_bodies)
    assert index.take(key).interaction.id == 0
