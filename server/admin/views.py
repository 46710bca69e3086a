"""The JSON the admin API answers: cassettes, interactions, load errors, journal entries, and
the project's error shape; strict JSON whatever a request body held."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response  # FastAPI's are these: importing FastAPI costs 0.5 s

from ..catalog import providers_and_models, summarise
from ..errors import CassetteLoadError, HTTPError
from ..journal import JournalEntry
from ..loader import LoadFailure, LoadResult
from ..models import BodyKind, Cassette, Interaction
from ..strict_json import json_bytes


async def journal_reply(entries: list[JournalEntry], *, near_misses: bool) -> Response:
    """Journal entries as a JSON array, made in a thread: with near misses of long prompts it
    can be tens of megabytes, which on the event loop would hold up the streams being replayed.
    ``entries`` is a list taken on the loop, where replay adds to the journal; an entry never
    changes once added. Each entry is encoded on its own, so the thread lets go of the GIL (and
    the loop runs) between them."""

    def encode() -> bytes:
        return b"[" + b",".join(json_bytes(entry.to_json(near_misses=near_misses)) for entry in entries) + b"]"

    return Response(await run_in_threadpool(encode), media_type="application/json")


def json_error(error: HTTPError, status_code: int | None = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The project's JSON error shape (errors.py), with the error's status unless told otherwise."""
    return JSONResponse(error.to_json(), status_code=status_code or error.status_code, headers=headers)


def load_report(result: LoadResult) -> dict[str, Any]:
    return {
        "cassettes": len(result.cassettes),
        "interactions": result.interaction_count,
        "load_errors": [load_error_json(error) for error in result.errors],
    }


def cassette_summary(cassette: Cassette, served: Mapping[Interaction, Mapping[str, int]]) -> dict[str, Any]:
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


def interaction_details(interaction: Interaction, served: Mapping[str, int]) -> dict[str, Any]:
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
