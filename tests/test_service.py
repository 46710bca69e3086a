"""The service in-process: swapping a new index in (reload, PUT, swap_in) without rewinding
sessions, reading only what changed, and the errors a lookup explains."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import Settings
from server.errors import CassetteMiss, UnknownCassette
from server.loader import load_paths
from server.matching.index import Exhausted, Index
from server.matching.keys import MatchRules
from server.models import Cassette, ReceivedRequest
from server.service import CassetteService, Unmatched, unknown_cassette_message

from .conftest import go_vcr, interaction

BODY = interaction()["request"]["body"].encode()


def ask(service: CassetteService, session: str = "job-1", scope: str | None = None, body: bytes = BODY) -> bytes:
    match = service.lookup(ReceivedRequest("POST", "/v1/chat/completions", "", {}, body), session=session, scope=scope)
    return match.interaction.response.body


def sequence(*answers: str) -> list[dict]:
    return [interaction(response_body=answer) for answer in answers]


@pytest.fixture
def service(write_cassette, cassette_dir: Path) -> CassetteService:
    write_cassette("seq", *sequence("one", "two", "three", "four"))
    write_cassette("other", interaction('{"other": 1}'))
    return CassetteService(Settings(paths=(cassette_dir,), speed=0, exhausted=Exhausted.ERROR))


def test_reloads_and_puts_do_not_rewind_sessions(service: CassetteService, cassette_dir: Path) -> None:
    assert ask(service) == b"one"
    service.put_cassette("unrelated", go_vcr(interaction('{"q": "new"}')).encode())
    assert ask(service) == b"two"
    service.reload()  # every file read again
    assert ask(service) == b"three"
    assert ask(service, "job-2") == b"one"
    usage = {i.label: dict(by_session) for i, by_session in service.index.usage().items()}
    assert usage == {"seq#0": {"job-1": 1, "job-2": 1}, "seq#1": {"job-1": 1}, "seq#2": {"job-1": 1}}


def test_a_changed_cassette_keeps_its_sessions_place(service: CassetteService, write_cassette) -> None:
    assert [ask(service), ask(service)] == [b"one", b"two"]
    write_cassette("seq", *sequence("ONE", "TWO", "THREE"))  # re-recorded, one interaction fewer
    service.reload(changed={(service.settings.paths[0] / "seq.yaml").resolve()})
    assert ask(service) == b"THREE"
    write_cassette("seq", *sequence("1"))
    service.reload()
    with pytest.raises(CassetteMiss, match="already served in session 'job-1'"):
        ask(service)  # clamped to the one recording left, which was served


def test_a_reload_of_changed_files_reads_only_those(service: CassetteService, cassette_dir: Path, monkeypatch) -> None:
    before = service.index.by_name
    read: list[str] = []
    import server.loader

    original = server.loader.load_file
    monkeypatch.setattr(server.loader, "load_file",
                        lambda path, name, **options: read.append(name) or original(path, name=name, **options))
    created = service.put_cassette("new", go_vcr(interaction('{"q": "new"}')).encode())[1]
    assert created and read == ["new"]
    assert service.index.by_name["seq"] is before["seq"] and service.index.by_name["other"] is before["other"]
    assert service.index.changed == {"new"}
    service.reload()
    assert sorted(read) == ["new", "new", "other", "seq"]  # a reload asked for reads everything


def test_swap_in_serves_a_cassette_without_reading_files(service: CassetteService, tmp_path: Path) -> None:
    assert ask(service) == b"one"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "seq.yaml").write_text(go_vcr(*sequence("one", "two", "three", "four", "five")))
    (elsewhere / "recorded.yaml").write_text(go_vcr(interaction('{"q": "recorded"}', response_body="recorded")))
    grown, recorded = sorted(load_paths([elsewhere]).cassettes, key=lambda cassette: cassette.name != "seq")
    service.swap_in(grown)
    result = service.swap_in(recorded)
    assert [c.name for c in result.cassettes] == ["other", "seq", "recorded"]
    assert service.index.changed == {"recorded"}
    assert [ask(service) for _ in range(4)] == [b"two", b"three", b"four", b"five"]  # where the session was
    assert ask(service, scope="recorded", body=b'{"q": "recorded"}') == b"recorded"


def test_unknown_cassettes_name_the_closest_few_and_the_count() -> None:
    names = [f"team-{n:05}/chat" for n in range(10_000)]
    index = Index([Cassette(name, f"{name}.yaml", "go-vcr v2") for name in names], MatchRules(), Exhausted.ERROR)
    message = unknown_cassette_message("team-00042/chta", index)
    assert "(10000 cassettes loaded; the closest names: team-00042/chat, " in message
    assert len(message) < 400  # listing every name made it 350 KB
    assert "none has a name close to it" in unknown_cassette_message("nope", index)
    assert "no cassette is loaded at all" in unknown_cassette_message("x", Index((), MatchRules(), Exhausted.ERROR))


def test_matching_only_takes_explaining_is_apart(service: CassetteService) -> None:
    request = ReceivedRequest("POST", "/v1/chat/completions", "", {}, b'{"q": "unrecorded"}')
    found = service.match(request, session="s", scope=None)
    assert isinstance(found, Unmatched)
    miss = service.explain(found)
    assert miss.code == "cassette_miss" and "Closest recording: " in miss.message
    unknown = service.match(request, session="s", scope="seqq")
    assert isinstance(unknown, Unmatched) and isinstance(service.explain(unknown), UnknownCassette)
    assert "the closest names: seq" in service.explain(unknown).message
