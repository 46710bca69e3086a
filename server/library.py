"""The library API: a real cassette-server in your own process, for unittest, scripts and other
frameworks (the pytest plugin is built on it).

    with CassetteServer("tests/cassettes", speed=0) as server:
        with server.session(cassette="weather") as session:
            client = openai.OpenAI(base_url=session.openai_base_url, api_key="unused")
            ...
            session.verify()          # raises CassetteFailure on a miss

``CassetteServer`` runs uvicorn on a free port of 127.0.0.1, on a real socket, in a thread with
its own event loop, so the code under test reaches it as it would any server (and an async test
cannot starve it). Options are ``Settings`` fields given as keyword arguments, spelled and checked
as their flags are (``speed=0``, ``record="miss"``, ``upstream="http://127.0.0.1:9000"``).

A ``ServerSession`` is one client's own place on the server: its own sequence positions (the
``/__session/ID/`` URL prefix, so SDK clients that only take a base URL carry it), optionally a
cassette scope, a record mode and a speed of its own, fault rules of its own, and its refused
requests kept for ``verify``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import http.client
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import uvicorn

from .admin.views import interaction_details
from .app import SCOPE_PREFIX, SESSION_PREFIX, CassetteServerApp, create_app
from .catalog import unused
from .cli import UVICORN_OPTIONS
from .errors import HTTPError
from .models import Interaction
from .record import RecordMode
from .replay.faults import FaultRuleError, RuleSpec, parse_rule, parse_spec
from .service import RECORD_ADVICE, CassetteService
from .session_options import SessionOptions
from .settings import Option, Settings
from .storage import cassette_path

HOST = "127.0.0.1"
START_TIMEOUT = 30.0  # seconds for loading cassettes and starting uvicorn
STOP_TIMEOUT = 10.0  # uvicorn gives replies in flight 5 s (UVICORN_OPTIONS), then cuts them
SESSION_ID = re.compile(r"[A-Za-z0-9._~-]{1,200}")  # one URL path segment, nothing to encode
PLACEHOLDER_KEY = "cassette-server-placeholder"  # SDKs refuse to start without a key; the server needs none
SHOWN_REFUSALS = 5  # refused requests a failure message shows in full
_NOT_GIVEN = ("host", "port")  # the server always listens on a free port of 127.0.0.1
T = TypeVar("T")


class CassetteFailure(AssertionError):
    """A session's requests were not all answered from recordings (or, when asked, its cassette
    was not all used). An AssertionError, so unittest and pytest report it as a failure."""


class CassetteServer:
    """A cassette-server on a free port of 127.0.0.1, started by ``start()`` or ``with`` /
    ``async with``, stopped by ``stop()`` or at the end of the block.

    ``paths``: cassette files or directories (default ``./cassettes``). ``options``: ``Settings``
    fields (``speed``, ``exhausted``, ``ignore_fields``, ``record``, ``upstream``, ``faults``, …).
    ``environ``: where the options not given are read from as ``CASSETTE_SERVER_*`` variables;
    by default nowhere (a test's server does not change with the shell it runs in). ``settings``:
    a ready Settings instead of ``paths`` and ``options``.
    """

    def __init__(self, paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None = None, *,
                 settings: Settings | None = None, environ: Mapping[str, str] | None = None, **options: Any) -> None:
        if settings is None:
            settings = build_settings(paths, options, environ or {})
        elif paths is not None or options or environ is not None:
            raise TypeError("CassetteServer takes either settings= or paths and options, not both")
        self.settings = dataclasses.replace(settings, host=HOST, port=0)
        self._app: CassetteServerApp | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None
        self._socket: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- running ---------------------------------------------------------------------------------

    def start(self) -> CassetteServer:
        """Load the cassettes and serve them; returns once the server answers its health check.
        Raises ValueError for unusable settings (a directory recording cannot write, load errors
        with ``strict=True``) and RuntimeError when uvicorn does not start."""
        if self._server is not None:
            raise RuntimeError(f"this CassetteServer is running already, at {self._url}")
        app = create_app(self.settings)
        failures = app.service.loaded.result.failures
        if self.settings.strict and failures:
            errors = "; ".join(str(error) for failure in failures for error in failure.errors)
            raise ValueError(f"{len(failures)} cassette file(s) failed to load and strict is set: {errors}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((HOST, 0))
        except OSError:
            sock.close()
            raise
        url = f"http://{HOST}:{sock.getsockname()[1]}"
        # log_config=None: the process's logging (pytest's capture, an application's own) decides what is
        # shown, of uvicorn's loggers (at warning: its access log would repeat every request) and ours
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False, lifespan="on",
                                **UVICORN_OPTIONS)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"cassette-server {url}",
                                  daemon=True)
        thread.start()
        try:
            _wait_until_started(server, thread, url)
        except BaseException:
            server.should_exit = True
            thread.join(STOP_TIMEOUT)
            sock.close()
            raise
        self._app, self._server, self._thread, self._url, self._socket = app, server, thread, url, sock
        self._loop = server.servers[0].get_loop()
        return self

    def stop(self) -> None:
        """Stop serving (replies in flight get uvicorn's grace period). Does nothing when stopped."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = self._loop = None

    def __enter__(self) -> CassetteServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> CassetteServer:
        return await asyncio.to_thread(self.start)  # loading cassettes must not hold up the caller's loop

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the base URL (OpenAI clients add ``/v1``)."""
        if self._url is None:
            raise RuntimeError("the CassetteServer is not started: use `with CassetteServer(...)` or call start()")
        return self._url

    @property
    def app(self) -> CassetteServerApp:
        if self._app is None:
            raise RuntimeError("the CassetteServer is not started: use `with CassetteServer(...)` or call start()")
        return self._app

    @property
    def service(self) -> CassetteService:
        """The in-process API the admin API is built on (cassettes, index, journal, faults)."""
        return self.app.service

    # --- what happened ---------------------------------------------------------------------------

    def unmatched(self, session: str | None = None) -> list[dict[str, Any]]:
        """Requests not answered from a recording (misses, unknown cassettes, …), newest first,
        each with its closest recordings: ``GET /__admin/requests/unmatched``, from the journal
        (which keeps ``journal_size`` requests; a session's own ``misses()`` keeps its count whole)."""
        entries = self.service.journal.entries(session=session, matched=False)
        return [entry.to_json(near_misses=True) for entry in entries]

    def unused(self, session: str | None = None, cassette: str | None = None) -> list[dict[str, Any]]:
        """Interactions not served yet (in any session, or in ``session``), in recorded order,
        optionally of one ``cassette`` (a name not loaded has none): ``GET /__admin/unused``."""
        index = self.service.index
        if cassette is not None and cassette not in index.by_name:
            return []
        usage = index.usage()
        return _details(unused(index, usage, session=session, cassette=cassette), usage)

    def reset(self, session: str | None = None) -> None:
        """``POST /__admin/reset``: rewind positions, clear the journal, session options and the
        fault rules added since startup; of every session, or of one."""
        self.call(self.service.reset, session)

    def call(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the server's event loop, where replay changes the service's
        state (the journal is the loop's alone), between two requests' steps; returns its result.
        Reading is safe from any thread: what the library reads is copied whole or locked."""
        loop = self._loop
        if loop is None:
            return function(*args)  # not running: nothing else touches the service

        async def on_the_loop() -> T:
            return function(*args)

        try:
            return asyncio.run_coroutine_threadsafe(on_the_loop(), loop).result(STOP_TIMEOUT)
        except concurrent.futures.TimeoutError:
            raise RuntimeError(f"cassette-server at {self._url} did not run {function.__name__} within "
                               f"{STOP_TIMEOUT:g} s: its event loop is blocked") from None

    def has_cassette(self, name: str) -> bool:
        """Whether cassette ``name`` is loaded, or has a file where recording would write it
        (one that failed to load counts: recording must not replace it unasked)."""
        if name in self.service.index.by_name:
            return True
        try:
            return cassette_path(self.settings.recording_directory(), name).is_file()
        except HTTPError as error:
            raise ValueError(error.message) from None

    # --- sessions --------------------------------------------------------------------------------

    def session(self, session: str | None = None, *, cassette: str | None = None,
                record: RecordMode | str | None = None, speed: float | None = None,
                replace: bool = False) -> ServerSession:
        """A session of its own (``session``, else a new id), starting afresh: positions, journal
        entries and fault rules of that id are reset. ``cassette`` scopes its URLs to one
        cassette; ``record`` (``off``, ``miss``, ``all``; the server must be started with
        ``record=``), ``speed`` and ``replace`` are its own options (see
        ``CassetteService.configure_session``). Close it (or leave its ``with`` block) to end it."""
        session = session if session is not None else f"session-{uuid.uuid4().hex[:12]}"
        if not SESSION_ID.fullmatch(session):
            raise ValueError(f"session id {session!r}: use 1 to 200 letters, digits, '.', '_', '~' or '-' (it is one "
                             "URL path segment)")
        mode = RecordMode(record) if isinstance(record, str) else record
        service = self.service

        def begin() -> SessionOptions:
            service.reset(session)
            return service.configure_session(session, record=mode, speed=speed, replace=replace)

        return ServerSession(self, session, cassette, self.call(begin))

    def __repr__(self) -> str:
        state = self._url if self._server is not None else "not running"
        return f"CassetteServer({', '.join(map(str, self.settings.paths))}; {state})"


class ServerSession:
    """One client's own session on a ``CassetteServer`` (see ``CassetteServer.session``)."""

    def __init__(self, server: CassetteServer, session: str, cassette: str | None, options: SessionOptions) -> None:
        self.server = server
        self.id = session
        self.cassette = cassette
        self.options = options
        self._faults: list[str] = []  # rule ids this session added
        self._left: list[Interaction] | None = None  # what it left unused when it closed (its positions go)

    @property
    def url(self) -> str:
        """The server's URL with this session (and cassette) in it: the base URL for clients that
        take one without ``/v1`` (Anthropic, Gemini)."""
        url = f"{self.server.url}{SESSION_PREFIX}{self.id}"
        if self.cassette is not None:
            url += f"{SCOPE_PREFIX}{quote(self.cassette, safe='/')}"
        return url

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    @property
    def gemini_base_url(self) -> str:
        return self.url

    @property
    def headers(self) -> dict[str, str]:
        """The same scoping as headers, for clients that send them against ``server.url``."""
        headers = {"X-Cassette-Session": self.id}
        if self.cassette is not None:
            headers["X-Cassette"] = self.cassette
        return headers

    def environ(self, current: Mapping[str, str] | None = None) -> dict[str, str]:
        """The variables that point the official SDKs at this session: ``OPENAI_BASE_URL``,
        ``ANTHROPIC_BASE_URL``, ``GOOGLE_GEMINI_BASE_URL``, and a placeholder API key for each
        SDK whose key is not set in ``current`` (default ``os.environ``), since the SDKs refuse
        to start without one. Apply them with ``unittest.mock.patch.dict(os.environ, …)``."""
        current = os.environ if current is None else current
        variables = {
            "OPENAI_BASE_URL": self.openai_base_url,
            "ANTHROPIC_BASE_URL": self.anthropic_base_url,
            "GOOGLE_GEMINI_BASE_URL": self.gemini_base_url,
        }
        for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
            if not current.get(key):
                variables[key] = PLACEHOLDER_KEY
        if not current.get("GOOGLE_API_KEY") and not current.get("GEMINI_API_KEY"):  # google-genai takes either
            variables["GEMINI_API_KEY"] = PLACEHOLDER_KEY
        return variables

    def fault(self, kind: str, **params: Any) -> dict[str, Any]:
        """Add a fault rule for this session's requests only (``kind`` and its parameters and
        filters, as ``POST /__admin/faults`` takes them); removed when the session closes.
        Returns the rule as the admin API lists it. Raises ValueError for a bad rule."""
        return self._add(parse_rule({"kind": kind, **params}))

    def fault_spec(self, spec: str) -> dict[str, Any]:
        """``fault`` from ``--fault`` text: ``'rate_limit; times=1'``."""
        return self._add(parse_spec(spec))

    def _add(self, spec: RuleSpec) -> dict[str, Any]:
        if spec.filters.session is not None and spec.filters.session != self.id:
            raise FaultRuleError("session", f"this rule is for session '{self.id}'; leave the session filter out")
        rule = self.server.service.faults.add(dataclasses.replace(  # the rules are locked: any thread may add
            spec, filters=dataclasses.replace(spec.filters, session=self.id)))
        self._faults.append(rule.id)
        return rule.to_json()

    def rules(self) -> list[dict[str, Any]]:
        """This session's fault rules as ``GET /__admin/faults`` lists them: how often each
        fired, and the seed of a rule with a probability (the server's choice when none was given)."""
        mine = set(self._faults)
        return [rule.to_json() for rule in self.server.service.faults.rules() if rule.id in mine]

    def misses(self) -> list[str]:
        """Each refused request of this session (a miss, an unknown cassette, …): the request
        and the server's message (for a miss: the closest recording and every difference). The
        first few are kept whole whatever the journal forgets; ``refused`` counts them all."""
        return [f"{refused.request} → {refused.status} {refused.code}\n"
                f"{refused.message.removesuffix(chr(10) + RECORD_ADVICE)}" for refused in self.options.refused]

    @property
    def refused(self) -> int:
        return self.options.refused_count

    def unused(self) -> list[dict[str, Any]]:
        """Interactions of the session's cassette that this session has not used (``[]`` when
        the session has no cassette, or it is not loaded)."""
        if self.cassette is None:
            return []
        if self._left is not None:
            return _details(self._left, self.server.service.index.usage())
        return self.server.unused(session=self.id, cassette=self.cassette)

    def failure(self, *, fail_unused: bool = False, since: int = 0) -> str | None:
        """What ``verify`` would fail with, or None: the refused requests (from the ``since``-th
        on), then, with ``fail_unused``, the cassette's interactions this session did not use."""
        parts = []
        count = self.options.refused_count - since
        if count > 0:
            parts.append(self._refusals(since, count))
        if fail_unused:
            left = self.unused()
            if left:
                parts.append(_unused_text(self.cassette or "", left))
        return "\n\n".join(parts) or None

    def verify(self, *, fail_unused: bool = False) -> None:
        """Raise CassetteFailure when a request of this session was refused (or, with
        ``fail_unused``, when its cassette was not all used), with the server's explanation."""
        message = self.failure(fail_unused=fail_unused)
        if message:
            raise CassetteFailure(message)

    def _refusals(self, since: int, count: int) -> str:
        scope = f" of cassette '{self.cassette}'" if self.cassette else ""
        noun = "request was" if count == 1 else "requests were"
        lines = [f"cassette-server: {count} {noun} not answered from a recording{scope} (session {self.id}):"]
        shown = self.misses()[since : since + SHOWN_REFUSALS]
        lines += [f"\n{text}" for text in shown]
        if count > len(shown):
            lines.append(f"\n… and {count - len(shown)} more (GET /__admin/requests/unmatched?session={self.id})")
        failed = self._load_errors()
        if failed:
            lines.append(f"\nCassette '{self.cassette}' did not load: " + "; ".join(failed))
        return "\n".join(lines)

    def _load_errors(self) -> list[str]:
        """Why the session's cassette did not load, when a file of that name failed to."""
        result = self.server.service.loaded.result
        return [str(error) for failure in result.failures if failure.name == self.cassette for error in failure.errors]

    def close(self) -> None:
        """End the session: its fault rules, options and positions go (a long run of tests would
        otherwise keep one session each); its journal entries stay. Its ``failure()`` and
        ``unused()`` can still be read (what it left unused is kept as it was when it closed)."""
        service = self.server.service
        for rule_id in self._faults:
            service.faults.remove(rule_id)
        self._faults.clear()

        def end() -> None:
            if service.session_options.get(self.id) is self.options:  # not a later session of the same id
                index = service.index
                if self.cassette in index.by_name:  # what it left unused, before its positions go
                    self._left = unused(index, index.usage(), session=self.id, cassette=self.cassette)
                service.remove_session_options(self.id)
                service.sessions.reset(self.id)

        self.server.call(end)

    def __enter__(self) -> ServerSession:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServerSession({self.id!r}, cassette={self.cassette!r})"


def _details(interactions: Iterable[Interaction], usage: Mapping[Interaction, Mapping[str, int]]) -> list[dict[str, Any]]:
    return [interaction_details(interaction, usage.get(interaction, {})) for interaction in interactions]


def _unused_text(cassette: str, left: list[dict[str, Any]]) -> str:
    noun = "interaction was" if len(left) == 1 else "interactions were"
    lines = [f"cassette-server: {len(left)} recorded {noun} not used from cassette '{cassette}':"]
    for item in left:
        request = item["request"]
        about = ", ".join(part for part in (request["model"], _quoted(request["last_user_message"])) if part)
        lines.append(f"  {item['interaction']}: {item['method']} {item['path']}" + (f" ({about})" if about else "")
                     + f" at {item['file']}:{item['line']}")
    return "\n".join(lines)


def _quoted(text: str | None) -> str | None:
    return None if text is None else f'"{text}"'


def build_settings(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None, options: Mapping[str, Any],
                   environ: Mapping[str, str]) -> Settings:
    """Settings from keyword arguments: each is checked as its flag is (text is parsed, numbers
    validated); what is not given comes from ``environ``, else the defaults. Raises TypeError for
    an unknown option, ValueError for a bad value."""
    known = {item.name: item.metadata["option"] for item in dataclasses.fields(Settings)}
    given: dict[str, Any] = {}
    if paths is not None:
        listed = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
        given["paths"] = tuple(Path(path) for path in listed)
    for name, value in options.items():
        if name not in known or name in (*_NOT_GIVEN, "paths"):
            choices = ", ".join(sorted(set(known) - {*_NOT_GIVEN, "paths"}))
            raise TypeError(f"CassetteServer() got an unexpected option {name!r}; it takes paths and {choices}")
        try:
            given[name] = _typed(known[name], value)
        except ValueError as error:
            raise ValueError(f"{name}={value!r}: {error}") from None
    return Settings.resolve(given, environ)


def _typed(option: Option, value: Any) -> Any:
    """A keyword argument as its flag would give it: text parsed, numbers checked."""
    if value is None or option.switch:
        return value
    if option.repeatable:
        values = [value] if isinstance(value, str) else list(value)
        return tuple(_typed(dataclasses.replace(option, repeatable=False), item) for item in values)
    if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return option.parse(str(value))
    return value


def _wait_until_started(server: uvicorn.Server, thread: threading.Thread, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"cassette-server did not start at {url}; uvicorn's log says why")
        if time.monotonic() > deadline:
            raise RuntimeError(f"cassette-server did not start at {url} within {START_TIMEOUT:g} s")
        time.sleep(0.005)
    connection = http.client.HTTPConnection(HOST, int(url.rsplit(":", 1)[1]), timeout=START_TIMEOUT)
    try:
        connection.request("GET", "/__admin/health")
        status = connection.getresponse().status
    finally:
        connection.close()
    if status != 200:
        raise RuntimeError(f"cassette-server at {url} answered its health check with {status}")


__all__ = ["CassetteFailure", "CassetteServer", "ServerSession", "build_settings"]
