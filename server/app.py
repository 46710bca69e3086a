"""The ASGI application: ``/__admin/…`` goes to the FastAPI admin app, every other request is
replayed by a plain ASGI handler that sits below FastAPI's routing (one normalisation and one
dict lookup per request, then bytes prepared at load time). Explaining a miss, which compares
recordings, runs in a worker thread, so streams being replayed never wait for it. In a record
mode, the handler hands a miss (``--record-on-miss``) or every request (``record``) to the
recorder instead.

Per-request controls (all optional):
    X-Cassette: NAME             only consider cassette NAME (or the URL prefix /__cassette/NAME/)
    X-Cassette-Session: ID       keep this client's own place in repeated-request sequences (or the
                                 URL prefix /__session/ID/, before any /__cassette/NAME/)
    X-Replay-Speed: S            override --speed for this request
    X-Replay-Fault: KIND[; …]    alter this request's answer with a fault (replay/faults.py)
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from .admin.guards import admin_access
from .admin.health import health_endpoint, is_health_call
from .errors import BadRequest, CassetteMiss, HTTPError, TooLarge
from .journal import JournalEntry, Outcome
from .matching.index import Index
from .matching.keys import CONTENT_TYPE
from .matching.sessions import DEFAULT_SESSION
from .models import Cassette, Interaction, ReceivedRequest, Recorded
from .record import RecordMode
from .record.scoping import new_cassette_name
from .replay.direct import write_whole
from .replay.faults import Fault, Fired, parse_header
from .replay.pacing import Pacing, parse_speed
from .replay.send import Delivery, send_faulted, send_in_two, send_recorded
from .service import CassetteService, Match, Unmatched
from .session_options import SessionOptions
from .settings import Settings
from .tally import Tally
from .watch import watch_lifespan

if TYPE_CHECKING:  # imported when recording only: it brings httpx (~0.1 s)
    from .record.recorder import Recorder

log = logging.getLogger("cassette_server")

ADMIN_PREFIX = "/__admin"
SCOPE_PREFIX = "/__cassette/"
SESSION_PREFIX = "/__session/"
CASSETTE_HEADER = "x-cassette"
SESSION_HEADER = "x-cassette-session"
SPEED_HEADER = "x-replay-speed"
FAULT_HEADER = "x-replay-fault"
CONTENT_LENGTH = "content-length"


class CassetteServerApp:
    """The whole server as one ASGI callable. ``service`` is the in-process API. The FastAPI
    admin app is built with the first admin call other than health (``admin_app``): importing
    FastAPI costs ~0.5 s of every start and ~16 MiB, which a server that only replays (and
    answers health checks, admin/health.py) never pays. Lifespan events are handled here."""

    def __init__(self, service: CassetteService) -> None:
        self.service = service
        admin_access(service.settings)  # checked (an empty token is refused) and logged at startup
        self.recorder = _recorder(service) if service.settings.recording else None
        self._record_mode = service.settings.record  # a session may choose its own (session_options.py)
        self.tally = Tally()  # the summary lines that stand in for an access log (tally.py)
        self._lifespan = _lifespan(service, self.recorder, self.tally)
        self._health = health_endpoint(service)
        self._admin: ASGIApp | None = None
        self._admin_lock = threading.Lock()  # first admin calls may come at once, each in a thread
        # content-type: form bodies; content-length: _read_body checks it against the limit
        control = (CASSETTE_HEADER, SESSION_HEADER, SPEED_HEADER, FAULT_HEADER, CONTENT_TYPE, CONTENT_LENGTH)
        # raw name -> name: the names are decoded once, here
        self._wanted_headers = {name.encode("latin-1"): name for name in (*control, *service.rules.match_headers)}
        # replay reads a body up to --max-body-size; recording forwards and writes it: --max-cassette-size too
        settings = service.settings
        self.body_limit = min(settings.max_body_size, settings.max_cassette_size) if self.recorder else settings.max_body_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http" and not _is_admin(scope["path"]):
            await self.replay(scope, receive, send)
        elif kind == "http" and is_health_call(scope):
            await self._health(scope, receive, send)
        elif kind == "lifespan":
            await serve_lifespan(self._lifespan, receive, send)
        else:  # the admin API (a websocket too: the admin app refuses it)
            await (await self.admin_app())(scope, receive, send)

    async def admin_app(self) -> ASGIApp:
        """The FastAPI admin app, built the first time it is needed, in a thread: replay goes on
        while FastAPI is imported."""
        if self._admin is None:
            await asyncio.to_thread(self._build_admin)
        assert self._admin is not None
        return self._admin

    def _build_admin(self) -> None:
        with self._admin_lock:
            if self._admin is None:
                from .admin.routes import create_admin  # noqa: PLC0415 - FastAPI, imported on first use

                self._admin = create_admin(self.service)

    async def replay(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Replay one request through ASGI: read its body, then ``answer``. What serve's protocol
        does not answer by itself (protocol.py) comes here too, as does every request under
        another server (h11, an in-process client)."""
        arrived = time.monotonic()  # the clock replay's deadlines are on (replay/send.py)
        headers = _headers(scope, self._wanted_headers)
        try:
            body = await _read_body(receive, self.body_limit, scope, headers.get(CONTENT_LENGTH))
        except _ClientGone:
            return
        except TooLarge as error:  # the server then reads and drops the rest, so the client sees the answer
            await self._refuse(error, scope, _session_of(scope, headers), arrived, send)
            return
        rest = self.answer(scope, headers, body, arrived, send)
        if rest is not None:
            await rest(scope, receive, send)

    def headers_for_whole_body(self, scope: Scope) -> dict[str, str] | None:
        """The protocol's first question, when a request's headers are in (protocol.py): the
        request headers replay looks at, when the request is to be answered once its whole body
        has arrived (``answer_whole_request``); None when it is to run as any ASGI request from
        the start: the admin API, and a body declared longer than the limit (refused before the
        client sends it)."""
        if _is_admin(scope["path"]):
            return None
        headers = _headers(scope, self._wanted_headers)
        declared = headers.get(CONTENT_LENGTH)
        if declared is not None and not (declared.isdigit() and int(declared) <= self.body_limit):
            return None
        return headers

    def answer_whole_request(self, scope: Scope, headers: dict[str, str], body: bytes, send: Send) -> ASGIApp | None:
        """The protocol's way in once the whole body is in, before any task is made for the
        request: answered here and now when nothing needs waiting for (a hit written whole: most
        of what a test suite asks for), and then None; else the ASGI app that finishes it, which
        uvicorn runs as it runs any request (the body has been received: ``receive`` has no more
        of it)."""
        arrived = time.monotonic()
        if len(body) > self.body_limit:  # sent without a length (chunked): known only now
            error = _too_large(scope, str(len(body)), self.body_limit)
            return partial(self._refuse_later, error, _session_of(scope, headers), arrived)
        return self.answer(scope, headers, body, arrived, send)

    def answer(self, scope: Scope, headers: dict[str, str], body: bytes, arrived: float, send: Send) -> ASGIApp | None:
        """Find what answers the request and, when it can be written at once (a hit, no fault,
        nothing to wait for, a connection uvicorn lets us write to: replay/direct.py), write it
        and journal it: None. Else what is left to do, as an ASGI app: refuse, explain a miss,
        record, or send with waits or a fault."""
        service = self.service
        index = service.loaded.index  # one index for the whole request, even across a reload
        session = headers.get(SESSION_HEADER) or DEFAULT_SESSION
        path = scope["path"]
        try:
            if path.startswith(SESSION_PREFIX):
                path, session = resolve_session(path, headers.get(SESSION_HEADER))
            options = service.session_options.get(session) if service.session_options else None
            mode = self._record_mode if options is None or options.record is None else options.record
            # None unless recording (the server's mode, or the session's own): all recording costs replay is this test
            recorder = self.recorder if mode is not RecordMode.OFF else None
            cassette = headers.get(CASSETTE_HEADER) or None
            if path.startswith(SCOPE_PREFIX):
                path, cassette = resolve_scope(path, cassette, index, new_names=recorder is not None)
            request = ReceivedRequest(scope["method"], path, scope["query_string"].decode("latin-1"), headers, body)
            if recorder is not None and mode is RecordMode.ALL:
                found = None
            else:
                speed = headers.get(SPEED_HEADER)
                pacing = service.pacing if speed is None and options is None else self._pacing(speed, options)
                fault_header = headers.get(FAULT_HEADER)
                header_fault = None if fault_header is None else self._header_fault(fault_header)
                found = service.match(request, session=session, scope=cassette, index=index)
        except HTTPError as error:
            return partial(self._refuse_later, error, session, arrived)
        except Exception as error:  # a bug of ours: still answer in the JSON error shape
            log.exception("internal error while matching %s %s", scope["method"], scope["path"])
            internal = HTTPError(f"cassette-server internal error: {error!r}; please report it")
            return partial(self._refuse_later, internal, session, arrived)
        if isinstance(found, Match):
            if header_fault is None and not service.faults.active:  # no rule, no header: one attribute check
                response = found.interaction.response
                if pacing.at_once(response, arrived):
                    if write_whole(response, scope, send):
                        self._record_written(scope, session, arrived, found, len(response.chunks))
                        return None
                    return partial(self._deliver, session, arrived, request, found, pacing, None, True)
            return partial(self._deliver, session, arrived, request, found, pacing, header_fault, False)
        if recorder is None:
            return partial(self._explain, found, session, arrived)
        replacing = options.replaced if options is not None and options.replace else None  # recording
        return partial(self._forward, request, cassette, session, arrived, replacing)

    async def _explain(self, unmatched: Unmatched, session: str, arrived: float, scope: Scope, receive: Receive,
                       send: Send) -> None:
        """Refuse a miss with why: in a thread, since explaining compares recordings, and streams in
        flight must not wait for it."""
        try:
            error = await asyncio.to_thread(self.service.explain, unmatched)
        except HTTPError as raised:
            error = raised
        except Exception as failure:  # a bug of ours: still answer in the JSON error shape
            log.exception("internal error while explaining a miss of %s %s", scope["method"], scope["path"])
            error = HTTPError(f"cassette-server internal error: {failure!r}; please report it")
        await self._refuse(error, scope, session, arrived, send)

    async def _deliver(self, session: str, arrived: float, request: ReceivedRequest, found: Match, pacing: Pacing,
                       header_fault: Fault | None, in_two: bool, scope: Scope, receive: Receive, send: Send) -> None:
        """Send a hit that waits (a recorded delay, paced events) or that a fault alters; or
        (``in_two``) one to go out whole now that could not be written at once: as two ASGI
        messages."""
        delivery = fired = None
        faults = self.service.faults
        try:
            if header_fault is not None or faults.active:
                fired = faults.pick(session=session, method=request.method, path=request.path,
                                    interaction=found.interaction, header=header_fault)
            if in_two:
                delivery = await send_in_two(found.interaction.response, scope, send)
            elif fired is None:
                delivery = await send_recorded(found.interaction.response, pacing, arrived, scope, receive, send)
            else:
                log.info("Fault %s (rule %s) on %s %s, which matched %s", fired.kind.value, fired.rule, request.method,
                         scope["path"], found.interaction.label)
                if fired.kind.cuts_short:  # given back now: a client may retry the moment its connection closes
                    self.service.give_back(found)
                delivery = await send_faulted(found.interaction, request.path, fired, pacing, arrived, scope, receive, send)
        finally:
            if _gives_back(delivery, fired):
                self.service.give_back(found)  # the next request gets this recording
            self._record(scope, session, arrived, match=found, delivery=delivery, fault=fired)

    async def _forward(self, request: ReceivedRequest, cassette: str | None, session: str, arrived: float,
                       replacing: set[Path] | None, scope: Scope, receive: Receive, send: Send) -> None:
        """Record: the recorder answers (or raises before answering: then the error is sent here).
        ``replacing``: the session starts each cassette afresh (the files it has started so far)."""
        assert self.recorder is not None
        try:
            recorded = await self.recorder.forward(scope, send, request=request, cassette=cassette, session=session,
                                                   replacing=replacing)
        except HTTPError as error:
            await self._refuse(error, scope, session, arrived, send)
            return
        except Exception as error:  # raised before the answer started (the recorder says so)
            log.exception("internal error while recording %s %s", scope["method"], scope["path"])
            internal = HTTPError(f"cassette-server internal error while recording: {error!r}; please report it")
            await self._refuse(internal, scope, session, arrived, send)
            return
        self._record(scope, session, arrived, recorded=recorded)

    async def _refuse_later(self, error: HTTPError, session: str, arrived: float, scope: Scope, receive: Receive,
                            send: Send) -> None:
        await self._refuse(error, scope, session, arrived, send)

    async def _refuse(self, error: HTTPError, scope: Scope, session: str, arrived: float, send: Send) -> None:
        """Answer with ``error``, journaled (and counted for its session) before the answer
        goes out: a test that looks right after its request finds it there."""
        self._record(scope, session, arrived, error=error)
        await send_error(error, send)

    def _record_written(self, scope: Scope, session: str, arrived: float, found: Match, pieces: int) -> None:
        """``_record`` for a hit written whole as it was found (``answer``), most of what a test
        suite asks for: counted, and journaled as the few fields that vary (Journal.add_hit)."""
        self.tally.served += 1
        self.tally.tick()
        self.service.journal.add_hit(arrived, time.monotonic() - arrived, session, scope["method"], scope["path"],
                                     scope["query_string"], found.interaction, found.repeated, found.relaxation,
                                     pieces)

    def _record(
        self, scope: Scope, session: str, arrived: float, *, match: Match | None = None,
        error: HTTPError | None = None, delivery: Delivery | None = None, recorded: Recorded | None = None,
        fault: Fired | None = None,
    ) -> None:
        """Add the finished request to the journal (one small record; nothing is computed here).
        A hit's ``delivery`` says how far it got (a hit written whole at once: ``_record_written``)."""
        tally = self.tally
        if match is not None:
            tally.served += 1
        elif recorded is not None:
            tally.recorded += 1
        elif isinstance(error, CassetteMiss):
            tally.missed += 1
        else:
            tally.refused += 1
        tally.tick()
        if error is not None and self.service.session_options:  # kept apart from the journal, which forgets
            self.service.note_refused(session, f"{scope['method']} {scope['path']}", error)
        journal = self.service.journal
        if not journal.size:  # the journal is off
            return
        if error is not None:
            error.__traceback__ = None  # its frames would keep the request's index alive after a reload
        took = time.monotonic() - arrived
        if match is not None:  # served with waits or a fault (a hit written whole: _record_written); its fields
            # go positionally, in JournalEntry's order (keyword arguments cost 1.3 µs more per request, measured)
            interaction = match.interaction
            if delivery is not None and delivery.complete:  # sent whole, no fault in its place
                outcome, status = Outcome.COMPLETE, interaction.response.status
            else:
                outcome = _outcome(delivery)
                status = _journal_status(interaction, None, outcome, delivery)
            journal.add(JournalEntry(
                time.time() - took, session, scope["method"], scope["path"], scope["query_string"].decode("latin-1"),
                status, took, interaction, match.repeated, match.relaxation, None, outcome,
                delivery.pieces if delivery else None, len(interaction.response.chunks), None, fault,
            ))
            return
        interaction = recorded.interaction if recorded else None
        journal.add(JournalEntry(
            time=time.time() - took,
            session=session,
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode("latin-1"),
            status=recorded.status if recorded else _journal_status(interaction, error, None, None),
            duration=took,
            interaction=interaction,
            error=error,
            pieces_total=len(interaction.response.chunks) if interaction else None,
            fault=fault,
            recorded=recorded,
        ))

    def _pacing(self, speed_header: str | None, options: SessionOptions | None) -> Pacing:
        if speed_header is None:
            return options.pacing if options is not None and options.pacing is not None else self.service.pacing
        try:
            speed = parse_speed(speed_header)
        except ValueError as error:
            raise BadRequest(f"{SPEED_HEADER}: {error}") from None
        return Pacing(speed, self.service.pacing.event_interval)

    @staticmethod
    def _header_fault(text: str | None) -> Fault | None:
        if text is None:
            return None
        try:
            return parse_header(text)
        except ValueError as error:
            raise BadRequest(f"{FAULT_HEADER}: {error}") from None


# nginx's "client closed request": the client left before the recorded headers were due.
CLIENT_CLOSED_REQUEST = 499


def _gives_back(delivery: Delivery | None, fired: Fired | None) -> bool:
    """Whether the taken recording goes back to its session, to be the next one served, once the
    answer is over: when nothing of it was sent (the client left during the header delay), and
    when a client gave up on a stall or a delay. A fault that cuts the answer short (an error
    instead, no answer, a cut) gave it back before sending."""
    if fired is not None:
        return not fired.kind.cuts_short and (delivery is None or not delivery.complete)
    return delivery is not None and not delivery.started


def _outcome(delivery: Delivery | None) -> Outcome:
    if delivery is None:
        return Outcome.INTERRUPTED
    if delivery.replaced_by is not None:
        return Outcome.REPLACED_BY_FAULT
    if delivery.cut:
        return Outcome.CUT_BY_FAULT
    if not delivery.started:
        return Outcome.CLIENT_LEFT_BEFORE_HEADERS
    return Outcome.COMPLETE if delivery.complete else Outcome.CLIENT_LEFT_MID_STREAM


def _journal_status(
    interaction: Interaction | None, error: HTTPError | None, outcome: Outcome | None, delivery: Delivery | None
) -> int:
    if delivery is not None and delivery.replaced_by is not None:
        return delivery.replaced_by  # what a fault answered instead (444: nothing)
    if outcome is Outcome.CLIENT_LEFT_BEFORE_HEADERS:
        return CLIENT_CLOSED_REQUEST
    if interaction is not None:
        return interaction.response.status  # also when the client left mid-stream: that is what it got
    return error.status_code if error else 500


def create_app(settings: Settings) -> CassetteServerApp:
    """Load the cassettes named by ``settings`` and build the app that serves them. In a record
    mode, the directory for new cassettes is created (ValueError when it cannot be written) and
    loaded too, so what is recorded there is served again after a reload."""
    if settings.recording:
        from .record.recorder import prepare_directory  # noqa: PLC0415 - httpx, imported when recording only

        directory = settings.recording_directory()
        prepare_directory(directory)
        if not any(_same_path(directory, path) for path in settings.paths):
            settings = dataclasses.replace(settings, paths=(*settings.paths, directory))
    return CassetteServerApp(CassetteService(settings))


def _same_path(one: Path, other: Path) -> bool:
    return one.resolve() == other.resolve()


def _recorder(service: CassetteService) -> Recorder:
    from .record.recorder import Recorder  # noqa: PLC0415 - httpx, imported when recording only

    def loaded_file(name: str) -> str | None:
        cassette = service.index.by_name.get(name)
        return cassette.file if cassette else None

    def publish(cassette: Cassette, session: str, scope: str | None) -> None:
        service.swap_in(cassette, served=(session, scope))

    return Recorder(service.settings, rules=service.rules, loaded_file=loaded_file, publish=publish,
                    control_headers=(CASSETTE_HEADER, SESSION_HEADER, SPEED_HEADER, FAULT_HEADER))


async def serve_lifespan(lifespan: Callable[[Any], AbstractAsyncContextManager[None]], receive: Receive,
                         send: Send) -> None:
    """The ASGI lifespan protocol around ``lifespan``, as Starlette runs it: a failure at
    startup or shutdown is reported to the server (which logs it and stops), then raised."""
    await receive()  # lifespan.startup
    running = lifespan(None)
    try:
        await running.__aenter__()
    except BaseException as error:
        await send({"type": "lifespan.startup.failed", "message": repr(error)})
        raise
    await send({"type": "lifespan.startup.complete"})
    await receive()  # lifespan.shutdown
    try:
        await running.__aexit__(None, None, None)
    except BaseException as error:
        await send({"type": "lifespan.shutdown.failed", "message": repr(error)})
        raise
    await send({"type": "lifespan.shutdown.complete"})


def _lifespan(service: CassetteService, recorder: Recorder | None,
              tally: Tally) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """What runs from startup to shutdown: the file watcher (--watch), the upstream client
    (recording); at shutdown, the last summary of the requests answered."""
    watching = watch_lifespan(service)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with watching(app), (recorder.running() if recorder is not None else nullcontext()):
            try:
                yield
            finally:
                tally.log()

    return lifespan


def resolve_session(path: str, header: str | None) -> tuple[str, str]:
    """(the rest of the path, session) from a ``/__session/ID/…`` prefix, the URL form of the
    X-Cassette-Session header for clients that only take a base URL. The ID is one path segment;
    a header naming another session is a BadRequest."""
    session, slash, rest = path[len(SESSION_PREFIX) :].partition("/")
    if not session:
        raise BadRequest(f"the URL prefix {SESSION_PREFIX}ID/ names no session; put a session id after it, like "
                         f"{SESSION_PREFIX}job-7/v1/chat/completions")
    if header and header != session:
        raise BadRequest(f"the URL prefix names session '{session}' but the X-Cassette-Session header names "
                         f"'{header}'; use one")
    return slash + rest or "/", session


def resolve_scope(path: str, header: str | None, index: Index, *, new_names: bool = False) -> tuple[str, str | None]:
    """(path to match, cassette scope) from a ``/__cassette/NAME/…`` prefix or the X-Cassette
    header. Names may contain ``/``: the longest loaded name that prefixes the path wins. When
    no loaded name does, the prefix names the cassette as a recording would (the segments before
    the first API version segment, ``record.scoping.new_cassette_name``): the lookup then answers
    ``unknown_cassette``, and while recording (``new_names``) that is the new cassette."""
    if not path.startswith(SCOPE_PREFIX):
        return path, header or None
    rest = path[len(SCOPE_PREFIX) :]
    name = _longest_loaded_prefix(rest, index)
    if name is None and not new_names:
        name = _unknown_name(rest)
    else:
        name = name or new_cassette_name(rest)
        if header and header != name:
            raise BadRequest(f"the URL prefix names cassette '{name}' but the X-Cassette header names '{header}'; use one")
    return rest[len(name) :] or "/", name


def _unknown_name(rest: str) -> str:
    """The name a prefix gives a cassette that is not loaded, for the unknown_cassette answer: as
    a recording would name it (``team/chat`` in ``team/chat/v1/messages``), else its first segment."""
    try:
        return new_cassette_name(rest)
    except BadRequest:  # no name a file could have: the answer names it as sent
        return rest.split("/", 1)[0]


def _longest_loaded_prefix(rest: str, index: Index) -> str | None:
    best = None
    for position, char in enumerate(rest):
        if char == "/" and rest[:position] in index.by_name:
            best = rest[:position]
    if rest in index.by_name:
        best = rest
    return best


async def send_error(error: HTTPError, send: Send) -> None:
    """Answer with the JSON error shape; ``x-should-retry: false`` stops SDK retries."""
    body = error_body(error)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-should-retry", b"false"),
    ]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_body(error: HTTPError) -> bytes:
    """The JSON error body; never raises (text orjson refuses is written with escapes)."""
    try:
        return orjson.dumps(error.to_json())
    except TypeError:
        return json.dumps(error.to_json(), default=str).encode()


class _ClientGone(Exception):
    pass


async def _read_body(receive: Receive, limit: int, scope: Scope, declared: str | None) -> bytes:
    """The whole request body; TooLarge as soon as it is known to exceed ``limit`` bytes: from
    its Content-Length (``declared``) before anything is read, else while it arrives (never held
    whole)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(scope, declared, limit)
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body"):  # the whole body at once: most requests
        body: bytes = message.get("body", b"")
        if len(body) > limit:
            raise _too_large(scope, str(len(body)), limit)
        return body
    chunks = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise _too_large(scope, f"at least {size}", limit)
        if not message.get("more_body"):
            return b"".join(chunks)
        message = await receive()


def _too_large(scope: Scope, size: str, limit: int) -> TooLarge:
    return TooLarge(f"{scope['method']} {scope['path']}: the request body is {size} bytes, more than the {limit} this "
                    "server reads (--max-body-size, CASSETTE_SERVER_MAX_BODY_SIZE; when recording, --max-cassette-size "
                    "too); send a smaller body, or start the server with a larger limit. Nothing was replayed, forwarded "
                    "or recorded.")


def _headers(scope: Scope, wanted: Mapping[bytes, str]) -> dict[str, str]:
    """The request headers the server looks at (``wanted``: their raw names and names; ASGI names
    are lower case already); values as UTF-8 (what clients send and recorders store), latin-1
    when they are not UTF-8."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = wanted.get(raw_name)
        if name is None:
            continue
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _session_of(scope: Scope, headers: dict[str, str]) -> str:
    """The session a request names (header, or a well-formed URL prefix), for journaling a refusal
    that comes before the request is looked at."""
    path = scope["path"]
    if path.startswith(SESSION_PREFIX):
        try:
            return resolve_session(path, headers.get(SESSION_HEADER))[1]
        except BadRequest:
            pass
    return headers.get(SESSION_HEADER) or DEFAULT_SESSION


def _is_admin(path: str) -> bool:
    return path.startswith(ADMIN_PREFIX) and (len(path) == len(ADMIN_PREFIX) or path[len(ADMIN_PREFIX)] == "/")
