"""vcrpy cassettes (github.com/kevin1024/vcrpy), ``version: 1``, in YAML or JSON.

    version: 1
    interactions:
    - request:  {method: POST, uri: https://…, headers: {Name: [value]}, body: '…'}
      response: {status: {code: 200, message: OK}, headers: {…}, body: {string: '…'}}

Bodies are text, ``null`` or ``!!binary``. Untidy variants that real suites carry, all read here:

- a compressed response stored as ``!!binary`` with ``content-encoding: gzip`` is replayed
  compressed, as recorded; a body decoded by ``decode_compressed_response`` (or by hand) whose
  header was left behind loses the header (responses.build_response checks the magic bytes);
- pydantic-ai's serializer stores a JSON body as a YAML mapping under ``parsed_body`` (on the
  request or the response, replacing ``body``); its deserializer turns it back with
  ``json.dumps(parsed_body)``, and so do we, so clients see the same bytes as under vcrpy;
- the newer typed body ``body: {type: json|text|binary|none, content: …}`` with
  ``status: 200`` (pydantic-ai's cassetter); JSON content is sent as compact JSON;
- vcrpy's old httpx layout (``status_code``, ``content``), requests without a body key,
  responses without headers, lower-case methods;
- a JSON body written as structured YAML (a mapping or list under ``body`` or ``body.string``,
  without ``parsed_body``): sent as compact JSON, and matched by value like any JSON body;
- no ``version`` key (vcrpy never reads it): told from the interactions (``looks_like``);
- vcrpy's in-memory cassette, ``{requests: [...], responses: [...]}``, which LangChain's
  persister writes (gzip-compressed, ``*.yaml.gz``): the lists are paired into interactions.

vcrpy records no timing: headers go out at once and streamed events follow the default
pacing, unless the response carries cassette-server's optional ``event_offsets``.

Written (``dump_interaction``) as vcrpy's YAML serializer saves a cassette, so vcrpy itself
loads and replays the file: keys in sorted order, header names as they came (lower case),
bodies as text, or ``!!binary`` when they are not UTF-8.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

from ..errors import CassetteLoadError
from ..models import Exchange, RecordedRequest, RecordedResponse
from ..responses import build_response
from .common import (
    EVENT_OFFSETS_FIELD,
    body_bytes,
    body_text,
    header_pairs,
    parse_event_offsets,
    recorded_request,
    require_mapping,
)

NAME = "vcrpy"
VERSION_WRITTEN = 1  # the `version` vcrpy writes
SHAPE = "request `uri`, response `status: {code, message}` and `body: {string}`"
PARSED_BODY_FIELD = "parsed_body"  # pydantic-ai's JSON-as-YAML body
_TYPED_BODY_KINDS = ("json", "text", "binary", "none")
_STRING_BODY_KEYS = frozenset({"string", "encoding"})  # vcrpy's `{string: …}`, with Ruby VCR's `encoding`


def sniff(data: dict[str, Any]) -> bool:
    """vcrpy: version 1 whose first interaction looks like vcrpy's (``looks_like``)."""
    if data.get("version") != 1:
        return False
    interactions = data.get("interactions")
    first = interactions[0] if isinstance(interactions, list) and interactions else None
    return isinstance(first, dict) and looks_like(first)


def looks_like(interaction: dict[str, Any]) -> bool:
    """Whether an interaction is written as vcrpy writes it: a request ``uri`` (go-vcr says
    ``url``), or, without either, a response ``status: {code}``, ``status_code``, ``body:
    {string}`` or a ``parsed_body``."""
    request, response = interaction.get("request"), interaction.get("response")
    if isinstance(request, dict) and ("uri" in request or "url" in request):
        return "uri" in request
    if not isinstance(response, dict):
        return isinstance(request, dict) and PARSED_BODY_FIELD in request
    status, body = response.get("status"), response.get("body")
    return (isinstance(status, dict) and "code" in status) or "status_code" in response or \
        (isinstance(body, dict) and "string" in body) or PARSED_BODY_FIELD in response


def is_request_response_lists(data: dict[str, Any]) -> bool:
    """vcrpy's in-memory cassette (``{requests: [...], responses: [...]}``), which persisters
    that bypass vcrpy's serializer (LangChain's) write as it is."""
    return isinstance(data.get("requests"), list) and isinstance(data.get("responses"), list)


def as_interactions(data: dict[str, Any]) -> dict[str, Any]:
    """The lists paired in order, as vcrpy pairs them when it loads such a cassette."""
    requests, responses = data["requests"], data["responses"]
    if len(requests) != len(responses):
        raise CassetteLoadError(f"{len(requests)} requests but {len(responses)} responses: vcrpy pairs them in "
                                "order, so there must be as many of each")
    return {**data, "interactions": [{"request": request, "response": response}
                                     for request, response in zip(requests, responses)]}


def describe(data: dict[str, Any]) -> str:
    return f"vcrpy v{data['version']}" if "version" in data else "vcrpy (no version)"


def parse_interaction(raw: Any, position: int) -> tuple[int, RecordedRequest, RecordedResponse]:
    """vcrpy interactions have no id: their position in the file is their id."""
    interaction = require_mapping(raw, "the interaction")
    request = _request(require_mapping(interaction.get("request"), "request"))
    return (position, request, _response(require_mapping(interaction.get("response"), "response"), head=request.method == "HEAD"))


def _request(request: dict[str, Any]) -> RecordedRequest:
    if PARSED_BODY_FIELD in request and request[PARSED_BODY_FIELD] is not None:
        body = _python_json(request[PARSED_BODY_FIELD])
    else:
        body = _body(request.get("body"), "request.body")
    return recorded_request(request, url_field="uri", body=body)


def _response(response: dict[str, Any], *, head: bool) -> RecordedResponse:
    status, reason = _status(response)
    if PARSED_BODY_FIELD in response and response[PARSED_BODY_FIELD] is not None:
        body = _python_json(response[PARSED_BODY_FIELD])
    elif "body" in response:
        body = _response_body(response["body"])
    else:  # vcrpy's old httpx layout kept the text under `content`
        body = body_bytes(response.get("content"), "response.content")
    return build_response(
        status=status,
        reason=reason,
        headers=header_pairs(response.get("headers"), "response.headers"),
        body=body,
        duration=0.0,
        event_offsets=parse_event_offsets(response),
        head=head,
    )


def _response_body(value: Any) -> bytes:
    """``{string: …}`` (vcrpy), a typed body (cassetter), structured JSON, or a bare string
    (hand-written)."""
    if isinstance(value, dict) and "string" in value:
        return _text_or_data(value["string"], "response.body.string")
    if isinstance(value, dict) and not value:
        return b""
    return _body(value, "response.body")


def _body(value: Any, what: str) -> bytes:
    """A request body, or a response body that is not under ``string``: text or ``!!binary``,
    ``{string: …}``, a typed body, or JSON written as a YAML mapping or list."""
    if isinstance(value, dict) and value.get("type") in _TYPED_BODY_KINDS and set(value) <= {"type", "content"}:
        return _typed_body(value, what)
    if isinstance(value, dict) and "string" in value and set(value) <= _STRING_BODY_KEYS:
        return _text_or_data(value["string"], f"{what}.string")
    return _text_or_data(value, what)


def _text_or_data(value: Any, what: str) -> bytes:
    """Text or bytes as they are; a mapping or list is JSON written as YAML: compact JSON, as
    typed JSON bodies are sent (matching compares JSON by value, so the spacing is free)."""
    if isinstance(value, (dict, list)):
        return _json_bytes(value, what, separators=(",", ":"), ensure_ascii=False)
    return body_bytes(value, what)


def _typed_body(body: dict[str, Any], what: str) -> bytes:
    """``{type: json|text|binary|none, content: …}`` (``type`` is one of those)."""
    kind, content = body.get("type"), body.get("content")
    if kind == "json":
        return _json_bytes(content, f"{what}.content", separators=(",", ":"), ensure_ascii=False)
    if kind == "text":
        return body_bytes(content, f"{what}.content")
    if kind == "none":
        return b""
    if isinstance(content, str):  # binary
        try:
            return base64.b64decode(content, validate=True)
        except binascii.Error:
            raise CassetteLoadError(f"{what}.content of a binary body must be base64 or !!binary") from None
    return body_bytes(content, f"{what}.content")


def _python_json(value: Any) -> bytes:
    """What pydantic-ai's deserializer makes of a ``parsed_body``: ``json.dumps`` with its
    default spacing and ASCII escapes."""
    return _json_bytes(value, PARSED_BODY_FIELD)


def _json_bytes(value: Any, what: str, **options: Any) -> bytes:
    try:
        return json.dumps(value, **options).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as error:  # !!binary inside, an anchor cycle
        raise CassetteLoadError(f"{what} is not JSON data: {error}") from None


def _status(response: dict[str, Any]) -> tuple[int, str | None]:
    """``status: {code, message}`` (vcrpy), ``status: 200`` (cassetter) or ``status_code``."""
    status = response.get("status", response.get("status_code"))
    reason = None
    code: Any = status
    if isinstance(status, dict):
        code = status.get("code")
        message = status.get("message")
        reason = message if isinstance(message, str) and message else None
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
        raise CassetteLoadError(f"response.status.code must be an HTTP status (100-599), not {code!r}")
    return code, reason


def new_document() -> dict[str, Any]:
    return {"interactions": [], "version": 1}  # vcrpy's serializer sorts keys


def next_id(interactions: Iterable[Any]) -> int:
    """vcrpy interactions are numbered by position."""
    return len(list(interactions))


def dump_interaction(exchange: Exchange, interaction_id: int) -> dict[str, Any]:
    """One interaction as vcrpy saves it (``interaction_id`` is its position: vcrpy keeps none)."""
    request_headers: dict[str, list[str]] = {}
    for name, value in exchange.request_headers:  # vcrpy keeps one value per request header
        values = request_headers.setdefault(name, [])
        values[:] = [f"{values[0]}, {value}"] if values else [value]
    response_headers: dict[str, list[str]] = {}
    for name, value in exchange.response_headers:
        response_headers.setdefault(name, []).append(value)
    response: dict[str, Any] = {"body": {"string": body_text(exchange.response_body)}}
    if exchange.event_offsets is not None:
        response[EVENT_OFFSETS_FIELD] = list(exchange.event_offsets)
    response["headers"] = dict(sorted(response_headers.items()))
    response["status"] = {"code": exchange.status, "message": exchange.reason}
    return {
        "request": {
            "body": body_text(exchange.request_body),
            "headers": dict(sorted(request_headers.items())),
            "method": exchange.method,
            "uri": exchange.url,
        },
        "response": response,
    }
