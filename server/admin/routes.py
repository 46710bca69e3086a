"""The admin API under /__admin: thin FastAPI routes over CassetteService and its journal.

OpenAPI docs: /__admin/docs. Errors use the same JSON shape as replay errors (errors.py).
Nothing that grows with the number of cassettes, interactions or journal entries runs on the
event loop, where streams are being replayed: listings walk a snapshot of the loaded cassettes and
the usage counts (``Index.usage``) in a worker thread; the journal is read on the loop, where
replay adds to it, and its replies are encoded in a thread; routes that read files (reload, PUT)
run in a thread and only swap the finished index in.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..catalog import unused
from ..errors import BadRequest, HTTPError, MethodNotAllowed, NotFound, UnknownCassette
from ..loader import LoadResult
from ..matching.index import Index
from ..models import Cassette
from ..service import CassetteService, unknown_cassette_message
from ..version import VERSION
from .faults import add_fault_routes
from .guards import (
    DOCS_PATH,
    HEALTH_PATH,
    OPENAPI_PATH,
    AdminAccess,
    BearerToken,
    HostAndOrigin,
    InternalErrors,
    ReadOnly,
    declare_bearer_token,
    is_loopback,
    read_limited,
)
from .health import health_of
from .sessions import add_session_routes
from .views import (
    cassette_summary,
    failure_summary,
    interaction_details,
    journal_reply,
    json_error,
    load_report,
)

_DOCS_HINT = f"the admin endpoints are listed at {DOCS_PATH}"
JOURNAL_PAGE = 100  # journal entries answered unless ?limit= asks for more
# For the OpenAPI page, whose "Try it out" sends only a declared body (the route reads it itself).
_CASSETTE_TEXT = {"schema": {"type": "string", "description": "the cassette file's text, in any format the loader reads"}}
_CASSETTE_BODY = {"requestBody": {"required": True, "content": {"application/yaml": _CASSETTE_TEXT,
                                                                 "application/json": _CASSETTE_TEXT}}}


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


def create_admin(service: CassetteService) -> FastAPI:
    """The admin app, built on the first admin call (app.py): the settings were checked and the
    admin access logged at startup (guards.admin_access)."""
    admin = FastAPI(
        title="cassette-server admin",
        version=VERSION,
        docs_url=DOCS_PATH,
        redoc_url=None,
        openapi_url=OPENAPI_PATH,
        swagger_ui_oauth2_redirect_url=None,
    )
    settings = service.settings
    token = settings.admin_token
    if token is not None:
        admin.add_middleware(BearerToken, token=token.strip())
        declare_bearer_token(admin)
    _declare_bad_parameters(admin)
    if AdminAccess.of(settings) is AdminAccess.READ_ONLY:
        admin.add_middleware(ReadOnly, host=settings.host)
    admin.add_middleware(HostAndOrigin, loopback_hosts_only=is_loopback(settings.host))
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
        if error.status_code == 405:
            allowed = (error.headers or {}).get("Allow", "")
            message = f"{where}: this endpoint takes {allowed or 'other methods'}; {_DOCS_HINT}"
            return json_error(MethodNotAllowed(message), headers=error.headers)
        return json_error(BadRequest(f"{where}: {error.detail}; {_DOCS_HINT}"), error.status_code, error.headers)

    @admin.get(HEALTH_PATH)
    def health() -> dict[str, Any]:
        """200 once cassettes are loaded (they load before the server accepts connections).
        Answered by app.py without this app (health.py); declared here for the OpenAPI page."""
        return health_of(service)

    @admin.get("/__admin/cassettes")
    async def cassettes() -> list[dict[str, Any]]:
        """Every cassette loaded (with providers, models and usage), then every file that failed
        to load with its errors."""
        loaded = service.loaded

        def listing() -> list[dict[str, Any]]:
            usage = loaded.index.usage()
            return [cassette_summary(c, usage) for c in loaded.result.cassettes] + [
                failure_summary(f) for f in loaded.result.failures
            ]

        return await run_in_threadpool(listing)

    @admin.get("/__admin/cassettes/{name:cassette_name}")
    async def cassette(name: str) -> dict[str, Any]:
        """One cassette's interactions: request summary, response, recorded timing, times served."""
        loaded = service.loaded

        def details() -> dict[str, Any]:
            found = _loaded_cassette(name, loaded.index, loaded.result)
            usage = loaded.index.usage()
            summary = cassette_summary(found, usage)
            del summary["interactions"], summary["served"]  # counts, given in full per interaction below
            summary["interactions"] = [interaction_details(i, usage.get(i, {})) for i in found.interactions]
            return summary

        return await run_in_threadpool(details)

    @admin.put("/__admin/cassettes/{name:cassette_name}", openapi_extra=_CASSETTE_BODY)
    async def put_cassette(name: str, request: Request) -> JSONResponse:
        """Add or replace cassette NAME with the YAML in the body: validated first, written under
        the first cassette directory, then that file is reloaded. 201 when new, else 200."""
        text = await read_limited(request, service.settings.max_cassette_size)

        def put() -> tuple[dict[str, Any], bool]:
            added, created, result = service.put_cassette(name, text)
            summary = cassette_summary(added, service.index.usage())
            return {"cassette": summary, "created": created, **load_report(result)}, created

        body, created = await run_in_threadpool(put)
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

        def listing() -> list[dict[str, Any]]:
            if cassette is not None:
                _loaded_cassette(cassette, loaded.index, loaded.result)
            usage = loaded.index.usage()  # unused in one session may be used in others
            left = unused(loaded.index, usage, session=session, cassette=cassette)
            return [interaction_details(i, usage.get(i, {})) for i in left]

        return await run_in_threadpool(listing)

    @admin.post("/__admin/reset")
    async def reset(session: str | None = Query(None, description="only this session (default: all)")) -> dict[str, Any]:
        """Rewind sequence positions and usage counts, clear the journal, remove the fault rules
        added since startup and re-arm the startup ones (all, or one session's)."""
        service.reset(session)
        return {"status": "ok", "session": session}

    @admin.post("/__admin/reload")
    def reload() -> dict[str, Any]:
        """Read every cassette file again. The new index replaces the old one whole (requests in
        flight finish on the old one) and sessions keep their positions in every recording still
        there; files that fail to load are reported, the rest served."""
        return {"status": "ok", **load_report(service.reload())}

    add_fault_routes(admin, service)
    add_session_routes(admin, service)
    return admin


_BAD_PARAMETER = {"description": "a bad parameter, in the JSON error shape: "
                                  '{"type": "error", "error": {"type", "code": "bad_request", "status", "message"}}'}


def _declare_bad_parameters(admin: FastAPI) -> None:
    """Say in the OpenAPI document that a bad parameter is a 400 in the project's error shape
    (``_invalid_parameter``), not FastAPI's 422 ``HTTPValidationError``, which is never sent."""
    build = admin.openapi

    def openapi() -> dict[str, Any]:
        if admin.openapi_schema is None:
            schema = build()  # cached by FastAPI in admin.openapi_schema
            for operations in schema["paths"].values():
                for operation in operations.values():
                    if operation["responses"].pop("422", None) is not None:
                        operation["responses"]["400"] = _BAD_PARAMETER
            schemas = schema.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            if not schemas:
                schema.get("components", {}).pop("schemas", None)
        return admin.openapi_schema

    admin.openapi = openapi  # type: ignore[method-assign]


def _loaded_cassette(name: str, index: Index, result: LoadResult) -> Cassette:
    found = index.by_name.get(name)
    if found is not None:
        return found
    failed = [str(error) for failure in result.failures if failure.name == name for error in failure.errors]
    if failed:
        raise UnknownCassette(f"Cassette '{name}' is not loaded: {'; '.join(failed)}. Fix the file, then POST /__admin/reload.")
    raise UnknownCassette(unknown_cassette_message(name, index, "Check the name."))
