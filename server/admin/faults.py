"""The admin routes for fault rules: add (POST), list (GET), remove one or all (DELETE). Thin over
``CassetteService.faults`` (replay/faults.py); ``POST /__admin/reset`` clears them with the rest.
Being writes, POST and DELETE get the guards' rules (token, read-only when exposed) for free.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..errors import BadRequest, Conflict, NotFound, TooLarge
from ..replay.faults import FILTERS, PARAMETERS, FaultRuleError, Kind, TooManyRules, parse_rule
from ..service import CassetteService
from .guards import read_limited

FAULTS_PATH = "/__admin/faults"
MAX_RULE_BODY = 64 * 1024  # bytes of one rule's JSON; a rule is a few short fields

_NUMBER = {"type": "number"}
_WHOLE = {"type": "integer"}
_TEXT = {"type": "string"}
# For the OpenAPI page (the route reads the body itself, to answer every problem in one error shape).
_RULE_SCHEMA = {
    "type": "object",
    "required": ["kind"],
    "properties": {
        "kind": {"type": "string", "enum": [kind.value for kind in Kind]},
        "status": {**_WHOLE, "description": "kind status: the status answered (400-599)"},
        "retry_after": {**_NUMBER, "description": "seconds, sent as Retry-After (rate_limit: 1 unless given)"},
        "after_events": {**_WHOLE, "description": "cut_stream: events sent before the cut; stall: before the stall"},
        "after_bytes": {**_WHOLE, "description": "truncate: bytes sent before the cut"},
        "seconds": {**_NUMBER, "description": "stall: the silence; delay: the extra wait before the headers"},
        "session": {**_TEXT, "description": "only requests of this X-Cassette-Session"},
        "cassette": {**_TEXT, "description": "only requests that matched this cassette"},
        "method": {**_TEXT, "description": "only this HTTP method"},
        "path": {**_TEXT, "description": "only paths matching this glob (* matches any characters, / too)"},
        "times": {**_WHOLE, "description": "fire at most this often"},
        "probability": {**_NUMBER, "description": "fire on this share of the requests that pass the filters"},
        "seed": {"description": "seeds the probability draws: the same requests fire on every run"},
    },
    "example": {"kind": "rate_limit", "times": 1, "path": "/v1/chat/*"},
}


def add_fault_routes(admin: FastAPI, service: CassetteService) -> None:
    faults = service.faults

    @admin.post(FAULTS_PATH, status_code=201, openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _RULE_SCHEMA}}}})
    async def add_fault(request: Request) -> JSONResponse:
        """Add a fault rule (JSON: ``kind``, its parameters, filters) → 201 and the rule with its id."""
        try:
            body = await read_limited(request, MAX_RULE_BODY)
        except TooLarge:
            raise TooLarge(f"POST {FAULTS_PATH}: a fault rule is at most {MAX_RULE_BODY // 1024} KiB of JSON") from None
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as error:  # RecursionError: nested too deeply to be a rule
            raise BadRequest(f"POST {FAULTS_PATH}: the body is not JSON ({error}); send a rule such as "
                             '{"kind": "rate_limit", "times": 1}') from None
        try:
            rule = faults.add(parse_rule(data))
        except FaultRuleError as error:
            raise BadRequest(f"fault rule: {error}; {_rule_fields()}") from None
        except TooManyRules as error:
            raise Conflict(str(error)) from None
        return JSONResponse(rule.to_json(), status_code=201)

    @admin.get(FAULTS_PATH)
    async def list_faults() -> list[dict[str, Any]]:
        """Every fault rule in the order they are checked, with how often each fired and how
        often it may still (``remaining``; null: no limit); spent rules stay listed."""
        return [rule.to_json() for rule in faults.rules()]

    @admin.delete(FAULTS_PATH + "/{rule_id}")
    async def remove_fault(rule_id: str) -> dict[str, Any]:
        """Remove one rule → the rule as it was (with its count)."""
        rule = faults.remove(rule_id)
        if rule is None:
            known = ", ".join(rule.id for rule in faults.rules()) or "none"
            raise NotFound(f"no fault rule '{rule_id[:100]}' (rules held: {known}); GET {FAULTS_PATH} lists them")
        return rule.to_json()

    @admin.delete(FAULTS_PATH)
    async def remove_faults() -> dict[str, Any]:
        """Remove every rule (startup ones too; POST /__admin/reset brings those back)."""
        return {"status": "ok", "removed": faults.clear()}


def _rule_fields() -> str:
    kinds = "; ".join(f"{kind.value}: {', '.join(names) or 'no parameter'}" for kind, names in PARAMETERS.items())
    return f"parameters by kind: {kinds}; filters: {', '.join(FILTERS)}"
