"""The ASGI application: ``/__admin/…`` goes to the FastAPI admin app, every other request is
replayed by a plain ASGI handler that sits below FastAPI's routing (one normalisation and one
dict lookup per request, then bytes prepared at load time). Explaining a miss, which compares
recordings, runs in a worker thread, so streams being replayed never wait for it.

Per-request controls (all optional):
    X-Cassette: NAME             only consider cassette NAME (or the URL prefix /__cassette/NAME/)
    X-Cassette-Session: ID       keep this client's own place in repeated-request sequences
    X-Replay-Speed: S            override --speed for this request
    X-Replay-Fault: KIND[; …]    alter this request's answer with a fault (replay/faults.py)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import orjson
from starlette.types import Receive, Scope, Send

from .admin.routes import create_admin
from .errors import BadRequest, HTTPError
from .journal import JournalEntry, Outcome
from .matching.index import Index
from .matching.keys import CONTENT_TYPE
from .matching.sessions import DEFAULT_SESSION
from .models import Interaction, ReceivedRequest
from .replay.faults import Fault, Fired, parse_header
from .replay.pacing import Pacing, parse_speed
from .replay.send import Delivery, send_faulted, send_recorded
from .service import CassetteService, Match, Unmatched
from .settings import Settings
from .watch import watch_lifespan

log = logging.getLogger("cassette_server")

ADMIN_PREFIX = "/__admin"
SCOPE_PREFIX = "/__cassette/"
CASSETTE_HEADER = "x-cassette"
SESSION_HEADER = "x-cassette-session"
SPEED_HEADER = "x-replay-speed"
FAULT_HEADER = "x-replay-fault"


class CassetteServerApp:
    """The whole server as one ASGI callable. ``service`` is the in-process API; ``admin`` is
    the FastAPI app (it also receives lifespan events)."""

    def __init__(self, service: CassetteService) -> None:
        self.service = service
        self.admin = create_admin(service, lifespan=watch_lifespan(service))
        control = (CASSETTE_HEADER, SESSION_HEADER, SPEED_HEADER, FAULT_HEADER, CONTENT_TYPE)  # content-type: form bodies
        self._wanted_headers = frozenset(name.encode("latin-1") for name in (*control, *service.rules.match_headers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _is_admin(scope["path"]):
            await self.replay(scope, receive, send)
        else:
            await self.admin(scope, receive, send)

    async def replay(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = asyncio.get_running_loop().time()
        index = self.service.index  # one index for the whole request, even across a reload
        try:
            body = await _read_body(receive)
        except _ClientGone:
            return
        headers = _headers(scope, self._wanted_headers)
        session = headers.get(SESSION_HEADER) or DEFAULT_SESSION
        try:
            path, cassette = resolve_scope(scope["path"], headers.get(CASSETTE_HEADER), index)
            request = ReceivedRequest(scope["method"], path, scope["query_string"].decode("latin-1"), headers, body)
            pacing = self._pacing(headers.get(SPEED_HEADER))
            header_fault = self._header_fault(headers.get(FAULT_HEADER))
            found = self.service.match(request, session=session, scope=cassette, index=index)
            if isinstance(found, Unmatched):
                # in a thread: explaining compares recordings, and streams in flight must not wait for it
                error = await asyncio.to_thread(self.service.explain, found)
                raise error
        except HTTPError as error:
            await send_error(error, send)
            self._record(scope, session, arrived, error=error)
            return
        except Exception as error:  # a bug of ours: still answer in the JSON error shape
            log.exception("internal error while matching %s %s", scope["method"], scope["path"])
            internal = HTTPError(f"cassette-server internal error: {error!r}; please report it")
            await send_error(internal, send)
            self._record(scope, session, arrived, error=internal)
            return
        delivery = fired = None
        faults = self.service.faults
        try:
            if header_fault is not None or faults.active:  # no rule, no header: one attribute check
                fired = faults.pick(session=session, method=request.method, path=request.path,
                                    interaction=found.interaction, header=header_fault)
            if fired is None:
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

    def _record(
        self, scope: Scope, session: str, arrived: float, *, match: Match | None = None,
        error: HTTPError | None = None, delivery: Delivery | None = None, fault: Fired | None = None,
    ) -> None:
        """Add the finished request to the journal (one small record; nothing is computed here)."""
        journal = self.service.journal
        if not journal.enabled:
            return
        if error is not None:
            error.__traceback__ = None  # its frames would keep the request's index alive after a reload
        took = asyncio.get_running_loop().time() - arrived
        interaction = match.interaction if match else None
        outcome = _outcome(delivery) if match else None
        journal.add(JournalEntry(
            time=time.time() - took,
            session=session,
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode("latin-1"),
            status=_journal_status(interaction, error, outcome, delivery),
            duration=took,
            interaction=interaction,
            repeated=match.repeated if match else False,
            relaxation=match.relaxation if match else None,
            error=error,
            outcome=outcome,
            pieces_sent=delivery.pieces if delivery else None,
            pieces_total=len(interaction.response.chunks) if interaction else None,
            fault=fault,
        ))

    def _pacing(self, speed_header: str | None) -> Pacing:
        if speed_header is None:
            return self.service.pacing
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
    """Load the cassettes named by ``settings`` and build the app that serves them."""
    return CassetteServerApp(CassetteService(settings))


def resolve_scope(path: str, header: str | None, index: Index) -> tuple[str, str | None]:
    """(path to match, cassette scope) from a ``/__cassette/NAME/…`` prefix or the X-Cassette
    header. Names may contain ``/``: the longest loaded name that prefixes the path wins. When
    no loaded name does, the first segment is taken as the name: the lookup then answers
    ``unknown_cassette``."""
    if not path.startswith(SCOPE_PREFIX):
        return path, header or None
    rest = path[len(SCOPE_PREFIX) :]
    name = _longest_loaded_prefix(rest, index)
    if name is None:
        name = rest.split("/", 1)[0]
    elif header and header != name:
        raise BadRequest(f"the URL prefix names cassette '{name}' but the X-Cassette header names '{header}'; use one")
    return rest[len(name) :] or "/", name


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


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _headers(scope: Scope, wanted: frozenset[bytes]) -> dict[str, str]:
    """The request headers the server looks at (ASGI names are lower case already); values as
    UTF-8 (what clients send and recorders store), latin-1 when they are not UTF-8."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        if raw_name not in wanted:
            continue
        name = raw_name.decode("latin-1")
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _is_admin(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")
