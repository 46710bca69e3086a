"""``GET`` and ``HEAD /__admin/health``, answered without the FastAPI admin app.

Health is what a start waits for (``docker run`` health checks, CI service containers, the
library and the pytest plugin), and often the only admin call a process ever gets. The admin
app is built with the first other admin call: importing FastAPI takes about 0.5 s and 16 MiB,
which a server that only replays never pays. The answer is the one the admin app's route
declares (routes.py), behind the same Host check as every admin call (guards.HostAndOrigin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..version import VERSION
from .guards import HEALTH_PATH, HostAndOrigin, is_loopback

if TYPE_CHECKING:
    from ..service import CassetteService

HEALTH_METHODS = frozenset({"GET", "HEAD"})


def health_of(service: CassetteService) -> dict[str, Any]:
    """200 once cassettes are loaded (they load before the server accepts connections)."""
    result = service.loaded.result
    return {
        "status": "ok",
        "version": VERSION,
        "cassettes": len(result.cassettes),
        "interactions": result.interaction_count,
        "load_errors": len(result.errors),
    }


def is_health_call(scope: Scope) -> bool:
    return scope["path"] == HEALTH_PATH and scope["method"] in HEALTH_METHODS


def health_endpoint(service: CassetteService) -> ASGIApp:
    """The health check as an ASGI app: JSON for GET; for HEAD (``wget --spider``, ``curl -I``)
    200 without a body."""

    async def health(scope: Scope, receive: Receive, send: Send) -> None:
        answer = Response() if scope["method"] == "HEAD" else JSONResponse(health_of(service))
        await answer(scope, receive, send)

    return HostAndOrigin(health, loopback_hosts_only=is_loopback(service.settings.host))
