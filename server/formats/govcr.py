"""go-vcr cassettes (github.com/dnaeon/go-vcr), ``version: 1`` and ``version: 2``.

    version: 2
    interactions:
    - id: 0
      request:  {method: POST, url: https://…, headers: {Name: [value]}, body: '…'}
      response: {code: 200, status: 200 OK, headers: {…}, body: '…', duration: 1.5s}

Version 1 has the same shape without ``id`` (and without proto/content_length/… details, which
are not needed to replay). ``duration`` is the time to the response headers: go-vcr measures it
around the round trip, before the body is read. ``uncompressed: true`` means Go's transport
already decoded the body: any Content-Encoding left in the headers is dropped, whatever the
body's first bytes look like (without the flag, responses.build_response checks the bytes).
"""

from __future__ import annotations

from typing import Any

from ..errors import CassetteLoadError
from ..models import RecordedRequest, RecordedResponse
from ..responses import build_response
from .common import body_bytes, header_pairs, parse_event_offsets, parse_go_duration, recorded_request, require_mapping

NAME = "go-vcr"


def sniff(data: dict[str, Any]) -> bool:
    """go-vcr: version 2, or version 1 whose interactions use ``url`` (vcrpy uses ``uri``)."""
    version = data.get("version")
    if version == 2:
        return True
    if version != 1:
        return False
    interactions = data.get("interactions") or []
    first = interactions[0] if isinstance(interactions, list) and interactions else None
    request = first.get("request") if isinstance(first, dict) else None
    return not isinstance(request, dict) or "uri" not in request


def describe(data: dict[str, Any]) -> str:
    return f"go-vcr v{data.get('version')}"


def parse_interaction(raw: Any, position: int) -> tuple[int, RecordedRequest, RecordedResponse]:
    interaction = require_mapping(raw, "the interaction")
    interaction_id = interaction.get("id", position)
    if isinstance(interaction_id, bool) or not isinstance(interaction_id, int):
        raise CassetteLoadError(f"id must be an integer, not {interaction_id!r}")
    return (
        interaction_id,
        _request(require_mapping(interaction.get("request"), "request")),
        _response(require_mapping(interaction.get("response"), "response")),
    )


def _request(request: dict[str, Any]) -> RecordedRequest:
    return recorded_request(request, url_field="url", body=body_bytes(request.get("body"), "request.body"))


def _response(response: dict[str, Any]) -> RecordedResponse:
    status, reason = _status(response)
    headers = header_pairs(response.get("headers"), "response.headers")
    if response.get("uncompressed") is True:
        headers = [(name, value) for name, value in headers if name.strip().lower() != "content-encoding"]
    return build_response(
        status=status,
        reason=reason,
        headers=headers,
        body=body_bytes(response.get("body"), "response.body"),
        duration=parse_go_duration(response.get("duration"), "response.duration"),
        event_offsets=parse_event_offsets(response),
    )


def _status(response: dict[str, Any]) -> tuple[int, str | None]:
    """The code (``code``, else the number in ``status``) and the recorded reason phrase."""
    code = response.get("code")
    status_text = response.get("status")
    reason = None
    if isinstance(status_text, str):
        number, _, phrase = status_text.strip().partition(" ")
        reason = phrase or None
        if code is None and number.isdigit():
            code = int(number)
    elif isinstance(status_text, int) and code is None:
        code = status_text
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
        raise CassetteLoadError(f"response.code must be an HTTP status (100-599), not {code!r}")
    return code, reason
