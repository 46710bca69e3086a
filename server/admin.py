"""The admin API under /__admin: thin FastAPI routes over CassetteService and its journal.

OpenAPI docs: /__admin/docs. Errors use the same JSON shape as replay errors (errors.py).
Routes that read live state (usage counts, the journal) are ``async`` so they run on the event
loop, where replay changes that state (journal replies are then encoded in a thread); routes that
read files (reload, PUT) run in a thread and only swap the finished index in.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from .catalog import providers_and_models, served_by_session, summarise, unused
from .errors import BadRequest, CassetteLoadError, HTTPError, NotFound, TooLarge, Unauthorized, UnknownCassette
from .index import Index
from .journal import JournalEntry
from .loader import LoadFailure, LoadResult
from .models import BodyKind, Cassette, Interaction
from .service import CassetteService

log = logging.getLogger("cassette_server")

HEALTH_PATH = "/__admin/health"
DOCS_PATH = "/__admin/docs"
OPENAPI_PATH = "/__admin/openapi.json"
_DOCS_HINT = f"the admin endpoints are listed at {DOCS_PATH}"
JOURNAL_PAGE = 100  # journal entries answered unless ?limit= asks for more


class _CassetteName(Convertor[str]):
    """A cassette name in a route: the rest of the URL path, whatever it holds. Starlette's
    ``path`` (``.*``) stops at a newline, and its ``$`` matches before a final one, so
    ``weather%0A`` was routed as ``weather`` and ``a%0Ab`` not at all; here the name is taken
    whole, and PUT refuses control characters (storage.name_problem)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("cassette_name", _CassetteName())  # Starlette's only way to add a convertor


def create_admin(service: CassetteService, *, lifespan: Lifespan[FastAPI] | None = None) -> FastAPI:
    """The admin app; ``lifespan`` runs what lives as long as the server (the file watcher)."""
    admin = FastAPI(
        title="cassette-server admin",
        docs_url=DOCS_PATH,
        redoc_url=None,
        openapi_url=OPENAPI_PATH,
        swagger_ui_oauth2_redirect_url=None,
        lifespan=lifespan,
    )
    token = service.settings.admin_token
    if token is not None:
        if not token.strip():  # "Bearer " would match an empty token: that is no protection
            raise ValueError("the admin token is empty; set a token, or run without one")
        admin.add_middleware(BearerToken, token=token.strip())
        declare_bearer_token(admin)
    admin.add_middleware(InternalErrors)

    @admin.exception_handler(HTTPError)
    async def _http_error(_: Request, error: HTTPError) -> JSONResponse:
        return json_error(error)

    @admin.exception_handler(RequestValidationError)
    async def _invalid_parameter(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(map(str, problem['loc'][1:])) or 'request'} ({problem['loc'][0]}): {problem['msg']}"
            for problem in error.errors()
        )
        return json_error(BadRequest(f"{request.method} {request.url.path}: {problems}; {_DOCS_HINT}"))

    @admin.exception_handler(StarletteHTTPException)
    async def _no_such_route(request: Request, error: StarletteHTTPException) -> JSONResponse:
        where = f"{request.method} {request.url.path}"
        if error.status_code == 404:
            return json_error(NotFound(f"no admin endpoint {where}; {_DOCS_HINT}"))
        return json_error(BadRequest(f"{where}: {error.detail}; {_DOCS_HINT}"), error.status_code, error.headers)

    @admin.get(HEALTH_PATH)
    def health() -> dict[str, Any]:
        """200 once cassettes are loaded (they load before the server accepts connections)."""
        result = service.loaded.result
        return {
            "status": "ok",
            "cassettes": len(result.cassettes),
            "interactions": result.interaction_count,
            "load_errors": len(result.errors),
        }

    @admin.get("/__admin/cassettes")
    async def cassettes() -> list[dict[str, Any]]:
        """Every cassette loaded (with providers, models and usage), then every file that failed
        to load with its errors."""
        loaded = service.loaded
        served = served_by_session(loaded.index)
        return [cassette_summary(c, served) for c in loaded.result.cassettes] + [
            failure_summary(f) for f in loaded.result.failures
        ]

    @admin.get("/__admin/cassettes/{name:cassette_name}")
    async def cassette(name: str) -> dict[str, Any]:
        """One cassette's interactions: request summary, response, recorded timing, times served."""
        loaded = service.loaded
        found = _loaded_cassette(name, loaded.index, loaded.result)
        served = served_by_session(loaded.index)
        summary = cassette_summary(found, served)
        del summary["interactions"], summary["served"]  # counts, given in full per interaction below
        summary["interactions"] = [interaction_details(i, served.get(i, {})) for i in found.interactions]
        return summary

    @admin.put("/__admin/cassettes/{name:cassette_name}")
    async def put_cassette(name: str, request: Request) -> JSONResponse:
        """Add or replace cassette NAME with the YAML in the body: validated first, written under
        the first cassette directory, then every cassette is reloaded. 201 when new, else 200."""
        text = await read_limited(request, service.settings.max_cassette_size)
        added, created, result = await run_in_threadpool(service.put_cassette, name, text)
        served = served_by_session(service.index)
        body = {"cassette": cassette_summary(added, served), "created": created, **_load_report(result)}
        return JSONResponse(body, status_code=201 if created else 200)

    @admin.get("/__admin/requests", response_model=list[dict[str, Any]])
    async def requests(
        session: str | None = Query(None, description="only this X-Cassette-Session"),
        matched: bool | None = Query(None, description="true: only served requests; false: only the others"),
        limit: int = Query(JOURNAL_PAGE, ge=1, description="at most this many, newest first (up to --journal-size)"),
    ) -> Response:
        """The request journal, newest first: what each request got and how long the reply took."""
        entries = service.journal.entries(session=session, matched=matched, limit=limit)
        return await journal_reply(entries, near_misses=False)

    @admin.get("/__admin/requests/unmatched", response_model=list[dict[str, Any]])
    async def unmatched(
        session: str | None = Query(None, description="only this X-Cassette-Session"),
        limit: int = Query(JOURNAL_PAGE, ge=1, description="at most this many, newest first (up to --journal-size)"),
    ) -> Response:
        """Requests that were not served, newest first; misses with the closest recordings, each
        with every difference in full."""
        entries = service.journal.entries(session=session, matched=False, limit=limit)
        return await journal_reply(entries, near_misses=True)

    @admin.get("/__admin/unused")
    async def unused_interactions(
        session: str | None = Query(None, description="not served in this session (default: in any session)"),
        cassette: str | None = Query(None, description="only this cassette's interactions"),
    ) -> list[dict[str, Any]]:
        """Interactions not served yet, in recorded order: a CI job can fail on a stale recording."""
        loaded = service.loaded
        if cassette is not None:
            _loaded_cassette(cassette, loaded.index, loaded.result)
        served = served_by_session(loaded.index)  # unused in one session may be used in others
        return [interaction_details(i, served.get(i, {})) for i in unused(loaded.index, session=session, cassette=cassette)]

    @admin.post("/__admin/reset")
    async def reset(session: str | None = Query(None, description="only this session (default: all)")) -> dict[str, Any]:
        """Rewind sequence positions and usage counts, and clear the journal (all, or one session)."""
        service.reset(session)
        return {"status": "ok", "session": session}

    @admin.post("/__admin/reload")
    def reload() -> dict[str, Any]:
        """Read the cassette paths again. The new index replaces the old one whole (requests in
        flight finish on the old one); files that fail to load are reported, the rest served."""
        return {"status": "ok", **_load_report(service.reload())}

    return admin


class BearerToken:
    """``--admin-token``: every admin call needs ``Authorization: Bearer TOKEN``, except health
    and the docs. The docs page and the OpenAPI document describe the API and hold no data; a
    browser cannot send the token to load them, and once loaded, Swagger UI's "Authorize"
    button sends it with every call tried (``declare_bearer_token``)."""

    OPEN_PATHS = frozenset({HEALTH_PATH, DOCS_PATH, OPENAPI_PATH})

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization")
        scheme, _, token = (given or b"").partition(b" ")
        if scheme.lower() == b"bearer" and secrets.compare_digest(token.strip(), self.token):
            await self.app(scope, receive, send)
            return
        problem = "has no 'Authorization: Bearer …' header" if given is None else "has a wrong token"
        error = Unauthorized(
            f"This admin call {problem}: the server was started with --admin-token "
            f"(CASSETTE_SERVER_ADMIN_TOKEN), so every /__admin endpoint except {HEALTH_PATH} and the docs "
            f"needs 'Authorization: Bearer <token>'."
        )
        await json_error(error, headers={"www-authenticate": "Bearer"})(scope, receive, send)


def declare_bearer_token(admin: FastAPI) -> None:
    """Say in the OpenAPI document that calls need the bearer token (health does not), so that
    Swagger UI at /__admin/docs offers to send it and generated clients know."""
    build = admin.openapi

    def openapi() -> dict[str, Any]:
        if admin.openapi_schema is None:
            schema = build()  # cached by FastAPI in admin.openapi_schema
            schema.setdefault("components", {})["securitySchemes"] = {
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "the --admin-token (CASSETTE_SERVER_ADMIN_TOKEN) the server was started with"},
            }
            schema["security"] = [{"adminToken": []}]
            schema["paths"][HEALTH_PATH]["get"]["security"] = []
        return admin.openapi_schema

    admin.openapi = openapi  # type: ignore[method-assign]


class InternalErrors:
    """Any other exception from an admin route (a bug of ours, a file system error nobody
    foresaw) is logged with its traceback and answered as a 500 in the JSON error shape, never
    as a plain-text page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except ClientDisconnect:
            return  # the client left before it sent its body: nobody to answer, nothing wrong here
        except Exception as error:
            where = f"{scope['method']} {scope['path']}"
            log.exception("internal error in the admin call %s", where)
            if started:  # too late for an error answer: let the server close the connection
                raise
            internal = HTTPError(f"cassette-server internal error in {where}: {error!r}; the server log has the "
                                 "traceback; please report it")
            await json_error(internal)(scope, receive, send)


async def read_limited(request: Request, limit: int) -> bytes:
    """The request body, refused (TooLarge) as soon as it is known to exceed ``limit`` bytes:
    from its Content-Length before anything is read, else while it arrives, so a huge body is
    never held whole."""
    def too_large(size: str) -> TooLarge:
        return TooLarge(f"{request.method} {request.url.path}: the body is {size} bytes, more than the {limit} this "
                        "server accepts (--max-cassette-size, CASSETTE_SERVER_MAX_CASSETTE_SIZE); nothing was written")

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(declared)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large("at least " + str(len(body)))
    return bytes(body)


async def journal_reply(entries: list[JournalEntry], *, near_misses: bool) -> Response:
    """Journal entries as a JSON array, made in a thread: with near misses of long prompts it
    can be tens of megabytes, which on the event loop would hold up the streams being replayed.
    ``entries`` is a list taken on the loop, where replay adds to the journal; an entry never
    changes once added. Each entry is encoded on its own, so the thread lets go of the GIL (and
    the loop runs) between them."""

    def encode() -> bytes:
        return b"[" + b",".join(json_bytes(entry.to_json(near_misses=near_misses)) for entry in entries) + b"]"

    return Response(await run_in_threadpool(encode), media_type="application/json")


def json_bytes(value: Any) -> bytes:
    """``value`` as strict JSON. A near miss shows values from request bodies as they came,
    which may hold what orjson refuses (integers beyond 64 bits, nesting beyond 254 levels, NaN
    and infinities as Python's json reads them): then Python's json writes it, nesting cut off
    with a note, NaN and infinities as text, anything else escaped to ASCII."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(_strict_json(value, _JSON_DEPTH), separators=(",", ":")).encode()


_JSON_DEPTH = 200
_TOO_DEEP = "(JSON nested too deeply to show)"


def _strict_json(value: Any, depth: int) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, (dict, list)) and depth <= 0:
        return _TOO_DEEP
    if isinstance(value, dict):
        return {key: _strict_json(item, depth - 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict_json(item, depth - 1) for item in value]
    return value


def json_error(error: HTTPError, status_code: int | None = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The project's JSON error shape (errors.py), with the error's status unless told otherwise."""
    return JSONResponse(error.to_json(), status_code=status_code or error.status_code, headers=headers)


def _loaded_cassette(name: str, index: Index, result: LoadResult) -> Cassette:
    found = index.by_name.get(name)
    if found is not None:
        return found
    failed = [str(error) for failure in result.failures if failure.name == name for error in failure.errors]
    if failed:
        raise UnknownCassette(f"Cassette '{name}' is not loaded: {'; '.join(failed)}. Fix the file, then POST /__admin/reload.")
    names = ", ".join(sorted(index.by_name)) or "none"
    raise UnknownCassette(f"No cassette named '{name}' is loaded (loaded: {names}); GET /__admin/cassettes lists them.")


def _load_report(result: LoadResult) -> dict[str, Any]:
    return {
        "cassettes": len(result.cassettes),
        "interactions": result.interaction_count,
        "load_errors": [load_error_json(error) for error in result.errors],
    }


def cassette_summary(cassette: Cassette, served: dict[Interaction, dict[str, int]]) -> dict[str, Any]:
    providers, models = providers_and_models(cassette)
    return {
        "name": cassette.name,
        "file": cassette.file,
        "format": cassette.format,
        "interactions": len(cassette.interactions),
        "endpoints": cassette.endpoints,
        "providers": providers,
        "models": models,
        "streaming": any(i.response.kind is not BodyKind.WHOLE for i in cassette.interactions),
        "served": [{"id": i.id, "times": sum(served.get(i, {}).values())} for i in cassette.interactions],
        "load_errors": [],
    }


def interaction_details(interaction: Interaction, served: dict[str, int]) -> dict[str, Any]:
    """An interaction for admin listings: where it is, what it asks and answers, its usage."""
    return {
        "interaction": interaction.label,
        "cassette": interaction.cassette,
        **summarise(interaction).to_json(),
        "file": interaction.file,
        "line": interaction.line,
        "served": dict(served),
        "times_served": sum(served.values()),
    }


def failure_summary(failure: LoadFailure) -> dict[str, Any]:
    return {
        "name": failure.name,
        "file": failure.file,
        "format": None,
        "interactions": 0,
        "endpoints": [],
        "providers": [],
        "models": [],
        "streaming": False,
        "served": [],
        "load_errors": [load_error_json(error) for error in failure.errors],
    }


def load_error_json(error: CassetteLoadError) -> dict[str, Any]:
    return {"file": error.file, "line": error.line, "reason": error.reason, "message": str(error)}
