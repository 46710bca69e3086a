"""What stands around every admin route: the bearer token (``--admin-token``), a JSON 500 for
anything unforeseen, and a request-body reader that refuses oversized bodies early."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import HTTPError, TooLarge, Unauthorized
from .views import json_error

log = logging.getLogger("cassette_server")

HEALTH_PATH = "/__admin/health"
DOCS_PATH = "/__admin/docs"
OPENAPI_PATH = "/__admin/openapi.json"


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
