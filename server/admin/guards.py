"""What stands around every admin route: who may call it (the bearer token ``--admin-token``;
read-only when exposed beyond loopback without one; no calls made by web pages of other sites),
a JSON 500 for anything unforeseen, and a request-body reader that refuses oversized bodies early."""

from __future__ import annotations

import enum
import ipaddress
import logging
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import Forbidden, HTTPError, TooLarge, Unauthorized
from ..settings import Settings
from .views import json_error

if TYPE_CHECKING:  # the app imports this module at startup, and FastAPI only with the first admin call
    from fastapi import FastAPI, Request

log = logging.getLogger("cassette_server")

HEALTH_PATH = "/__admin/health"
DOCS_PATH = "/__admin/docs"
OPENAPI_PATH = "/__admin/openapi.json"
# Reads; every other method under /__admin changes the server (PUT, reload, reset, and what comes).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_ADVICE = ("start the server with --admin-token TOKEN (better: CASSETTE_SERVER_ADMIN_TOKEN=TOKEN) and send "
                "'Authorization: Bearer TOKEN', or, on a trusted network only, with --admin-open "
                "(CASSETTE_SERVER_ADMIN_OPEN=1)")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a --host value, or a host name from a Host or Origin header) names this
    machine only: localhost and ``*.localhost`` (kept on loopback by browsers and resolvers),
    127.0.0.0/8, ::1."""
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class AdminAccess(enum.Enum):
    """Who may change the server through the admin API, from the settings."""

    TOKEN = "token"  # --admin-token: every call but health and the docs needs it
    LOCAL = "local"  # bound to loopback: open to this machine (web pages of other sites refused)
    OPEN = "open"  # --admin-open: open to whoever reaches the server
    READ_ONLY = "read-only"  # exposed beyond loopback without a token: writes refused

    @classmethod
    def of(cls, settings: Settings) -> AdminAccess:
        if settings.admin_token is not None:
            return cls.TOKEN
        if is_loopback(settings.host):
            return cls.LOCAL
        return cls.OPEN if settings.admin_open else cls.READ_ONLY


def admin_access(settings: Settings) -> AdminAccess:
    """Who may change the server through the admin API, checked and logged once, at startup (the
    admin app itself is built with the first admin call). ValueError for an empty --admin-token."""
    token = settings.admin_token
    if token is not None and not token.strip():  # "Bearer " would match an empty token: that is no protection
        raise ValueError("the admin token is empty; set a token, or run without one")
    access = AdminAccess.of(settings)
    log_admin_access(access, settings)
    return access


def log_admin_access(access: AdminAccess, settings: Settings) -> None:
    """Say at startup what the admin API lets callers do: a warning when it is exposed."""
    where = f"{settings.host}:{settings.port}"
    if access is AdminAccess.TOKEN:
        log.info("Admin API: every call except %s and the docs needs the --admin-token", HEALTH_PATH)
    elif access is AdminAccess.LOCAL:
        log.info("Admin API: open without a token to this machine only (listening on %s); web pages of "
                 "other sites cannot use it", where)
    elif access is AdminAccess.OPEN:
        log.warning("Admin API: open to anyone who can reach %s, writes included (--admin-open): anyone there "
                    "can replace cassettes, reload and reset; set --admin-token unless the network is trusted",
                    where)
    else:
        log.warning("Admin API: read-only. The server listens on %s, beyond this machine, without --admin-token, "
                    "so PUT, reload and reset are refused (403); to allow them, %s", where, TOKEN_ADVICE)


class ReadOnly:
    """Refuses every admin write (any method but GET, HEAD and OPTIONS): the server is exposed
    beyond loopback without a token, and anyone on the network could otherwise replace the
    cassettes or reset a CI job's journal."""

    def __init__(self, app: ASGIApp, host: str) -> None:
        self.app = app
        self.host = host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READ_METHODS:
            await self.app(scope, receive, send)
            return
        error = Forbidden(
            f"{scope['method']} {scope['path']} is refused: this server listens on {self.host}, beyond this "
            f"machine, without an admin token, so its admin API is read-only. To change it through the API, "
            f"{TOKEN_ADVICE}."
        )
        await json_error(error)(scope, receive, send)


class HostAndOrigin:
    """Refuses admin calls that a web page made a browser send. Programs (SDKs, curl) pointed at
    127.0.0.1 or localhost send that as their Host and no Origin, so they pass.

    - DNS rebinding: a page at evil.example re-resolves its name to 127.0.0.1 and calls the
      server as its own origin, so it can read the answers; its requests still say
      ``Host: evil.example``. A server bound to loopback answers loopback Host names only.
    - Cross-site requests (CSRF): any page can POST to ``http://127.0.0.1:8080/__admin/reset``
      without reading the answer; the browser says where the request came from. A write whose
      ``Origin`` is neither the server's own Host nor a loopback origin, or marked
      ``Sec-Fetch-Site: cross-site``, is refused.
    """

    def __init__(self, app: ASGIApp, *, loopback_hosts_only: bool) -> None:
        self.app = app
        self.loopback_hosts_only = loopback_hosts_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = self.problem(scope) if scope["type"] == "http" else None
        if problem is None:
            await self.app(scope, receive, send)
            return
        await json_error(Forbidden(f"{scope['method']} {scope['path']} is refused: {problem}"))(scope, receive, send)

    def problem(self, scope: Scope) -> str | None:
        headers = {name: value.decode("latin-1") for name, value in reversed(scope["headers"])}  # first one wins
        host = headers.get(b"host")
        if self.loopback_hosts_only and host is not None and not is_loopback(_host_name(host)):
            return (f"it names the host {host!r}, and this server listens on loopback only, where another name "
                    "is what a web page uses after DNS rebinding; call it as 127.0.0.1 or localhost")
        if scope["method"] in READ_METHODS:
            return None
        origin = headers.get(b"origin")
        if origin is not None and not _trusted_origin(origin, host):
            return (f"it comes from a web page at {origin!r}, not from this server's own pages or this machine "
                    "(cross-site request); call the admin API from a program, curl or /__admin/docs")
        if headers.get(b"sec-fetch-site", "").lower() == "cross-site":
            return ("the browser marks it as made by a web page of another site (Sec-Fetch-Site: cross-site); "
                    "call the admin API from a program, curl or /__admin/docs")
        return None


def _host_name(authority: str) -> str:
    """The host name of ``name[:port]`` or ``[v6]:port``; empty when it is not one."""
    try:
        return urlsplit("//" + authority).hostname or ""
    except ValueError:
        return ""


def _trusted_origin(origin: str, host: str | None) -> bool:
    """An Origin of the server's own pages (the same authority as the request's Host) or of this
    machine. ``null`` (sandboxed frames, files) is neither."""
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    return is_loopback(parts.hostname) or (host is not None and parts.netloc.lower() == host.strip().lower())


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
