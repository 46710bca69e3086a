"""The admin routes for session options (session_options.py): set (PUT), read (GET), remove
(DELETE). Thin over ``CassetteService.configure_session``; ``POST /__admin/reset`` removes them
with the rest. Being writes, PUT and DELETE get the guards' rules (token, read-only when exposed).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request

from ..errors import BadRequest, NotFound, TooLarge
from ..service import CassetteService
from ..session_options import SessionOptions, parse_options
from .guards import read_limited

SESSIONS_PATH = "/__admin/sessions"
MAX_OPTIONS_BODY = 4096  # bytes: three short fields

_OPTIONS_SCHEMA = {
    "type": "object",
    "properties": {
        "record": {"type": "string", "enum": ["off", "miss", "all"],
                   "description": "this session's record mode (the server must record: --record-on-miss)"},
        "speed": {"type": "number", "description": "this session's --speed (0: no waiting)"},
        "replace": {"type": "boolean", "description": "record 'all': the session's first recorded interaction of a "
                                                      "cassette replaces the cassette's old ones"},
    },
    "example": {"speed": 0},
}


def add_session_routes(admin: FastAPI, service: CassetteService) -> None:
    @admin.put(SESSIONS_PATH + "/{session}", openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _OPTIONS_SCHEMA}}}})
    async def configure(session: str, request: Request) -> dict[str, Any]:
        """Set this session's own options (its record mode, its speed), in place of any it had;
        from then on its refused requests are counted (``refused``)."""
        try:
            body = await read_limited(request, MAX_OPTIONS_BODY)
        except TooLarge:
            raise TooLarge(f"PUT {SESSIONS_PATH}/ID: session options are at most {MAX_OPTIONS_BODY} bytes") from None
        try:
            options = parse_options(json.loads(body or b"{}"))
        except (ValueError, RecursionError) as error:
            raise BadRequest(f"session options: {error}; send e.g. {{\"record\": \"miss\", \"speed\": 0}}") from None
        return service.configure_session(session, **options).to_json(session)

    @admin.get(SESSIONS_PATH)
    async def list_sessions() -> list[dict[str, Any]]:
        """Every session with options of its own."""
        return [options.to_json(session) for session, options in list(service.session_options.items())]

    @admin.get(SESSIONS_PATH + "/{session}")
    async def session_options(session: str) -> dict[str, Any]:
        """One session's options, and how many of its requests were refused since they were set."""
        return _found(session, service.session_options.get(session)).to_json(session)

    @admin.delete(SESSIONS_PATH + "/{session}")
    async def remove(session: str) -> dict[str, Any]:
        """Remove a session's options (it follows the server's again) → the options as they were."""
        return _found(session, service.remove_session_options(session)).to_json(session)


def _found(session: str, options: SessionOptions | None) -> SessionOptions:
    if options is None:
        raise NotFound(f"session '{session[:200]}' has no options of its own; PUT {SESSIONS_PATH}/ID sets them")
    return options
