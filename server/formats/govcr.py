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

import re
from collections.abc import Iterable
from functools import cmp_to_key
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..errors import CassetteLoadError
from ..models import Exchange, RecordedRequest, RecordedResponse
from ..responses import build_response
from .common import (
    EVENT_OFFSETS_FIELD,
    body_bytes,
    body_text,
    header_pairs,
    parse_event_offsets,
    parse_go_duration,
    recorded_request,
    require_mapping,
)

NAME = "go-vcr"
VERSION_WRITTEN = 2  # the `version` go-vcr v2-v4 write
SHAPE = "request `url`, response `code` and `duration`"


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


def looks_like(interaction: dict[str, Any]) -> bool:
    """Whether an interaction is written as go-vcr writes it: a request ``url`` (vcrpy says
    ``uri``), or, without either, a response ``code`` or ``duration``."""
    request, response = interaction.get("request"), interaction.get("response")
    if isinstance(request, dict) and ("uri" in request or "url" in request):
        return "url" in request
    return isinstance(response, dict) and ("code" in response or "duration" in response)


def describe(data: dict[str, Any]) -> str:
    return f"go-vcr v{data['version']}" if "version" in data else "go-vcr (no version)"


def parse_interaction(raw: Any, position: int) -> tuple[int, RecordedRequest, RecordedResponse]:
    interaction = require_mapping(raw, "the interaction")
    interaction_id = interaction.get("id", position)
    if isinstance(interaction_id, bool) or not isinstance(interaction_id, int):
        raise CassetteLoadError(f"id must be an integer, not {interaction_id!r}")
    request = _request(require_mapping(interaction.get("request"), "request"))
    return (interaction_id, request, _response(require_mapping(interaction.get("response"), "response"), head=request.method == "HEAD"))


def _request(request: dict[str, Any]) -> RecordedRequest:
    return recorded_request(request, url_field="url", body=body_bytes(request.get("body"), "request.body"))


def _response(response: dict[str, Any], *, head: bool) -> RecordedResponse:
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
        head=head,
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


def new_document() -> dict[str, Any]:
    return {"version": 2, "interactions": []}


def next_id(interactions: Iterable[Any]) -> int:
    """One more than the largest id (go-vcr numbers interactions from 0)."""
    ids = [item.get("id") for item in interactions if isinstance(item, dict)]
    return max((i for i in ids if isinstance(i, int) and not isinstance(i, bool)), default=-1) + 1


def _content_length(exchange: Exchange) -> int:
    """``Response.ContentLength`` as Go's transport sets it: the Content-Length sent (for HEAD
    too), 0 for answers that have no body (1xx, 204, 304), -1 when unknown or decoded."""
    if exchange.method != "HEAD" and (exchange.status // 100 == 1 or exchange.status in (204, 304)):
        return 0
    return -1 if exchange.content_length is None else exchange.content_length


def dump_interaction(exchange: Exchange, interaction_id: int) -> dict[str, Any]:
    """One interaction as go-vcr's ``cassette.Interaction`` marshals it (fields in struct order)."""
    request: dict[str, Any] = {**_proto(exchange.request_proto), "content_length": len(exchange.request_body),
                               "host": ""}  # Go clients leave Request.Host empty: the URL's host is used
    if exchange.request_body:
        request["body"] = body_text(exchange.request_body)
    form = _form(exchange)
    if form:
        request["form"] = form
    if exchange.request_headers:
        request["headers"] = header_map(exchange.request_headers)
    request["url"] = exchange.url
    request["method"] = exchange.method

    response: dict[str, Any] = _proto(exchange.response_proto)
    if exchange.chunked:
        response["transfer_encoding"] = ["chunked"]
    response["content_length"] = _content_length(exchange)
    if exchange.decoded:
        response["uncompressed"] = True  # Go's transport sets it when it decoded the body
    response["body"] = body_text(exchange.response_body)
    response["headers"] = header_map(exchange.response_headers)
    response["status"] = f"{exchange.status} {exchange.reason}".strip()
    response["code"] = exchange.status
    response["duration"] = go_duration(exchange.duration_ns)
    if exchange.event_offsets is not None:
        response[EVENT_OFFSETS_FIELD] = list(exchange.event_offsets)
    return {"id": interaction_id, "request": request, "response": response}


def _proto(proto: str) -> dict[str, Any]:
    match = re.fullmatch(r"HTTP/(\d+)(?:\.(\d+))?", proto)
    major, minor = (int(match[1]), int(match[2] or 0)) if match else (1, 1)
    return {"proto": f"HTTP/{major}.{minor}", "proto_major": major, "proto_minor": minor}


def _form(exchange: Exchange) -> dict[str, list[str]]:
    """What Go's ``Request.ParseForm`` gives, which go-vcr records: a urlencoded body's fields,
    then the URL's query parameters."""
    pairs: list[tuple[str, str]] = []
    content_type = next((value for name, value in exchange.request_headers if name.lower() == "content-type"), "")
    if exchange.method in ("POST", "PUT", "PATCH") and content_type.split(";")[0].strip() == "application/x-www-form-urlencoded":
        pairs += parse_qsl(exchange.request_body.decode("utf-8", "replace"), keep_blank_values=True)
    pairs += parse_qsl(urlsplit(exchange.url).query, keep_blank_values=True)
    form: dict[str, list[str]] = {}
    for name, value in pairs:
        form.setdefault(name, []).append(value)
    return {name: form[name] for name in go_yaml_order(form)}


def header_map(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Headers as a Go ``http.Header``: canonical names, repeated ones gathered in order, the
    names in the order Go's yaml writes map keys."""
    headers: dict[str, list[str]] = {}
    for name, value in pairs:
        headers.setdefault(canonical_header_name(name), []).append(value)
    return {name: headers[name] for name in go_yaml_order(headers)}


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def canonical_header_name(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: ``content-type`` → ``Content-Type``; a name
    with a character that is not a token character is left as it is."""
    if not _TOKEN.fullmatch(name):
        return name
    out = []
    upper = True
    for char in name:
        out.append(char.upper() if upper else char.lower())
        upper = char == "-"
    return "".join(out)


def go_duration(nanoseconds: int) -> str:
    """A duration as Go's ``time.Duration.String`` prints it: ``2.459145959s``, ``488.971083ms``,
    ``1m2.5s``, ``1h0m0s``, ``850µs``, ``0s``."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    value = abs(nanoseconds)
    if value < 1_000_000_000:
        unit, digits = ("ns", 0) if value < 1_000 else ("µs", 3) if value < 1_000_000 else ("ms", 6)
        return sign + _decimal(value, digits) + unit
    seconds, fraction = divmod(value, 1_000_000_000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = _decimal(seconds * 1_000_000_000 + fraction, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _decimal(value: int, digits: int) -> str:
    """``value / 10**digits`` without trailing zeros (nor a point when nothing follows it)."""
    whole, fraction = divmod(value, 10**digits)
    decimals = str(fraction).rjust(digits, "0").rstrip("0") if digits else ""
    return f"{whole}.{decimals}" if decimals else str(whole)


def go_yaml_order(keys: Iterable[str]) -> list[str]:
    """String map keys in the order Go's yaml (v3, v4) writes them: a "natural" order where runs
    of digits compare as numbers and, at the first difference, a non-letter sorts before a
    letter (unless it follows a digit)."""
    return sorted(keys, key=cmp_to_key(lambda a, b: -1 if _go_yaml_less(a, b) else 1 if _go_yaml_less(b, a) else 0))


def _go_yaml_less(a: str, b: str) -> bool:
    digits = False
    for i in range(min(len(a), len(b))):
        x, y = a[i], b[i]
        if x == y:
            digits = x.isdecimal()
            continue
        x_letter, y_letter = x.isalpha(), y.isalpha()
        if x_letter and y_letter:
            return x < y
        if x_letter or y_letter:
            return x_letter if digits else y_letter
        a_number = b_number = 0
        if x == "0" or y == "0":
            j = i - 1
            while j >= 0 and a[j].isdecimal():
                if a[j] != "0":
                    a_number = b_number = 1
                    break
                j -= 1
        a_end = i
        while a_end < len(a) and a[a_end].isdecimal():
            a_number = a_number * 10 + ord(a[a_end]) - 48
            a_end += 1
        b_end = i
        while b_end < len(b) and b[b_end].isdecimal():
            b_number = b_number * 10 + ord(b[b_end]) - 48
            b_end += 1
        if a_number != b_number:
            return a_number < b_number
        if a_end != b_end:
            return a_end < b_end
        return x < y
    return len(a) < len(b)
