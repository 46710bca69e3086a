"""Error answers in the shape of the provider a request is for, so that each official SDK raises
its own typed exception and retries as it would in production:

- OpenAI (and OpenAI-compatible APIs): ``{"error": {"message", "type", "param", "code"}}``, with
  ``x-request-id``; a 429 also has ``x-ratelimit-*`` headers. ``retry-after`` (whole seconds) and
  ``retry-after-ms`` go out when a delay is set: the SDKs read the milliseconds first, so a
  fraction of a second works.
- Anthropic: ``{"type": "error", "error": {"type", "message"}, "request_id"}``, with
  ``request-id``; a 429 also has ``anthropic-ratelimit-*`` headers; a 529 ``x-should-retry: true``,
  as the API sends it. ``retry-after`` when a delay is set, and ``retry-after-ms`` too when it is
  a fraction of a second.
- Gemini: ``google.rpc.Status`` as JSON, ``{"error": {"code", "message", "status"}}``, the status
  named after the code (429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, …); with a delay, a 429 or 503
  carries a ``google.rpc.RetryInfo`` detail, and ``retry-after``.

The limits and counts in rate-limit headers are fixed illustrative numbers; the reset times
follow the fault's ``retry_after``. Every message ends with the fault rule that made it, so a
test log shows where an error came from.
"""

from __future__ import annotations

import enum
import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from ..catalog import provider_of
from .faults import Fault, Kind


class Provider(str, enum.Enum):
    OPENAI = "openai"  # also every OpenAI-compatible API
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"  # also Vertex AI


# Gemini's own methods are path suffixes after a colon: models/NAME:generateContent.
_GEMINI_METHOD = re.compile(r"/models/[^/]+:[A-Za-z]+$")
_GOOGLE_VERSION = re.compile(r"^/v1(?:alpha|beta)\d*/")
# catalog.provider_of's names → shapes; the OpenAI-compatible providers answer in OpenAI's.
_HOST_PROVIDERS = {
    "anthropic": Provider.ANTHROPIC, "gemini": Provider.GEMINI, "vertex-ai": Provider.GEMINI,
    **{name: Provider.OPENAI for name in ("openai", "azure-openai", "groq", "openrouter", "mistral", "deepseek", "xai",
                                          "together")},
}


def provider_for(path: str, recorded_url: str) -> Provider:
    """The provider whose error shape a request expects: a Gemini method in the path, an
    OpenAI-compatible route (``…/openai/…``, which Gemini and Groq serve), else the recorded
    host when it is a known provider's, else the path (``…/messages`` is Anthropic's,
    ``/v1beta/…`` Google's); OpenAI's by default."""
    if _GEMINI_METHOD.search(path):
        return Provider.GEMINI
    if "/openai/" in path:
        return Provider.OPENAI
    by_host = _HOST_PROVIDERS.get(provider_of(recorded_url) or "")
    if by_host is not None:
        return by_host
    if path.endswith(("/messages", "/messages/count_tokens", "/v1/complete")):
        return Provider.ANTHROPIC
    if _GOOGLE_VERSION.match(path):
        return Provider.GEMINI
    return Provider.OPENAI


@dataclass(frozen=True)
class ErrorAnswer:
    """A whole response, ready to send over ASGI."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def status_of(fault: Fault, provider: Provider) -> int:
    """The status a fault that answers sends."""
    if fault.kind is Kind.RATE_LIMIT:
        return 429
    if fault.kind is Kind.SERVER_ERROR:
        return 500
    if fault.kind is Kind.OVERLOADED:
        return 529 if provider is Provider.ANTHROPIC else 503
    if fault.status is None:
        raise ValueError(f"a {fault.kind.value} fault does not answer with a status")
    return fault.status


def error_answer(fault: Fault, provider: Provider, rule: str) -> ErrorAnswer:
    """The error ``fault`` answers with, in ``provider``'s shape; ``rule`` names the rule that fired."""
    status = status_of(fault, provider)
    note = f"[injected by cassette-server, fault rule {rule}]"
    shape = {Provider.OPENAI: _openai, Provider.ANTHROPIC: _anthropic, Provider.GEMINI: _gemini}[provider]
    body, headers = shape(status, fault.retry_after, note)
    if fault.retry_after is not None:
        headers.append(("retry-after", str(math.ceil(fault.retry_after))))
    encoded = orjson.dumps(body)
    wire = [(name.encode(), value.encode()) for name, value in headers]
    wire.append((b"content-length", str(len(encoded)).encode()))
    return ErrorAnswer(status, tuple(wire), encoded)


_PHRASES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 408: "Request timeout",
    409: "Conflict", 413: "Request too large", 422: "Unprocessable entity", 429: "Too many requests",
    500: "Internal server error", 502: "Bad gateway", 503: "Service unavailable", 504: "Gateway timeout",
}


def _message(messages: dict[int, str], status: int, note: str) -> str:
    """The provider's wording for ``status`` (else the status's phrase), then the fault's note."""
    return f"{messages.get(status) or _PHRASES.get(status, 'Error') + '.'} {note}"


_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
                 404: "invalid_request_error", 409: "invalid_request_error", 422: "invalid_request_error",
                 429: "requests"}
_OPENAI_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
_OPENAI_MESSAGES = {
    429: "Rate limit reached for requests per min (RPM): Limit 500, Used 500, Requested 1.",
    500: "The server had an error while processing your request.",
    503: "The server is overloaded right now; retry your request.",
}


def _openai(status: int, retry_after: float | None, note: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    if status == 429 and retry_after:
        note = f"Please try again in {_go_duration(retry_after)}. {note}"
    message = _message(_OPENAI_MESSAGES, status, note)
    error_type = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": error_type, "param": None, "code": _OPENAI_CODES.get(status)}}
    headers = [("content-type", "application/json"), ("x-request-id", f"req_{uuid.uuid4().hex}")]
    if status == 429:
        reset = _go_duration(retry_after or 0)
        headers += [
            ("x-ratelimit-limit-requests", "500"), ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", reset),
            ("x-ratelimit-limit-tokens", "200000"), ("x-ratelimit-remaining-tokens", "200000"),
            ("x-ratelimit-reset-tokens", "0s"),
        ]
    if retry_after is not None:
        headers.append(("retry-after-ms", str(round(retry_after * 1000))))
    return body, headers


_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error"}
_ANTHROPIC_MESSAGES = {429: "Number of requests has exceeded your per-minute rate limit.", 529: "Overloaded."}


def _anthropic(status: int, retry_after: float | None, note: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    error_type = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    message = _message(_ANTHROPIC_MESSAGES, status, note)
    request_id = f"req_{uuid.uuid4().hex[:24]}"
    body = {"type": "error", "error": {"type": error_type, "message": message}, "request_id": request_id}
    headers = [("content-type", "application/json"), ("request-id", request_id)]
    if status == 529:
        headers.append(("x-should-retry", "true"))
    if status == 429:
        reset = (datetime.now(timezone.utc) + timedelta(seconds=retry_after or 0)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for limit, size in (("requests", "50"), ("tokens", "100000"), ("input-tokens", "80000"),
                            ("output-tokens", "20000")):
            remaining = "0" if limit == "requests" else size
            headers += [(f"anthropic-ratelimit-{limit}-limit", size),
                        (f"anthropic-ratelimit-{limit}-remaining", remaining),
                        (f"anthropic-ratelimit-{limit}-reset", reset)]
    if retry_after is not None and not float(retry_after).is_integer():
        headers.append(("retry-after-ms", str(round(retry_after * 1000))))  # the SDKs read it first
    return body, headers


# google.rpc.Code names by the HTTP status Google's APIs answer them with.
GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
_GEMINI_MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred.",
    503: "The model is overloaded. Please try again later.",
}


def _gemini(status: int, retry_after: float | None, note: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    message = _message(_GEMINI_MESSAGES, status, note)
    error: dict[str, Any] = {"code": status, "message": message, "status": GOOGLE_STATUSES.get(status, "UNKNOWN")}
    if retry_after is not None and status in (429, 503):
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after:g}s"}]
    return {"error": error}, [("content-type", "application/json; charset=UTF-8")]


def _go_duration(seconds: float) -> str:
    """OpenAI's spelling of a reset time: ``120ms``, ``1s``, ``1.5s``, ``6m0s``."""
    if 0 < seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text

