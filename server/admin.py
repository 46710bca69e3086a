"""The admin API under /__admin: thin FastAPI routes over CassetteService.

OpenAPI docs: /__admin/docs. Errors use the same JSON shape as replay errors (errors.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .errors import CassetteLoadError, HTTPError
from .loader import LoadFailure
from .models import Cassette
from .service import CassetteService


def create_admin(service: CassetteService) -> FastAPI:
    admin = FastAPI(
        title="cassette-server admin",
        docs_url="/__admin/docs",
        redoc_url=None,
        openapi_url="/__admin/openapi.json",
    )

    @admin.exception_handler(HTTPError)
    async def _http_error(_: Request, error: HTTPError) -> JSONResponse:
        return JSONResponse(error.to_json(), status_code=error.status_code)

    @admin.get("/__admin/health")
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
    def cassettes() -> list[dict[str, Any]]:
        """Every cassette loaded, then every file that failed to load with its errors."""
        result = service.loaded.result
        return [cassette_summary(c) for c in result.cassettes] + [failure_summary(f) for f in result.failures]

    return admin


def cassette_summary(cassette: Cassette) -> dict[str, Any]:
    return {
        "name": cassette.name,
        "file": cassette.file,
        "format": cassette.format,
        "interactions": len(cassette.interactions),
        "endpoints": cassette.endpoints,
        "load_errors": [],
    }


def failure_summary(failure: LoadFailure) -> dict[str, Any]:
    return {
        "name": failure.name,
        "file": failure.file,
        "format": None,
        "interactions": 0,
        "endpoints": [],
        "load_errors": [load_error_json(error) for error in failure.errors],
    }


def load_error_json(error: CassetteLoadError) -> dict[str, Any]:
    return {"file": error.file, "line": error.line, "reason": error.reason, "message": str(error)}
