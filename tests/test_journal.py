"""The request journal: bounded, newest first, filtered, cleared per session."""

from __future__ import annotations

import base64
import gc
import json
import random
import sys
import time
import tracemalloc

import orjson
import pytest

from server import Settings
from server.errors import CassetteMiss
from server.journal import HIT_BYTES, STR_BYTES, Journal, JournalEntry, Outcome, entry_bytes, text_bytes
from server.loader import load_paths
from server.models import ReceivedRequest
from server.service import CassetteService

from .conftest import interaction


def entry(session: str = "default", *, hit: object = None, path: str = "/v1/x") -> JournalEntry:
    return JournalEntry(time=0.0, session=session, method="POST", path=path, query="", status=200 if hit else 404,
                        duration=0.01, interaction=hit,  # type: ignore[arg-type]
                        error=None if hit else CassetteMiss("no match"))


def test_newest_first_and_bounded() -> None:
    journal = Journal(3)
    for n in range(5):
        journal.add(entry(path=f"/{n}"))
    assert [e.path for e in journal.entries()] == ["/4", "/3", "/2"] and len(journal) == 3


def test_filters_and_limit(write_cassette, cassette_dir) -> None:
    write_cassette("c", interaction())
    served = load_paths([cassette_dir]).cassettes[0].interactions[0]
    journal = Journal(10)
    for session, hit in [("a", served), ("b", None), ("a", None), ("b", served)]:
        journal.add(entry(session, hit=hit))
    assert [(e.session, e.matched) for e in journal.entries(session="a")] == [("a", False), ("a", True)]
    assert [e.session for e in journal.entries(matched=True)] == ["b", "a"]
    assert [e.session for e in journal.entries(matched=False, limit=1)] == ["a"]


def test_clear_one_session_or_all() -> None:
    journal = Journal(10)
    for session in ("a", "b", "a"):
        journal.add(entry(session))
    journal.clear("a")
    assert [e.session for e in journal.entries()] == ["b"]
    journal.clear()
    assert journal.entries() == []


def test_size_zero_keeps_nothing() -> None:
    journal = Journal(0)
    journal.add(entry())
    assert not journal.enabled and journal.entries() == []


def test_json_of_a_miss() -> None:
    data = entry("s").to_json(near_misses=True)
    assert data["time"] == "1970-01-01T00:00:00.000+00:00"
    assert data["error"] == {"code": "cassette_miss", "message": "no match"}
    assert data["matched"] is False and data["interaction"] is None and data["near_misses"] == []


def test_what_became_of_a_reply_is_shown(write_cassette, cassette_dir) -> None:
    write_cassette("c", interaction())
    served = load_paths([cassette_dir]).cassettes[0].interactions[0]
    left = JournalEntry(time=0.0, session="s", method="POST", path="/v1/x", query="", status=200, duration=0.5,
                        interaction=served, outcome=Outcome.CLIENT_LEFT_MID_STREAM, pieces_sent=3, pieces_total=12)
    shown = left.to_json()
    assert (shown["status"], shown["outcome"], shown["pieces_sent"], shown["pieces_total"]) == (
        200, "client_left_mid_stream", 3, 12)
    assert {key: entry().to_json()[key] for key in ("outcome", "pieces_sent", "pieces_total")} == dict.fromkeys(
        ("outcome", "pieces_sent", "pieces_total"))


def long_miss(session: str = "s", footprint: int = 100_000) -> JournalEntry:
    """A miss whose near misses keep about ``footprint`` bytes: random text, which the journal's
    compression cannot shrink below the random bytes it encodes."""
    near_misses_json = b'["' + base64.b64encode(random.Random(footprint).randbytes(footprint)) + b'"]'
    return JournalEntry(time=0.0, session=session, method="POST", path="/v1/x", query="", status=404, duration=0.01,
                        error=CassetteMiss("no match", near_misses_json=near_misses_json))


def test_bounded_in_bytes_as_well_as_entries() -> None:
    released = []
    journal = Journal(1000, max_bytes=1_000_000, on_release=lambda: released.append(journal.held_bytes))
    for _ in range(100):
        journal.add(long_miss())
    assert 8 <= len(journal) <= 10 and journal.held_bytes <= 1_000_000
    assert journal.held_bytes == sum(entry_bytes(entry) for entry in journal.entries())
    journal.add(entry())  # a hit costs the fixed part and its strings only
    assert entry_bytes(entry()) < 1000
    journal.add(long_miss(footprint=5_000_000))  # larger than the bound: the newest is kept all the same
    assert len(journal) == 1 and journal.held_bytes > 5_000_000
    assert released  # forgotten entries were worth giving back


def test_clearing_keeps_the_byte_count_right() -> None:
    journal = Journal(10, max_bytes=10_000_000)
    for session in ("a", "b", "a"):
        journal.add(long_miss(session))
    journal.clear("a")
    assert journal.held_bytes == entry_bytes(journal.entries()[0]) and len(journal) == 1
    journal.clear()
    assert journal.held_bytes == 0


def test_forgetting_bodies_keeps_who_served_and_spares_what_is_still_served(write_cassette, cassette_dir) -> None:
    write_cassette("c", interaction(response_body="x" * 1000), interaction('{"b": 1}'))
    write_cassette("other", interaction('{"o": 1}'))
    cassettes = load_paths([cassette_dir]).cassettes
    (first, second), (other,) = cassettes[0].interactions, cassettes[1].interactions
    journal = Journal(10)
    for hit in (first, second, other):
        journal.add(entry(hit=hit))
    journal.forget_bodies({"c"}, still_served=lambda interaction: interaction is second)
    kept_other, kept_second, shell = (e.interaction for e in journal.entries())
    assert kept_other is other and kept_second is second  # another cassette's, and one still served
    assert shell is not first and shell.label == first.label and (shell.file, shell.line) == (first.file, first.line)
    assert shell.response.status == 200 and shell.response.body == b"" and shell.request.body == b""
    assert journal.entries()[2].to_json()["interaction"] == "c#0"


def test_a_journaled_miss_keeps_its_near_misses_as_text_not_objects(write_cassette, cassette_dir) -> None:
    """Misses stay in the journal: each object they keep is scanned by every young-generation
    collection until it is promoted, on the event loop (30 to 50 ms each after a burst of
    misses, when near misses were objects). Kept as JSON text, a miss holds a handful."""
    write_cassette("c", interaction(json.dumps({"model": "m", "messages": [{"role": "user", "content": "a" * 500}],
                                                "tools": [{"name": f"t{n}"} for n in range(20)]})))
    service = CassetteService(Settings(paths=(cassette_dir,)))
    body = json.dumps({"model": "m2", "messages": [{"role": "user", "content": "b" * 500}], "temperature": 0.5,
                       "tools": [{"name": f"u{n}"} for n in range(20)]})
    request = ReceivedRequest("POST", "/v1/chat/completions", "", {"content-type": "application/json"}, body.encode())
    with pytest.raises(CassetteMiss) as raised:
        service.lookup(request, session="s", scope=None)
    raised.value.__traceback__ = None  # as the app journals it (app.py)
    miss = JournalEntry(time=0.0, session="s", method="POST", path="/v1/chat/completions", query="", status=404,
                        duration=0.01, error=raised.value)
    shown = miss.to_json(near_misses=True)["near_misses"]
    assert [near["interaction"] for near in shown] == ["c#0"]
    assert {d["field"] for d in shown[0]["differences"]} >= {"model", "messages[0].content", "temperature"}
    assert len(raised.value.near_misses_json) > 500
    assert entry_bytes(miss) >= len(raised.value.near_misses_packed)

    tracked, seen, stack = 0, set(), [miss]
    while stack:  # every object the entry keeps alive that the collector tracks
        item = stack.pop()
        if id(item) in seen or not gc.is_tracked(item) or isinstance(item, type):  # not the classes
            continue
        seen.add(id(item))
        tracked += 1
        stack += gc.get_referents(item)
    assert tracked <= 6, tracked


def test_a_kept_miss_holds_no_more_than_the_journal_counts(write_cassette, cassette_dir) -> None:
    """Near misses come as JSON text from orjson, whose bytes keep the whole buffer they were
    written in (8 KB for 4 KB of JSON): kept as they came, 1,000 journaled misses held 8 MiB
    where the journal counted 4, and its byte bound did not bound them. A journaled miss holds
    no more than the journal counts for it, and keeps its near misses compressed."""
    write_cassette("c", interaction(json.dumps({"model": "m", "messages": [{"role": "user", "content": "a" * 3000}],
                                                "tools": [{"name": f"t{n}"} for n in range(40)]})))
    service = CassetteService(Settings(paths=(cassette_dir,)))
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "b" * 3000}],
                       "tools": [{"name": f"u{n}"} for n in range(40)]}).encode()
    with pytest.raises(CassetteMiss) as raised:
        service.lookup(ReceivedRequest("POST", "/v1/chat/completions", "", {"content-type": "application/json"}, body),
                       session="s", scope=None)
    near_misses = json.loads(raised.value.near_misses_json)
    assert len(orjson.dumps(near_misses)) > 4096  # past orjson's first buffer
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [JournalEntry(time=0.0, session="s", method="POST", path="/v1/chat/completions", query="", status=404,
                             duration=0.01, error=CassetteMiss("no match", near_misses_json=orjson.dumps(near_misses)))
                for _ in range(50)]  # as service.explain_miss builds them
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    counted = sum(entry_bytes(entry) for entry in kept)
    assert held <= counted, (held, counted)  # orjson's bytes as they came: 1.6 MB held, 0.7 MB counted
    assert json.loads(kept[0].near_misses_json) == near_misses
    assert len(kept[0].error.near_misses_packed) < len(kept[0].near_misses_json) / 3  # kept compressed


@pytest.mark.parametrize("text", ["", "/v1/chat/completions", "caf\u00e9" * 50, "\u4e2d\u6587" * 100, "\U0001f600" * 30,
                                  b"", b'[{"differences":[]}]' * 40])
def test_an_entrys_text_is_counted_at_no_less_than_it_holds(text: str | bytes) -> None:
    assert sys.getsizeof(text) <= text_bytes(text) <= sys.getsizeof(text) + 3 * len(text) + STR_BYTES


def test_a_hit_written_whole_reads_as_a_complete_entry(write_cassette, cassette_dir) -> None:
    """``add_hit`` keeps a hit's fields as a list; read, it is the entry ``add`` would have kept."""
    write_cassette("c", interaction(response_body="x" * 1000))
    served = load_paths([cassette_dir]).cassettes[0].interactions[0]
    journal = Journal(10, max_bytes=10_000_000)
    arrived = time.monotonic() - 2.0
    journal.add_hit(arrived, 0.25, "s", "POST", "/v1/x", b"a=1", served, True, "ignore_fields", 3)
    journal.add(entry("t"))
    (hit,) = journal.entries(matched=True)
    assert (hit.session, hit.method, hit.path, hit.query, hit.status, hit.duration) == ("s", "POST", "/v1/x", "a=1",
                                                                                        200, 0.25)
    assert (hit.interaction, hit.repeated, hit.relaxation, hit.error, hit.fault) == (served, True, "ignore_fields",
                                                                                     None, None)
    assert (hit.outcome, hit.pieces_sent, hit.pieces_total) == (Outcome.COMPLETE, 3, 3)
    assert abs(hit.time - (time.time() - 2.0)) < 1.0  # the wall clock when it arrived
    assert hit.to_json()["interaction"] == "c#0"
    assert [e.session for e in journal.entries(session="s")] == ["s"]
    assert journal.held_bytes == HIT_BYTES + 4 * len("/v1/x") + len(b"a=1") + entry_bytes(entry("t"))
    journal.forget_bodies({"c"}, still_served=lambda interaction: False)  # its cassette was reloaded without it
    shell = journal.entries(matched=True)[0].interaction
    assert shell.label == served.label and shell.response.body == b"" and shell.response.status == 200
    journal.clear("s")
    assert [e.session for e in journal.entries()] == ["t"] and journal.held_bytes == entry_bytes(entry("t"))


def test_hits_are_bounded_like_entries(write_cassette, cassette_dir) -> None:
    write_cassette("c", interaction())
    served = load_paths([cassette_dir]).cassettes[0].interactions[0]
    journal = Journal(1000, max_bytes=10 * (HIT_BYTES + 4 * 10))
    for n in range(50):
        journal.add_hit(0.0, 0.0, "s", "GET", f"/{n:09d}", b"", served, False, None, 1)
    assert len(journal) == 10 and journal.held_bytes <= journal.max_bytes
    assert journal.entries(limit=1)[0].path == "/000000049"
