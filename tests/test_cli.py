"""The command line as users run it: a real process, flags, environment variables, exit codes."""

from __future__ import annotations

import dataclasses
import gc
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import server.cli as cli
from server import create_app
from server.cli import NOT_FOR_RECORD, build_parser, main, resolve_settings
from server.loader import FOUND_SUFFIXES
from server.memory import FULL_COLLECTION_AFTER
from server.record import RecordMode
from server.record.upstreams import parse_route
from server.settings import Settings, parse_size, shown_size

from .conftest import BUNDLED, ROOT, interaction

REQUEST_BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'  # conftest.interaction's
BAD_YAML = "version: 2\ninteractions:\n- id: 0\n  request: [unclosed\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, cwd=cwd)


@contextmanager
def server(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "server", "serve", *args], cwd=cwd, text=True,
                               env={**os.environ, "CASSETTE_SERVER_PORT": str(port), **(env or {})},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/__admin/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def test_serve_logs_what_it_loaded_and_what_it_could_not(write_cassette, cassette_dir: Path) -> None:
    write_cassette("good", interaction(), interaction('{"turn":2}'))
    bad = write_cassette("bad", BAD_YAML)
    with server(str(cassette_dir)) as (url, process):
        listing = httpx.get(url + "/__admin/cassettes").json()
        process.terminate()
        output = process.stdout.read()
    assert [entry["name"] for entry in listing] == ["good", "bad"]
    assert "Loaded 1 cassettes (2 interactions)" in output
    assert "good: 2 interactions" in output
    assert "Endpoint POST /v1/chat/completions: 2 interactions" in output
    assert f"Cannot load {bad}:5: invalid YAML: did not find expected ',' or ']' (while parsing a flow sequence that starts at line 4)" in output


def test_default_path_is_cassettes_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "cassettes").mkdir()
    (tmp_path / "cassettes" / "here.yaml").write_text((BUNDLED / "weather.yaml").read_text())
    with server(cwd=tmp_path) as (url, _):
        assert [entry["name"] for entry in httpx.get(url + "/__admin/cassettes").json()] == ["here"]


def test_environment_configures_everything(write_cassette, cassette_dir: Path) -> None:
    write_cassette("env", interaction(duration="5s"))
    env = {"CASSETTE_SERVER_PATHS": str(cassette_dir), "CASSETTE_SERVER_SPEED": "0"}
    with server(env=env) as (url, _):
        start = time.monotonic()
        response = httpx.post(url + "/v1/chat/completions", content=interaction()["request"]["body"])
        assert response.status_code == 200 and time.monotonic() - start < 2.5


def test_flag_wins_over_environment(write_cassette, cassette_dir: Path) -> None:
    write_cassette("env", interaction(duration="1s"))
    with server(str(cassette_dir), "--speed", "1", env={"CASSETTE_SERVER_SPEED": "0"}) as (url, _):
        start = time.monotonic()
        httpx.post(url + "/v1/chat/completions", content=interaction()["request"]["body"])
        assert time.monotonic() - start >= 1.0


def test_strict_makes_load_errors_fatal(write_cassette, cassette_dir: Path) -> None:
    write_cassette("good", interaction())
    bad = write_cassette("bad", BAD_YAML)
    result = run("serve", str(cassette_dir), "--strict", "--port", str(free_port()))
    assert result.returncode == 1
    assert f"{bad}:5" in result.stderr and "--strict" in result.stderr


def test_bad_values_are_usage_errors() -> None:
    flag = run("serve", "--speed", "-1")
    assert flag.returncode == 2 and "argument --speed: '-1' is not a speed" in flag.stderr
    tiny = run("serve", "--speed", "1e-300")  # 1 s recorded would wait longer than the universe exists
    assert tiny.returncode == 2 and "from 0.001 up" in tiny.stderr
    endless = run("serve", "--event-interval", "inf")
    assert endless.returncode == 2 and "finite number of seconds" in endless.stderr
    env = run("serve", env={"CASSETTE_SERVER_EXHAUSTED": "sometimes"})
    assert env.returncode == 2 and "CASSETTE_SERVER_EXHAUSTED='sometimes'" in env.stderr
    path = run("serve", "--ignore-field", "a..b")
    assert path.returncode == 2 and "bad field path" in path.stderr
    empty_flag = run("serve", "--admin-token", " ")
    assert empty_flag.returncode == 2 and "argument --admin-token: the admin token is empty" in empty_flag.stderr
    empty_env = run("serve", env={"CASSETTE_SERVER_ADMIN_TOKEN": ""})
    assert empty_env.returncode == 2 and "CASSETTE_SERVER_ADMIN_TOKEN='': the admin token is empty" in empty_env.stderr


@pytest.mark.parametrize(("argv", "message"), [
    (("--port", "abc"), "argument --port: port must be a whole number from 0 to 65535, not 'abc'"),
    (("--journal-size", "1.5"), "argument --journal-size: must be a whole number >= 0, not '1.5'"),
    (("--max-sessions", "many"), "argument --max-sessions: must be a whole number >= 1, not 'many'"),
    (("--event-interval", "soon"), "argument --event-interval: must be a finite number of seconds >= 0, not 'soon'"),
    (("--upstream-timeout", "never"), "argument --upstream-timeout: must be a finite number of seconds > 0, not 'never'"),
])
def test_numbers_that_are_not_numbers_are_usage_errors_saying_what_is_expected(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", *argv])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and message in error and "invalid literal" not in error and "convert" not in error
    with pytest.raises(ValueError, match="CASSETTE_SERVER_PORT='8o8o': port must be a whole number from 0 to 65535"):
        settings_of("serve", environ={"CASSETTE_SERVER_PORT": "8o8o"})


def test_help_shows_every_environment_variable() -> None:
    result = run("serve", "--help")
    for name in ("PATHS", "HOST", "PORT", "SPEED", "EVENT_INTERVAL", "EXHAUSTED", "IGNORE_FIELDS", "MATCH_HEADERS",
                 "EXACT_BODY", "STRICT", "JOURNAL_SIZE", "WATCH", "ADMIN_TOKEN", "MAX_CASSETTE_SIZE", "LOG_LEVEL",
                 "RECORD", "UPSTREAM", "OUT", "CASSETTE", "FORMAT", "KEEP_HEADERS", "RECORD_ERRORS", "UPSTREAM_TIMEOUT"):
        assert f"CASSETTE_SERVER_{name}" in result.stdout
    recording = run("record", "--help")
    assert "--upstream" in recording.stdout and "--speed" not in recording.stdout and "PATH ..." not in recording.stdout


def test_the_options_page_names_every_option_and_what_record_leaves_out() -> None:
    page = (ROOT / "docs" / "options.md").read_text()
    options = {item.name: item.metadata["option"] for item in dataclasses.fields(Settings)}
    for name, option in options.items():
        assert option.env_name(name) in page and (name == "paths" or f"`{option.flag}" in page or f"<code>{option.flag}" in page)
    left_out = re.findall(r"`([^`]+)`", page.split("takes the options", 1)[1].split(" except ", 1)[1].split(";", 1)[0])
    assert sorted(left_out) == sorted("PATH" if name == "paths" else options[name].flag for name in NOT_FOR_RECORD)


def test_the_path_help_names_every_suffix_a_directory_search_loads(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["list", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert all(f"*{suffix}" in shown for suffix in FOUND_SUFFIXES)


def test_help_shows_size_defaults_in_the_units_the_options_take(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--max-body-size SIZE" in shown and "(default: 64M)" in shown and "(default: 32M)" in shown
    assert not re.search(r"default: \d{6,}", shown)  # no size shown in bytes
    for size in (1, 1000, 1024, 1536, 64 * 1024**2, 3 * 1024**3):
        assert parse_size(shown_size(size)) == size


def settings_of(*argv: str, environ: dict[str, str] | None = None) -> Settings:
    return resolve_settings(build_parser().parse_args(argv), environ or {})


def test_the_record_modes_are_spelled_by_commands_flags_and_one_variable() -> None:
    assert settings_of("serve").record is RecordMode.OFF
    assert settings_of("serve", "--record-on-miss").record is RecordMode.MISS
    assert settings_of("record").record is RecordMode.ALL
    assert settings_of("serve", environ={"CASSETTE_SERVER_RECORD": "all"}).record is RecordMode.ALL
    assert settings_of("record", environ={"CASSETTE_SERVER_RECORD": "off"}).record is RecordMode.ALL
    with pytest.raises(ValueError, match="CASSETTE_SERVER_RECORD='sometimes': expected one of off, miss, all"):
        settings_of("serve", environ={"CASSETTE_SERVER_RECORD": "sometimes"})


def test_recording_options_from_flags_and_the_environment() -> None:
    flags = settings_of("record", "--upstream", "http://127.0.0.1:11434", "--upstream", "/v1/messages=https://a.test",
                        "--out", "recorded", "--cassette", "team/chat", "--format", "vcrpy", "--keep-header",
                        "X-Stainless-OS", "--record-errors", "--upstream-timeout", "30")
    assert flags.upstream == (parse_route("http://127.0.0.1:11434"), parse_route("/v1/messages=https://a.test"))
    assert (flags.out, flags.cassette, flags.format, flags.keep_headers, flags.record_errors, flags.upstream_timeout) \
        == (Path("recorded"), "team/chat", "vcrpy", ("x-stainless-os",), True, 30.0)
    env = settings_of("serve", environ={"CASSETTE_SERVER_UPSTREAM": "http://a.test, /v1/messages=http://b.test",
                                        "CASSETTE_SERVER_KEEP_HEADERS": "x-one,x-two"})
    assert env.upstream == (parse_route("http://a.test"), parse_route("/v1/messages=http://b.test"))
    assert env.keep_headers == ("x-one", "x-two")


def test_record_loads_only_the_directory_it_writes_to() -> None:
    # `record` takes no PATH: the default ./cassettes is not loaded beside --out, or a cassette
    # named like one there would be appended to in ./cassettes instead of under --out
    assert settings_of("record", "--out", "recorded").paths == (Path("recorded"),)
    assert settings_of("record", environ={"CASSETTE_SERVER_OUT": "o"}).paths == (Path("o"),)
    assert settings_of("record").paths == (Path("cassettes"),)


def test_recording_directory_defaults_to_the_first_cassette_directory(tmp_path: Path) -> None:
    assert Settings(paths=(tmp_path / "a.yaml", tmp_path / "new", tmp_path)).recording_directory() == tmp_path / "new"
    assert Settings(paths=(tmp_path / "a.yaml",), out=tmp_path / "o").recording_directory() == tmp_path / "o"
    assert Settings(paths=(BUNDLED / "weather.yaml",)).recording_directory() == Path("cassettes")


def test_bad_recording_options_are_usage_errors(tmp_path: Path) -> None:
    secret = run("record", "--keep-header", "Authorization")
    assert secret.returncode == 2 and "never recorded" in secret.stderr
    upstream = run("record", "--upstream", "https://api.openai.com/v1")
    assert upstream.returncode == 2 and "without a path" in upstream.stderr
    name = run("record", "--cassette", "../out")
    assert name.returncode == 2 and "cassette name '../out'" in name.stderr
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    unwritable = run("record", "--out", str(blocked), "--port", str(free_port()))
    assert unwritable.returncode == 2 and f"cannot record into {blocked}" in unwritable.stderr


def test_no_command_prints_help() -> None:
    result = run()
    assert result.returncode == 2 and "serve" in result.stderr


def test_admin_token_from_the_environment(write_cassette, cassette_dir: Path) -> None:
    write_cassette("c", interaction())
    with server(str(cassette_dir), env={"CASSETTE_SERVER_ADMIN_TOKEN": "t0k"}) as (url, _):
        assert httpx.get(url + "/__admin/cassettes").status_code == 401
        assert httpx.get(url + "/__admin/cassettes", headers={"Authorization": "Bearer t0k"}).status_code == 200


@pytest.mark.parametrize(("text", "size"), [("1048576", 1048576), ("512K", 512 * 1024), ("64MiB", 64 * 1024**2),
                                            ("1 g", 1024**3), ("2mb", 2 * 1024**2)])
def test_max_cassette_size_takes_units(text: str, size: int) -> None:
    assert Settings.resolve({}, environ={"CASSETTE_SERVER_MAX_CASSETTE_SIZE": text}).max_cassette_size == size


def test_max_cassette_size_defaults_to_64_mib_and_refuses_nonsense() -> None:
    assert Settings.resolve({}, environ={}).max_cassette_size == 64 * 1024**2
    for text in ("0", "-1", "1.5M", "64 apples", ""):
        with pytest.raises(ValueError, match="CASSETTE_SERVER_MAX_CASSETTE_SIZE=.*expected a size in bytes"):
            Settings.resolve({}, environ={"CASSETTE_SERVER_MAX_CASSETTE_SIZE": text})


def test_max_sessions_from_flag_and_environment() -> None:
    assert Settings.resolve({}, {}).max_sessions == 10_000
    assert Settings.resolve({}, {"CASSETTE_SERVER_MAX_SESSIONS": "50"}).max_sessions == 50
    assert Settings.resolve({"max_sessions": 7}, {"CASSETTE_SERVER_MAX_SESSIONS": "50"}).max_sessions == 7
    with pytest.raises(ValueError, match="CASSETTE_SERVER_MAX_SESSIONS='0': must be a whole number >= 1"):
        Settings.resolve({}, {"CASSETTE_SERVER_MAX_SESSIONS": "0"})
    app = create_app(Settings(paths=(), max_sessions=3))
    assert app.service.sessions.limit == 3


def test_the_admin_token_stays_out_of_the_settings_repr() -> None:
    settings = Settings.resolve({"admin_token": "s3cret-flag"}, environ={"CASSETTE_SERVER_PORT": "9"})
    assert settings.admin_token == "s3cret-flag" and "s3cret" not in repr(settings) and "port=9" in repr(settings)
    from_env = dataclasses.replace(Settings.resolve({}, environ={"CASSETTE_SERVER_ADMIN_TOKEN": "s3cret-env"}), port=1)
    assert from_env.admin_token == "s3cret-env" and "s3cret" not in repr(from_env)


def test_the_admin_token_is_read_without_surrounding_whitespace() -> None:
    assert Settings.resolve({}, environ={"CASSETTE_SERVER_ADMIN_TOKEN": " t0k\n"}).admin_token == "t0k"
    for blank in ("", " \n"):
        with pytest.raises(ValueError, match="admin token is empty"):
            Settings.resolve({}, environ={"CASSETTE_SERVER_ADMIN_TOKEN": blank})


def test_check_finds_a_planted_secret_and_fails(write_cassette, cassette_dir: Path) -> None:
    write_cassette("clean", interaction())
    leak = write_cassette("leak", interaction(request_headers={"X-Api-Key": ["sk-ant-api03-" + "a1B2" * 20]}))
    result = run("check", str(cassette_dir))
    assert result.returncode == 1, result.stdout
    [finding, summary] = result.stdout.splitlines()
    assert finding.startswith(f"{leak}:") and ": error: leak#0: request header x-api-key holds a credential ('sk-ant-…')" in finding
    assert finding.endswith("[secret]") and "a1B2a1B2" not in result.stdout
    assert summary == "checked 2 files (2 cassettes, 2 interactions): 1 error, 0 warnings"


def test_check_passes_clean_cassettes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(BUNDLED)]) == 0
    assert capsys.readouterr().out == "checked 6 files (6 cassettes, 9 interactions): 0 errors, 0 warnings\n"


def test_check_duplicates_fail_unless_allowed(write_cassette, cassette_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cassette("retry", interaction(code=500, response_body="oops"), interaction(response_body="ok"))
    assert main(["check", str(cassette_dir)]) == 1
    assert ": error: the same request is recorded 2 times" in capsys.readouterr().out
    assert main(["check", "--allow-duplicates", str(cassette_dir)]) == 0
    assert "1 warning" in capsys.readouterr().out


def test_check_takes_the_match_options(write_cassette, cassette_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cassette("c", interaction('{"q":1,"id":"a"}', response_body="1"), interaction('{"q":1,"id":"b"}', response_body="2"))
    assert main(["check", str(cassette_dir)]) == 0
    assert main(["check", "--ignore-field", "id", str(cassette_dir)]) == 1
    capsys.readouterr()


def test_check_and_list_read_only_the_variables_of_their_own_options() -> None:
    # a shell or CI job set up for the server (a faults file relative to another folder, …)
    # must not make `check` or `list` fail over options they do not take
    server_only = {"CASSETTE_SERVER_PORT": "abc", "CASSETTE_SERVER_FAULTS_FILE": "/no/such/faults.yaml",
                   "CASSETTE_SERVER_SPEED": "fast"}
    for command in ("check", "list"):
        settings = settings_of(command, environ={**server_only, "CASSETTE_SERVER_MAX_CASSETTE_SIZE": "1K",
                                                 "CASSETTE_SERVER_PATHS": "a:b"})
        assert (settings.paths, settings.max_cassette_size) == ((Path("a"), Path("b")), 1024)
    checked = settings_of("check", environ={**server_only, "CASSETTE_SERVER_IGNORE_FIELDS": "id"})
    assert checked.ignore_fields == ("id",)
    assert settings_of("list", "--max-cassette-size", "2K").max_cassette_size == 2048
    with pytest.raises(ValueError, match="CASSETTE_SERVER_PORT='abc'"):
        settings_of("serve", environ=server_only)


def test_list_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", str(BUNDLED)]) == 0
    header, *rows, total = capsys.readouterr().out.splitlines()
    assert header.split() == ["CASSETTE", "ID", "REQUEST", "MODEL", "STREAM", "STATUS", "EVENTS", "DURATION", "LAST",
                              "USER", "MESSAGE"]
    weather = next(row for row in rows if row.startswith("weather ") and row.split()[1] == "0")
    assert weather.split()[:9] == ["weather", "0", "POST", "/v1/chat/completions", "gpt-4o-mini", "yes", "200", "12", "2.46s"]
    assert weather.endswith("What's the weather in Florence,Italy?")
    assert len(rows) == 9 and total == "6 cassettes, 9 interactions"
    columns = header.index("MODEL")
    assert all(row[columns - 2 : columns] == "  " for row in rows)  # aligned


def test_list_reports_files_it_cannot_load(write_cassette, cassette_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cassette("ok", interaction())
    bad = write_cassette("bad", BAD_YAML)
    assert main(["list", str(cassette_dir)]) == 1
    captured = capsys.readouterr()
    assert "ok " in captured.out and captured.err.startswith(f"cannot load {bad}:5: invalid YAML")


def test_no_access_log_by_default_but_a_summary_at_shutdown(write_cassette, cassette_dir: Path) -> None:
    write_cassette("good", interaction())
    with server(str(cassette_dir)) as (url, process):
        assert httpx.post(url + "/v1/chat/completions", content=REQUEST_BODY).status_code == 200
        assert httpx.post(url + "/v1/chat/completions", content=b'{"not": "recorded"}').status_code == 404
        process.terminate()
        output = process.stdout.read()
    assert '"POST /v1/chat/completions HTTP/1.1" 200' not in output  # uvicorn's access line
    assert "Requests so far: 2 (1 served from recordings, 1 missed, 0 refused)" in output


def test_access_log_brings_the_per_request_lines_back(write_cassette, cassette_dir: Path) -> None:
    write_cassette("good", interaction())
    with server(str(cassette_dir), "--access-log") as (url, process):
        assert httpx.post(url + "/v1/chat/completions", content=REQUEST_BODY).status_code == 200
        process.terminate()
        output = process.stdout.read()
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in output


def test_serve_takes_what_startup_built_out_of_full_garbage_collections(write_cassette, cassette_dir: Path,
                                                                        monkeypatch) -> None:
    """A full collection scans every tracked object on the event loop: with startup's objects
    in it, one stalled 500 paced streams by ~60 ms (server/memory.py)."""
    write_cassette("weather", interaction())
    seen = {}

    def run(app, **options) -> None:  # stands in for uvicorn.run: the state the server would start in
        seen.update(frozen=gc.get_freeze_count(), thresholds=gc.get_threshold(),
                    cassette_frozen=any(o is app.service.index for o in gc.get_objects()))

    monkeypatch.setattr(cli.uvicorn, "run", run)
    monkeypatch.setattr(cli.logging.config, "dictConfig", lambda config: None)  # this process's logging stays
    monkeypatch.setattr(cli, "tune_allocator", lambda: None)  # and its allocator
    thresholds = gc.get_threshold()
    try:
        assert cli.serve(Settings(paths=(cassette_dir,), port=0)) == 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert seen["frozen"] > 1000 and not seen["cassette_frozen"]  # frozen objects are not in gc.get_objects()
    assert seen["thresholds"][2] == FULL_COLLECTION_AFTER
