"""The pytest plugin (server/pytest_plugin.py), as its users meet it: small suites run by pytester
in a subprocess (the plugin comes from the package's entry point, as in any project that
installs it), with the official openai and anthropic SDKs building their clients from the
environment, against cassettes written into the suite's folder. Each run covers several
scenarios: a subprocess costs seconds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .conftest import go_vcr, interaction, running
from .standin import KEY, StandIn, answer

pytest_plugins = ["pytester"]

KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_BASE_URL",
        "ANTHROPIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL")
TIMEOUT = 180  # seconds for one inner run (a loaded machine, SDK imports, a server start per process)

# What the suites call: clients built from the environment only, as code under test builds them.
CLIENTS = '''
import openai


def ask(text):
    with openai.OpenAI(max_retries=0) as client:
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
    return completion.choices[0].message.content


def ask_claude(text):
    import anthropic  # only where it is used: it takes seconds to import

    with anthropic.Anthropic(max_retries=0) as client:
        message = client.messages.create(model="claude-haiku-4-5", max_tokens=64,
                                         messages=[{"role": "user", "content": text}])
    return message.content[0].text
'''


def openai_chat(question: str, reply: str, duration: str = "0s") -> dict[str, object]:
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}]}
    response = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]}
    return interaction(json.dumps(request), response_body=json.dumps(response), duration=duration)


def claude_message(question: str, reply: str) -> dict[str, object]:
    request = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": question}]}
    response = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
                "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": 3, "output_tokens": 2}}
    return interaction(json.dumps(request), url="https://api.anthropic.com/v1/messages",
                       response_body=json.dumps(response))


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project with cassettes/ (the ini option points there) and the clients module; no key
    and no base URL in the environment, so what the tests get comes from the plugin."""
    for variable in KEYS:
        monkeypatch.delenv(variable, raising=False)
    pytester.makeini("[pytest]\ncassette_paths = cassettes\n")
    pytester.makepyfile(clients=CLIENTS)
    cassettes = pytester.path / "cassettes"
    (cassettes / "test_named").mkdir(parents=True)
    (cassettes / "chat.yaml").write_text(go_vcr(openai_chat("Say hi", "Hi!"), openai_chat("Say hi", "Hi again!"),
                                                claude_message("Say hi", "Olá!")))
    (cassettes / "timed.yaml").write_text(go_vcr(openai_chat("Take your time", "Slow", duration="20s"),
                                                 openai_chat("Keep the pace", "Paced", duration="1.5s")))
    (cassettes / "test_named" / "test_named_after_the_test.yaml").write_text(go_vcr(openai_chat("Who?", "You.")))
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # langsmith (installed with langchain) brings a pytest plugin that takes seconds to import
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:langsmith_plugin", "-rA", *args,
                                         timeout=TIMEOUT)


def test_replays_fails_on_misses_and_unused_and_leaves_other_tests_alone(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_a_plain='''
        import os
        import sys


        def test_a_suite_that_uses_no_cassette_starts_and_imports_nothing(pytestconfig):
            assert pytestconfig.pluginmanager.hasplugin("cassette_server")
            assert not {"uvicorn", "fastapi", "server.library", "server.app"} & set(sys.modules)
            assert "OPENAI_BASE_URL" not in os.environ
    ''')
    suite.makepyfile(test_chat='''
        import os
        import time

        import openai
        import pytest

        from clients import ask, ask_claude


        @pytest.mark.cassette("chat")
        def test_replays_the_cassette_in_order():
            assert ask("Say hi") == "Hi!"
            assert ask("Say hi") == "Hi again!"
            assert ask_claude("Say hi") == "Olá!"


        @pytest.mark.cassette("chat")
        def test_another_test_replays_it_from_the_start():
            assert ask("Say hi") == "Hi!"


        @pytest.mark.cassette("chat")
        def test_a_miss_the_code_swallowed():
            try:
                ask("Say bye")
            except openai.NotFoundError:
                pass


        @pytest.mark.cassette("chat", fail_unused=True)
        def test_leaves_interactions_unused():
            assert ask("Say hi") == "Hi!"


        def test_the_fixture_names_the_cassette_after_the_test(cassette):
            assert cassette.cassette == "test_chat/test_the_fixture_names_the_cassette_after_the_test"
            assert os.environ["OPENAI_BASE_URL"] == cassette.openai_base_url
            assert os.environ["ANTHROPIC_BASE_URL"] == os.environ["GOOGLE_GEMINI_BASE_URL"] == cassette.url


        @pytest.mark.cassette("chat", faults=["rate_limit; times=1"])
        def test_a_fault_from_the_marker():
            with pytest.raises(openai.RateLimitError):
                ask("Say hi")
            assert ask("Say hi") == "Hi!"  # the recording was given back


        @pytest.mark.cassette("chat")
        def test_a_fault_from_the_fixture(cassette):
            cassette.fault("server_error", times=1)
            with pytest.raises(openai.InternalServerError):
                ask("Say hi")
            assert ask("Say hi") == "Hi!"


        @pytest.mark.cassette("timed")
        def test_replays_at_speed_zero_unless_asked():
            started = time.monotonic()
            assert ask("Take your time") == "Slow"  # recorded after 20 s
            assert time.monotonic() - started < 10


        @pytest.mark.cassette("timed", speed=1)
        def test_the_marker_asks_for_the_recorded_pace():
            started = time.monotonic()
            assert ask("Keep the pace") == "Paced"  # recorded after 1.5 s
            assert time.monotonic() - started >= 1.4


        def test_the_variables_are_restored_after_each_test():
            assert "OPENAI_BASE_URL" not in os.environ and "OPENAI_API_KEY" not in os.environ
    ''')
    suite.makepyfile(test_named='''
        import pytest

        from clients import ask


        @pytest.mark.cassette
        def test_named_after_the_test():
            assert ask("Who?") == "You."
    ''')
    result = run(suite)
    result.assert_outcomes(passed=10, failed=2)
    output = result.stdout.str()
    assert "FAILED test_chat.py::test_a_miss_the_code_swallowed" in output
    assert "FAILED test_chat.py::test_leaves_interactions_unused" in output
    assert "1 request was not answered from a recording of cassette 'chat'" in output
    assert "Closest recording: chat#0" in output
    assert 'messages[0].content: recorded "Say hi", received "Say bye"' in output
    assert "is test_chat.py::test_a_miss_the_code_swallowed." in output
    assert "--cassette-record-mode=once" in output and "cassette-server serve --record-on-miss" not in output
    assert "WARNING  cassette_server" not in output  # the failure says it: the log does not say it again
    assert "2 recorded interactions were not used from cassette 'chat':" in output
    assert "chat#1: POST /v1/chat/completions (gpt-4o-mini, \"Say hi\")" in output
    assert "chat#2: POST /v1/messages (claude-haiku-4-5, \"Say hi\")" in output


def test_a_marked_test_gets_its_variables_after_wider_fixtures_and_before_its_own(suite: pytest.Pytester) -> None:
    suite.makeconftest('''
        import os

        import pytest


        @pytest.fixture(scope="session", autouse=True)
        def test_key():
            os.environ.setdefault("OPENAI_API_KEY", "sk-from-conftest")


        @pytest.fixture
        def base_url():
            return os.environ.get("OPENAI_BASE_URL")
    ''')
    suite.makepyfile(test_order='''
        import os

        import pytest


        @pytest.mark.cassette("chat")
        def test_marked_first():  # the session's fixture sets the key before the placeholder is considered
            assert os.environ["OPENAI_API_KEY"] == "sk-from-conftest"


        @pytest.mark.cassette("chat")
        def test_marked(base_url, cassette):
            assert base_url == cassette.openai_base_url
            assert os.environ["OPENAI_API_KEY"] == "sk-from-conftest"


        def test_after():
            assert os.environ.get("OPENAI_API_KEY") == "sk-from-conftest"
    ''')
    run(suite).assert_outcomes(passed=3)


def test_a_failed_test_shows_the_seeds_its_fault_rules_drew_with(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_flaky='''
        import pytest

        from clients import ask


        @pytest.mark.cassette("chat", faults=["rate_limit; probability=1", "server_error; probability=0.5; seed=7"])
        def test_unlucky():
            ask("Say hi")
    ''')
    result = run(suite)
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "RateLimitError" in output and "cassette-server" in output
    seed = re.search(r"fault rule f1 \(rate_limit, probability 1\) drew with seed (\d+): add seed=\1 to its rule", output)
    assert seed is not None, output
    assert "fault rule f2 (server_error, probability 0.5) drew with seed 7" in output


def test_xdist_workers_each_replay_from_the_start_and_the_flag_fails_unused(suite: pytest.Pytester) -> None:
    (suite.path / "cassettes" / "sequence.yaml").write_text(go_vcr(openai_chat("Say hi", "Hi!"),
                                                                   openai_chat("Say hi", "Hi again!")))
    suite.makepyfile(test_parallel='''
        import json
        import os

        import pytest

        from clients import ask


        @pytest.mark.cassette("sequence")
        @pytest.mark.parametrize("number", range(4))
        def test_each_test_starts_the_sequence(number, cassette_server):
            assert ask("Say hi") == "Hi!"
            assert ask("Say hi") == "Hi again!"
            with open(f"worker-{number}.json", "w") as seen:
                json.dump([os.environ["PYTEST_XDIST_WORKER"], cassette_server.url], seen)


        @pytest.mark.cassette("sequence")
        def test_uses_half():
            assert ask("Say hi") == "Hi!"
    ''')
    result = run(suite, "-n", "2", "--cassette-fail-unused")
    result.assert_outcomes(passed=4, failed=1)
    assert "1 recorded interaction was not used from cassette 'sequence':" in result.stdout.str()
    assert "sequence#1: POST /v1/chat/completions (gpt-4o-mini, \"Say hi\")" in result.stdout.str()
    seen = [json.loads((suite.path / f"worker-{number}.json").read_text()) for number in range(4)]
    servers = {worker: {url for other, url in seen if other == worker} for worker, _ in seen}
    assert len(servers) == 2 and all(len(urls) == 1 for urls in servers.values())  # a server per worker
    assert len({url for _, url in seen}) == 2


@pytest.fixture
def standin() -> Iterator[tuple[StandIn, str]]:
    provider = StandIn()
    with running(provider.app()) as url:
        yield provider, url


def test_record_modes_against_a_stand_in_provider(suite: pytest.Pytester, standin: tuple[StandIn, str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    provider, upstream = standin
    monkeypatch.setenv("CASSETTE_SERVER_UPSTREAM", upstream)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # the stand-in wants its key, as a provider does
    cassettes = suite.path / "cassettes"
    chat = cassettes / "chat.yaml"
    suite.makepyfile(test_rec=f'''
        import pytest

        from clients import ask

        STANDIN = {answer("")!r}


        def test_new(cassette):
            assert ask("Record me") == STANDIN + "Record me"
            assert ask("Record me too") == STANDIN + "Record me too"


        @pytest.mark.cassette("chat")
        def test_existing():
            assert ask("Say hi") == "Hi!"


        @pytest.mark.cassette("chat")
        def test_existing_and_new():
            assert ask("Say hi") == "Hi!"
            assert ask("Brand new") == STANDIN + "Brand new"


        @pytest.mark.cassette("chat")
        def test_rerecorded():
            assert ask("Brand new") == STANDIN + "Brand new"


        @pytest.mark.cassette("timed")
        def test_records_nothing():
            pass
    ''')
    new = cassettes / "test_rec" / "test_new.yaml"
    before = chat.read_text()

    once = run(suite, "--cassette-record-mode=once", "-k", "test_new or test_existing")
    once.assert_outcomes(passed=2, failed=1)  # chat exists: once replays it only, and "Brand new" misses
    assert "FAILED test_rec.py::test_existing_and_new" in once.stdout.str()
    assert "--cassette-record-mode=once only replays a cassette that exists" in once.stdout.str()
    assert new.read_text().count("- id:") == 2 and chat.read_text() == before
    assert provider.count("/v1/chat/completions") == 2

    # new_episodes: test_new replays what once recorded; of the other's two requests, only the miss goes out
    episodes = run(suite, "--cassette-record-mode=new_episodes", "-k", "test_new or test_existing_and_new")
    episodes.assert_outcomes(passed=2)
    assert provider.count("/v1/chat/completions") == 3
    assert chat.read_text().count("- id:") == 4 and "Brand new" in chat.read_text()

    timed = (cassettes / "timed.yaml").read_text()
    everything = run(suite, "--cassette-record-mode=all", "-k", "test_rerecorded or test_records_nothing")
    everything.assert_outcomes(passed=2)
    text = chat.read_text()  # recorded afresh, in place of the four it held
    assert text.count("- id:") == 1 and "Brand new" in text and "Say hi" not in text
    assert (cassettes / "timed.yaml").read_text() == timed  # a test that records nothing replaces nothing
    assert provider.count("/v1/chat/completions") == 4


def test_the_plugin_module_imports_nothing_heavy() -> None:
    code = ("import sys, server.pytest_plugin; "
            "print(sorted({'fastapi', 'uvicorn', 'httpx', 'yaml', 'server.app', 'server.library'} & set(sys.modules)))")
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert imported.strip() == "[]"


def test_bad_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    assert pytester.runpytest("--cassette-speed=fast").ret == pytest.ExitCode.USAGE_ERROR
    upstream = pytester.runpytest("--cassette-upstream=api.openai.com")
    assert upstream.ret == pytest.ExitCode.USAGE_ERROR and "is not an upstream URL" in upstream.stderr.str()
    pytester.makeini("[pytest]\ncassette_record_mode = sometimes\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "cassette_record_mode = 'sometimes'" in result.stderr.str()


def test_a_misused_marker_fails_its_test_at_setup_saying_how_it_is_used(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marked='''
        import pytest


        @pytest.mark.cassette("a", "b")
        def test_two_names():
            pass


        @pytest.mark.cassette("a", colour="red")
        def test_unknown_argument():
            pass


        @pytest.mark.cassette("a", faults=["rate_limit; retry_after=soon"])
        def test_bad_fault():
            pass


        @pytest.mark.cassette(".hidden")
        def test_bad_name():
            pass


        @pytest.mark.cassette("a", faults=[{"kind": "rate_limit", "times": 1}])
        def test_a_json_rule():
            pass
    ''')
    result = pytester.runpytest("-p", "no:langsmith_plugin")
    result.assert_outcomes(errors=5)
    output = result.stdout.str()
    assert "takes one cassette name, not ('a', 'b')" in output and "unknown argument(s) colour" in output
    assert "faults=['rate_limit; retry_after=soon']): retry_after: must be a number" in output
    assert "cassette name '.hidden' has a part starting with '.'" in output
    assert "faults=[{'kind': 'rate_limit', 'times': 1}]): a rule is text in the --fault syntax" in output


def test_markers_on_a_module_a_class_and_a_test_combine_the_closest_giving_each_argument(
        pytester: pytest.Pytester) -> None:
    (pytester.path / "tests" / "cassettes").mkdir(parents=True)
    (pytester.path / "tests" / "cassettes" / "chat.yaml").write_text(go_vcr(openai_chat("Say hi", "Hi!")))
    pytester.makepyfile(test_layered='''
        import pytest

        pytestmark = pytest.mark.cassette("chat", faults=["rate_limit"])


        def kinds(cassette):
            return [rule.spec.fault.kind.value for rule in cassette.server.service.faults.rules()]


        @pytest.mark.cassette(speed=1)
        def test_keeps_the_module_name_and_faults(cassette):
            assert cassette.cassette == "chat" and cassette.options.pacing.speed == 1
            assert kinds(cassette) == ["rate_limit"]


        @pytest.mark.cassette(fail_unused=True)
        def test_fails_on_the_module_cassette_left_unused(cassette):
            pass


        @pytest.mark.cassette("other", faults=[])
        class TestOther:
            @pytest.mark.cassette(speed=1)
            def test_takes_the_class_name_and_no_faults(self, cassette):
                assert cassette.cassette == "other" and kinds(cassette) == []
    ''')
    result = pytester.runpytest("-p", "no:langsmith_plugin", "-rA")
    result.assert_outcomes(passed=2, failed=1)
    assert "1 recorded interaction was not used from cassette 'chat'" in result.stdout.str()


def test_options_reach_the_server_and_the_environment_gives_the_rest(pytester: pytest.Pytester,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASSETTE_SERVER_EXHAUSTED", "error")  # not one of the plugin's options: the variable counts
    monkeypatch.setenv("CASSETTE_SERVER_SPEED", "5")  # the plugin's own options win over the variables
    monkeypatch.setenv("CASSETTE_SERVER_PORT", "8080")
    pytester.makeini("[pytest]\ncassette_speed = 2\ncassette_paths =\n    one\n    two\n")
    pytester.makepyfile(test_settings=f'''
        from pathlib import Path

        from server.matching.index import Exhausted
        from server.record import RecordMode


        def test_settings(cassette_server, request):
            settings = cassette_server.settings
            given = request.config.getoption("cassette_paths")
            expected = [{str(pytester.path)!r} + "/three"] if given else [{str(pytester.path)!r} + "/one",
                                                                          {str(pytester.path)!r} + "/two"]
            assert [str(path) for path in settings.paths] == expected
            assert settings.exhausted is Exhausted.ERROR and settings.port == 0 and settings.host == "127.0.0.1"
            if given:
                assert settings.speed == 0.5 and settings.record is RecordMode.MISS
                assert [str(route) for route in settings.upstream] == ["http://127.0.0.1:9"]
                assert str(settings.out) == expected[0] and Path(expected[0]).is_dir()
            else:
                assert settings.speed == 2 and settings.record is RecordMode.OFF
    ''')
    pytester.runpytest("-p", "no:langsmith_plugin").assert_outcomes(passed=1)
    pytester.runpytest("-p", "no:langsmith_plugin", "--cassette-paths=three", "--cassette-speed=0.5",
                       "--cassette-record-mode=new_episodes", "--cassette-upstream=http://127.0.0.1:9"
                       ).assert_outcomes(passed=1)
