"""The library API (server/library.py): a real server in the test's process, with and without
pytest — sync and async context managers, unittest, sessions with the SDKs' variables, what
was refused and what was left unused."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import unittest
from pathlib import Path
from unittest import mock

import anthropic
import httpx
import openai
import pytest
from google import genai

from server import CassetteServer
from server.library import PLACEHOLDER_KEY, CassetteFailure, build_settings
from server.record import RecordMode

from .clients_python import answer, question
from .conftest import BUNDLED, ROOT, go_vcr, interaction

CLIENTS = ROOT / "tests" / "cassettes" / "clients"
HAIKU = "Write a haiku about cassette tapes."
KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")


def haiku(base_url: str, text: str = HAIKU) -> str:
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
    return completion.choices[0].message.content or ""


def refuses_connections(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        return sock.connect_ex((host, int(port))) != 0


def test_a_server_in_a_with_block_serves_on_a_free_port_and_stops() -> None:
    with CassetteServer(BUNDLED, speed=0) as server:
        assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":8080")
        assert httpx.get(f"{server.url}/__admin/health").json()["cassettes"] == 6
        assert haiku(f"{server.url}/v1").startswith("Magnetic ribbon")
        assert server.service.settings.speed == 0
        with pytest.raises(RuntimeError, match="running already"):
            server.start()
    assert refuses_connections(server.url)


def test_an_async_with_block_leaves_the_callers_loop_free() -> None:
    async def main() -> tuple[int, str]:
        async with CassetteServer([BUNDLED], speed=0) as server, httpx.AsyncClient(base_url=server.url) as client:
            health = await client.get("/__admin/health")
            return health.status_code, server.url

    status, url = asyncio.run(main())
    assert status == 200 and refuses_connections(url)


def test_sessions_point_the_sdks_at_their_cassette_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    with CassetteServer(CLIENTS, speed=0) as server:
        with server.session(cassette="openai-python") as session, mock.patch.dict(os.environ, session.environ()):
            assert os.environ["OPENAI_API_KEY"] == PLACEHOLDER_KEY
            with openai.OpenAI(max_retries=0) as client:
                completion = client.chat.completions.create(
                    model="gpt-4o-mini", max_tokens=256,
                    messages=[{"role": "user", "content": question("openai-python")}])
            assert completion.choices[0].message.content == answer("openai-python")
        with server.session(cassette="anthropic-python") as session, mock.patch.dict(os.environ, session.environ()):
            with anthropic.Anthropic(max_retries=0) as claude:
                message = claude.messages.create(model="claude-haiku-4-5", max_tokens=256,
                                                 messages=[{"role": "user", "content": question("anthropic-python")}])
            assert message.content[0].text == answer("anthropic-python")  # type: ignore[union-attr]
        with server.session(cassette="google-genai") as session, mock.patch.dict(os.environ, session.environ()):
            assert os.environ["GEMINI_API_KEY"] == PLACEHOLDER_KEY and "GOOGLE_API_KEY" not in os.environ
            with genai.Client() as gemini:
                reply = gemini.models.generate_content(model="gemini-2.5-flash", contents=question("google-genai"))
            assert reply.text == answer("google-genai")
            assert session.failure() is None


def test_placeholder_keys_only_where_no_key_is_set() -> None:
    with CassetteServer(BUNDLED, speed=0) as server:
        session = server.session("job-7", cassette="openai/haiku")
        variables = session.environ({"OPENAI_API_KEY": "sk-real", "GOOGLE_API_KEY": "g-real"})
    assert variables == {
        "OPENAI_BASE_URL": f"{server.url}/__session/job-7/__cassette/openai/haiku/v1",
        "ANTHROPIC_BASE_URL": f"{server.url}/__session/job-7/__cassette/openai/haiku",
        "GOOGLE_GEMINI_BASE_URL": f"{server.url}/__session/job-7/__cassette/openai/haiku",
        "ANTHROPIC_API_KEY": PLACEHOLDER_KEY,
    }
    assert session.headers == {"X-Cassette-Session": "job-7", "X-Cassette": "openai/haiku"}


def test_unmatched_unused_and_verify() -> None:
    with CassetteServer(BUNDLED, speed=0) as server:
        one = server.session("one", cassette="openai/haiku")
        other = server.session("other", cassette="openai/haiku")
        with pytest.raises(openai.NotFoundError):
            haiku(one.openai_base_url, "Write a haiku about compact discs.")
        assert haiku(other.openai_base_url).startswith("Magnetic ribbon")
        [missed] = server.unmatched()
        assert missed["session"] == "one" and missed["error"]["code"] == "cassette_miss"
        assert missed["near_misses"][0]["interaction"] == "openai/haiku#0"
        assert server.unmatched(session="other") == []
        assert [item["interaction"] for item in server.unused(session="one", cassette="openai/haiku")] == ["openai/haiku#0"]
        assert server.unused(session="other", cassette="openai/haiku") == []
        assert "openai/haiku#0" not in [item["interaction"] for item in server.unused()]  # used in some session
        assert server.unused(cassette="not/loaded") == []
        with pytest.raises(CassetteFailure) as failure:
            one.verify()
        message = str(failure.value)
        assert "1 request was not answered from a recording of cassette 'openai/haiku' (session one)" in message
        assert 'messages[0].content: recorded "Write a haiku about cassette tapes.", received "Write a haiku ' \
               'about compact discs."' in message
        with pytest.raises(CassetteFailure, match="1 recorded interaction was not used from cassette 'openai/haiku'"):
            one.verify(fail_unused=True)
        other.verify(fail_unused=True)
        server.reset()
        assert server.unmatched() == [] and server.service.session_options == {}


def test_a_closed_session_still_answers_what_it_left_unused() -> None:
    with CassetteServer(BUNDLED, speed=0) as server:
        with server.session(cassette="openai/haiku") as used, server.session(cassette="openai/haiku") as idle:
            assert haiku(used.openai_base_url).startswith("Magnetic ribbon")
        assert used.unused() == [] and used.failure(fail_unused=True) is None  # its positions are gone, not its use
        used.verify(fail_unused=True)
        assert [item["interaction"] for item in idle.unused()] == ["openai/haiku#0"]


def test_a_session_of_an_unknown_cassette_says_so() -> None:
    with CassetteServer(BUNDLED, speed=0) as server, server.session(cassette="team/chat") as session:
        with pytest.raises(openai.NotFoundError):
            haiku(session.openai_base_url)
        message = session.failure() or ""
    assert "unknown_cassette" in message and "No cassette named 'team/chat' is loaded" in message


def test_session_faults_are_its_own_and_go_with_it() -> None:
    with CassetteServer(BUNDLED, speed=0) as server:
        with server.session("faulty", cassette="openai/haiku") as faulty:
            rule = faulty.fault("rate_limit", times=1)
            assert rule["session"] == "faulty" and rule["times"] == 1
            assert haiku(server.session("calm").openai_base_url).startswith("Magnetic")  # not this session's
            with pytest.raises(openai.RateLimitError):
                haiku(faulty.openai_base_url)
            assert haiku(faulty.openai_base_url).startswith("Magnetic")  # given back, then replayed
            faulty.fault_spec("server_error; times=1")
            with pytest.raises(ValueError, match="session"):
                faulty.fault("rate_limit", session="someone-else")
            assert faulty.failure() is None  # a fault is no miss
        assert server.service.faults.rules() == [] and "faulty" not in server.service.session_options
        assert "faulty" not in server.service.sessions.names() and "calm" in server.service.sessions.names()


def test_unittest_uses_it_with_setup_and_teardown() -> None:
    class Chat(unittest.TestCase):
        server: CassetteServer

        @classmethod
        def setUpClass(cls) -> None:
            cls.server = CassetteServer(BUNDLED, speed=0).start()
            cls.addClassCleanup(cls.server.stop)

        def setUp(self) -> None:  # (enterContext, Python 3.11+, says this in two lines)
            self.session = self.server.session(cassette="openai/haiku")
            self.addCleanup(self.session.close)
            environment = mock.patch.dict(os.environ, self.session.environ())
            environment.start()
            self.addCleanup(environment.stop)

        def tearDown(self) -> None:
            self.session.verify()

        def test_haiku(self) -> None:
            self.assertTrue(haiku(os.environ["OPENAI_BASE_URL"]).startswith("Magnetic"))

        def test_swallowed_miss(self) -> None:
            try:
                haiku(os.environ["OPENAI_BASE_URL"], "a haiku about floppy disks")
            except openai.NotFoundError:
                pass

    result = unittest.TextTestRunner(stream=io.StringIO()).run(unittest.defaultTestLoader.loadTestsFromTestCase(Chat))
    assert result.testsRun == 2 and not result.errors
    [(test, trace)] = result.failures  # a failure, not an error: CassetteFailure is an AssertionError
    assert test.id().endswith("test_swallowed_miss") and "floppy disks" in trace


def test_options_are_parsed_as_their_flags_and_the_environment_is_read_only_when_given(tmp_path: Path) -> None:
    settings = build_settings(tmp_path, {"speed": "0.5", "record": "miss", "upstream": "http://127.0.0.1:9",
                                         "ignore_fields": "metadata.user_id"}, {})
    assert (settings.speed, settings.record, settings.ignore_fields) == (0.5, RecordMode.MISS, ("metadata.user_id",))
    assert str(settings.upstream[0]) == "http://127.0.0.1:9"
    assert build_settings(None, {}, {"CASSETTE_SERVER_SPEED": "3"}).speed == 3
    assert CassetteServer(tmp_path).settings.speed == 1  # no environment unless given
    with pytest.raises(TypeError, match="unexpected option 'sped'"):
        CassetteServer(tmp_path, sped=0)
    with pytest.raises(TypeError, match="unexpected option 'port'"):
        CassetteServer(tmp_path, port=8080)
    with pytest.raises(ValueError, match="speed=-1"):
        CassetteServer(tmp_path, speed=-1)


def test_strict_refuses_cassettes_that_do_not_load(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(go_vcr(interaction()))
    (tmp_path / "bad.yaml").write_text("interactions: [")
    with pytest.raises(ValueError, match="bad.yaml"):
        CassetteServer(tmp_path, strict=True).start()
    with CassetteServer(tmp_path) as server, server.session(cassette="bad") as session:
        assert server.has_cassette("good") and server.has_cassette("bad") and not server.has_cassette("other")
        assert httpx.post(f"{session.openai_base_url}/chat/completions", json={}).status_code == 404
        message = session.failure() or ""
    assert "No cassette named 'bad' is loaded" in message
    assert f"Cassette 'bad' did not load: {tmp_path / 'bad.yaml'}:2: invalid YAML" in message
    with pytest.raises(ValueError, match="session id"):
        server.session("a/b")
