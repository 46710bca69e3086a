"""The pytest plugin (entry point ``pytest11``: ``cassette_server``): one marker gives a test its
own recorded LLM, and a request it made that no recording answers fails it.

    @pytest.mark.cassette("weather")
    def test_weather():
        assert "Florence" in my_agent()      # builds openai.OpenAI() from the environment

- ``cassette_server`` (session scope, one per xdist worker): a real server over
  ``cassette_paths`` / ``--cassette-paths``, started when a test first needs it.
- ``@pytest.mark.cassette(NAME, fail_unused=, speed=, faults=)`` or the ``cassette`` fixture: for
  the test's duration, OPENAI_BASE_URL, ANTHROPIC_BASE_URL and GOOGLE_GEMINI_BASE_URL (and
  placeholder keys when none are set) point at the server, scoped to the cassette and to a
  session of the test's own (``/__session/ID/__cassette/NAME/``), so every test replays its
  sequences from the start. Without NAME, ``{module}/{test}`` (as pytest-recording names them).
- After the call, a refused request of that session (a miss, with its closest recording and
  differences) fails the test, even when the code under test swallowed the SDK's exception;
  with ``fail_unused``, so does an interaction of the cassette the test left unused.
- ``--cassette-record-mode none|once|new_episodes|all`` (vcrpy's names) and ``--cassette-speed``
  (default 0: no waiting).

Importing this module costs nothing but pytest: the server (FastAPI, uvicorn) is imported by the
fixtures, so a run with no test using them neither starts nor imports it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .library import CassetteServer, ServerSession
    from .settings import Settings

RECORD_MODES = ("none", "once", "new_episodes", "all")
DEFAULT_PATHS = ("tests/cassettes",)
MARKER = "cassette"
# Characters pytest-recording replaces in cassette names (unsafe in file names somewhere)
_UNSAFE_IN_NAMES = re.compile(r"""[<>?%*:|"'/\\\x00-\x1f\x7f]""")
_UNSAFE_IN_SESSIONS = re.compile(r"[^A-Za-z0-9._~-]+")
_CHECK = pytest.StashKey["_Check"]()
_OPTIONS = pytest.StashKey["PluginOptions"]()


# --- options -----------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cassette-server", "cassette-server: replay recorded LLM APIs")
    group.addoption("--cassette-paths", action="append", metavar="PATH", dest="cassette_paths",
                    help="cassette file or directory to serve (repeatable; default: the ini option cassette_paths, "
                         "else tests/cassettes)")
    parser.addini("cassette_paths", type="paths", default=[],
                  help="cassette files or directories to serve, one a line (default: tests/cassettes)")
    group.addoption("--cassette-record-mode", choices=RECORD_MODES, dest="cassette_record_mode",
                    help="none: replay only (the default); once: record a test's cassette that does not exist yet; "
                         "new_episodes: record misses; all: record each test's cassette again from scratch")
    parser.addini("cassette_record_mode", default="none", help="as --cassette-record-mode")
    group.addoption("--cassette-speed", dest="cassette_speed", metavar="S",
                    help="replay timing factor: 0 no waiting (the default in tests), 1 as recorded")
    parser.addini("cassette_speed", default="0", help="as --cassette-speed")
    group.addoption("--cassette-fail-unused", action="store_true", default=None, dest="cassette_fail_unused",
                    help="fail a cassette test that left interactions of its cassette unused")
    parser.addini("cassette_fail_unused", type="bool", default=False, help="as --cassette-fail-unused")
    group.addoption("--cassette-upstream", action="append", metavar="URL|PREFIX=URL", dest="cassette_upstream",
                    help="where recording forwards requests (repeatable; default: CASSETTE_SERVER_UPSTREAM, else "
                         "OpenAI, Anthropic or Gemini by the request)")
    parser.addini("cassette_upstream", type="linelist", default=[], help="as --cassette-upstream, one a line")


@dataclass(frozen=True)
class PluginOptions:
    """The plugin's options, from the command line, else the ini file, else the defaults."""

    paths: tuple[Path, ...]
    record_mode: str
    speed: str
    fail_unused: bool
    upstream: tuple[str, ...]

    @classmethod
    def of(cls, config: pytest.Config) -> PluginOptions:
        given = config.getoption("cassette_paths")
        if given:
            paths = tuple(config.invocation_params.dir / path for path in given)
        else:
            paths = tuple(config.getini("cassette_paths")) or tuple(config.rootpath / path for path in DEFAULT_PATHS)
        record_mode = config.getoption("cassette_record_mode") or config.getini("cassette_record_mode").strip()
        if record_mode not in RECORD_MODES:
            raise pytest.UsageError(f"cassette_record_mode = {record_mode!r}: expected one of {', '.join(RECORD_MODES)}")
        speed = config.getoption("cassette_speed") or config.getini("cassette_speed").strip()
        fail_unused = config.getoption("cassette_fail_unused")
        upstream = config.getoption("cassette_upstream") or config.getini("cassette_upstream")
        options = cls(paths, record_mode, speed, bool(config.getini("cassette_fail_unused") if fail_unused is None
                                                      else fail_unused), tuple(upstream))
        options._check()
        return options

    def _check(self) -> None:
        """A bad value is a usage error before any test runs (the parsers are imported only for
        values that are not the defaults: a run that does not use the plugin imports nothing)."""
        if self.speed != "0":
            from .replay.pacing import parse_speed

            try:
                parse_speed(self.speed)
            except ValueError as error:
                raise pytest.UsageError(f"--cassette-speed / cassette_speed: {error}") from None
        if self.upstream:
            from .record.upstreams import parse_route

            for route in self.upstream:
                try:
                    parse_route(route)
                except ValueError as error:
                    raise pytest.UsageError(f"--cassette-upstream / cassette_upstream: {error}") from None

    def settings(self) -> Settings:
        """The server's Settings: these options, and ``CASSETTE_SERVER_*`` variables for the rest
        (recording's upstream, format, headers kept, matching options, …). It always listens on
        a free port of 127.0.0.1; a record mode other than none makes it able to record, and each
        test's session chooses (see ``_session_record``)."""
        from .library import build_settings
        from .settings import Settings

        options: dict[str, Any] = {"speed": self.speed, "record": "off" if self.record_mode == "none" else "miss",
                                   "watch": False}
        if self.record_mode != "none":
            options["out"] = Settings(paths=self.paths).recording_directory()
        if self.upstream:
            options["upstream"] = self.upstream
        return build_settings(self.paths, options, os.environ)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(name=None, *, fail_unused=None, speed=None, faults=()): replay cassette NAME (default: "
        "{module}/{test}) for this test through cassette-server, in a session of its own; a request no recording "
        "answers fails the test. speed: its replay timing; faults: fault rules ('rate_limit; times=1').",
    )
    config.stash[_OPTIONS] = PluginOptions.of(config)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A marked test gets the ``cassette`` fixture before its other function-scoped fixtures, so
    they see the environment pointing at the server; and after its wider-scoped ones (pytest
    lists those first), so a session fixture that sets a key sets it before ``cassette`` looks."""
    for item in items:
        names = getattr(item, "fixturenames", None)
        if names is not None and item.get_closest_marker(MARKER) is not None:
            others = [name for name in names if name != MARKER]
            position = _first_function_scoped(item, others)
            item.fixturenames = [*others[:position], MARKER, *others[position:]]  # type: ignore[attr-defined]  # a new list: parametrized tests share one


def _first_function_scoped(item: pytest.Item, names: list[str]) -> int:
    """Where the function-scoped fixtures start among ``names`` (pytest sorts them widest scope first)."""
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    for position, name in enumerate(names):
        found = definitions.get(name)
        if not found or found[-1].scope == "function":
            return position
    return len(names)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cassette_server(pytestconfig: pytest.Config) -> Iterator[CassetteServer]:
    """A cassette-server for the whole run (one per xdist worker): ``.url``, ``.service``,
    ``.unmatched()``, ``.unused()``, ``.session()``."""
    from .library import CassetteServer

    settings = pytestconfig.stash[_OPTIONS].settings()
    with CassetteServer(settings=settings) as server:
        yield server


@pytest.fixture
def cassette(request: pytest.FixtureRequest, cassette_server: CassetteServer) -> Iterator[ServerSession]:
    """This test's own session on ``cassette_server``, scoped to its cassette (the marker's NAME,
    else ``{module}/{test}``), with the SDKs' variables pointing at it for the test's duration:
    ``.url``, ``.openai_base_url``, ``.fault(kind, **params)``, ``.misses()``, ``.unused()``."""
    from .errors import HTTPError

    item = request.node
    wanted = _Marked.of(item.iter_markers(MARKER))
    options: PluginOptions = request.config.stash[_OPTIONS]
    name = wanted.name or default_cassette_name(item)
    _check_name(name)
    record, replace = _session_record(options.record_mode, cassette_server, name)
    try:
        session = cassette_server.session(session_id(item.nodeid), cassette=name, record=record,
                                          speed=wanted.speed, replace=replace)
    except HTTPError as error:  # a speed the server refuses, more sessions than --max-sessions
        pytest.fail(f"cassette-server refused this test's session: {error.message}", pytrace=False)
    with session:
        for spec in wanted.faults:
            if not isinstance(spec, str):
                pytest.fail(f"@pytest.mark.cassette(faults=[{spec!r}]): a rule is text in the --fault syntax, such as "
                            "'rate_limit; times=1' (cassette.fault(kind, **params) takes a rule's fields)", pytrace=False)
            try:
                session.fault_spec(spec)
            except ValueError as error:
                pytest.fail(f"@pytest.mark.cassette(faults=[{spec!r}]): {error}", pytrace=False)
        fail_unused = options.fail_unused if wanted.fail_unused is None else wanted.fail_unused
        check = item.stash[_CHECK] = _Check(session, fail_unused, item.nodeid, options.record_mode)
        with pytest.MonkeyPatch.context() as patch:
            for variable, value in session.environ().items():
                patch.setenv(variable, value)
            yield session
        del item.stash[_CHECK]
        late = check.late()
    if late:
        pytest.fail(late, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """After the test's own code: fail it on its session's refused requests (and unused
    interactions, when asked). A test that failed already gets them as a report section."""
    check = item.stash.get(_CHECK, None)
    if check is None:
        return (yield)
    try:
        result = yield
    except BaseException:
        found = "\n\n".join(filter(None, (check.after_call(fail_unused=False), check.seeds())))
        if found:
            item.add_report_section("call", "cassette-server", found)
        raise
    found = check.after_call(fail_unused=check.fail_unused)
    if found:
        pytest.fail(found, pytrace=False)
    return result


# --- what a test asks for ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Marked:
    name: str | None = None
    fail_unused: bool | None = None
    speed: float | None = None
    faults: tuple[str, ...] = ()

    @classmethod
    def of(cls, markers: Iterable[pytest.Mark]) -> _Marked:
        """The markers' arguments, closest first (test, class, module): each argument comes from
        the closest marker that gives it, so a test's ``cassette(speed=1)`` keeps its module's
        cassette name. A misused marker fails the test at setup, saying how it is used."""
        given: dict[str, Any] = {}
        for marker in markers:
            for argument, value in cls._arguments(marker).items():
                given.setdefault(argument, value)
        faults = given.get("faults") or ()
        faults = (faults,) if isinstance(faults, str) else tuple(faults)
        return cls(given.get("name"), given.get("fail_unused"), given.get("speed"), faults)

    @staticmethod
    def _arguments(marker: pytest.Mark) -> dict[str, Any]:
        """The arguments one marker gives (None: not given)."""
        kwargs = dict(marker.kwargs)
        args = list(marker.args)
        if len(args) > 1 or ("name" in kwargs and args):
            pytest.fail(f"@pytest.mark.cassette takes one cassette name, not {marker.args!r}", pytrace=False)
        if args:
            kwargs["name"] = args[0]
        unknown = set(kwargs) - {"name", "fail_unused", "speed", "faults"}
        if unknown:
            pytest.fail(f"@pytest.mark.cassette: unknown argument(s) {', '.join(sorted(unknown))}; it takes a name, "
                        "fail_unused, speed and faults", pytrace=False)
        name = kwargs.get("name")
        if name is not None and not isinstance(name, str):
            pytest.fail(f"@pytest.mark.cassette: the name is a string, not {name!r}", pytrace=False)
        return {argument: value for argument, value in kwargs.items() if value is not None}


def default_cassette_name(item: pytest.Item) -> str:
    """``{module}/{test}`` as pytest-recording names cassettes: the test file's name without
    ``.py``, then ``Class.test_name[params]`` with characters unsafe in file names as ``-``."""
    test = item.name
    cls = getattr(item, "cls", None)
    if cls is not None:
        test = f"{cls.__name__}.{test}"
    return f"{Path(str(item.path)).stem}/{_UNSAFE_IN_NAMES.sub('-', test)}"


def session_id(nodeid: str) -> str:
    """A test's session: its name made URL-safe (readable in the journal and logs) and a short
    hash of its whole node id (unique among the run's tests)."""
    name = nodeid.rsplit("::", 1)[-1]
    slug = _UNSAFE_IN_SESSIONS.sub("-", name).strip("-")[:60] or "test"
    return f"{slug}-{hashlib.sha1(nodeid.encode('utf-8')).hexdigest()[:10]}"


def _check_name(name: str) -> None:
    from .storage import name_problem

    problem = name_problem(name)
    if problem:
        pytest.fail(f"cassette name {name!r} {problem}; name the cassette with @pytest.mark.cassette(\"NAME\")",
                    pytrace=False)


def _session_record(mode: str, server: CassetteServer, name: str) -> tuple[str | None, bool]:
    """The test session's record mode and whether it replaces its cassette, from vcrpy's mode:
    none: the server's (it does not record); once: everything when the cassette does not exist
    yet, else nothing; new_episodes: misses; all: everything, the old file replaced by the first
    interaction recorded (a test that records nothing leaves it as it was)."""
    if mode == "none":
        return None, False
    if mode == "once":
        return ("off" if server.has_cassette(name) else "all"), False
    if mode == "new_episodes":
        return "miss", False
    return "all", True


class _Check:
    """What fails a cassette test: its session's refused requests, and, when asked, its
    cassette's unused interactions."""

    def __init__(self, session: ServerSession, fail_unused: bool, nodeid: str, record_mode: str) -> None:
        self.session = session
        self.fail_unused = fail_unused
        self.nodeid = nodeid
        self.record_mode = record_mode
        self.seen = 0  # refusals reported after the call

    def after_call(self, *, fail_unused: bool) -> str | None:
        found = self._message(self.session.failure(fail_unused=fail_unused), since=0)
        self.seen = self.session.refused
        return found

    def seeds(self) -> str | None:
        """The seeds the test's fault rules with a probability drew with, so that a failure can be
        repeated (the server chooses one when the rule gives none)."""
        lines = [f"fault rule {rule['id']} ({rule['kind']}, probability {rule['probability']:g}) drew with seed "
                 f"{rule['seed']}: add seed={rule['seed']} to its rule to draw the same on every run"
                 for rule in self.session.rules() if rule["probability"] is not None]
        return "\n".join(lines) or None

    def late(self) -> str | None:
        """Refusals after the call (requests from fixture teardowns)."""
        return self._message(self.session.failure(since=self.seen), since=self.seen,
                             when=" after the test, in fixture teardown")

    def _message(self, found: str | None, *, since: int, when: str = "") -> str | None:
        if found is None:
            return None
        lines = [found, "", f"(session {self.session.id} is {self.nodeid}{when}.)"]
        if self.session.refused > since:
            lines.append(_RECORD_HINTS[self.record_mode])
        return "\n".join(lines)


_RECORD_HINTS = {
    "none": "To record what is missing, run with --cassette-record-mode=once (a cassette that does not exist yet) or "
            "new_episodes (add to one), with your real API keys in the environment.",
    "once": "--cassette-record-mode=once only replays a cassette that exists: use new_episodes to add to it, or all "
            "to record it again.",
    "new_episodes": "Recording (--cassette-record-mode=new_episodes) did not answer these requests: see why above.",
    "all": "Recording (--cassette-record-mode=all) did not answer these requests: see why above.",
}
