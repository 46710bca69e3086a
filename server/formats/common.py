"""Field readers shared by the cassette formats; each raises CassetteLoadError with a reason."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from ..errors import CassetteLoadError
from ..matching.keys import normalise_path
from ..models import RecordedRequest

# cassette-server's own optional response field: seconds (or Go durations) from the response
# headers to each event. go-vcr and vcrpy ignore keys they do not know, so cassettes that carry
# it still load in both. See README "Timing".
EVENT_OFFSETS_FIELD = "event_offsets"
# cassette-server's own optional interaction field, written by the recorder on an interaction
# whose request it had already recorded in the same run: a deliberate sequence (polling, a
# retry), which `check` does not report as a duplicate. Both formats' readers ignore it.
DELIBERATE_REPEAT_FIELD = "deliberate_repeat"

_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(value: Any, what: str = "duration") -> float:
    """Seconds from a Go ``time.Duration``: a string like ``2.459145959s`` / ``1m2.5s`` / ``0s``,
    or an integer count of nanoseconds (how yaml encodes it without the String method).
    Negative durations count as 0.
    """
    if value is None or value == "":  # not recorded (go-vcr v1 had no duration)
        return 0.0
    if isinstance(value, bool):
        raise CassetteLoadError(f"{what} must be a duration like '1.5s', not {value!r}")
    if isinstance(value, int):
        return max(0.0, value * 1e-9)
    if isinstance(value, float):
        return max(0.0, value)
    text = str(value).strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    total = 0.0
    position = 0
    for match in _GO_DURATION_PART.finditer(body):
        if match.start() != position:
            break
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        position = match.end()
    if position != len(body) or not body:
        raise CassetteLoadError(f"{what} {value!r} is not a duration like '1.5s' or '250ms'")
    return max(0.0, sign * total)


def parse_event_offsets(response: dict[str, Any]) -> list[float] | None:
    """The optional per-event offsets (seconds; numbers or Go duration strings)."""
    raw = response.get(EVENT_OFFSETS_FIELD)
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise CassetteLoadError(f"response.{EVENT_OFFSETS_FIELD} must be a list of offsets")
    return [
        parse_go_duration(item, f"response.{EVENT_OFFSETS_FIELD}[{i}]") if isinstance(item, str) else _seconds(item, i)
        for i, item in enumerate(raw)
    ]


def _seconds(item: Any, position: int) -> float:
    if isinstance(item, bool) or not isinstance(item, (int, float)):
        raise CassetteLoadError(f"response.{EVENT_OFFSETS_FIELD}[{position}] must be seconds, not {item!r}")
    return float(item)


def body_bytes(value: Any, what: str) -> bytes:
    """A recorded body: text (stored as UTF-8), ``!!binary`` bytes, or nothing."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:  # surrogateescape gives back the bytes a Python recorder could not decode
            return value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate from a JSON escape (a string cut mid-emoji)
            return value.encode("utf-8", "surrogatepass")
    raise CassetteLoadError(f"{what} must be a string or !!binary, not {type(value).__name__}")


def body_text(body: bytes) -> str | bytes:
    """A body as the writers store it: text when it is UTF-8 (readable, and what both formats'
    own recorders write), else the bytes themselves (``!!binary`` in YAML)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body


def header_pairs(value: Any, what: str) -> list[tuple[str, str]]:
    """Headers recorded as ``{name: [values]}`` (or ``{name: value}``) → (name, value) pairs."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise CassetteLoadError(f"{what} must be a mapping of header names to lists of values")
    pairs = []
    for name, values in value.items():
        for item in values if isinstance(values, list) else [values]:
            pairs.append((str(name), _header_text(item)))
    return pairs


def _header_text(item: Any) -> str:
    """A header value as written. YAML ones are text already (documents.keep_sent_text); a JSON
    ``true`` or ``1.50`` is sent in JSON's spelling, not Python's (``True``)."""
    if item is None:
        return ""
    if isinstance(item, str):
        return item
    if isinstance(item, (bool, int, float)):
        return json.dumps(item)
    return str(item)


def split_url(url: Any, what: str = "request.url") -> tuple[str, str]:
    """(percent-decoded path, raw query) of a recorded URL; scheme and host are dropped."""
    if url is not None and not isinstance(url, str):
        raise CassetteLoadError(f"{what} must be a URL like 'https://api.openai.com/v1/…', not {url!r}")
    if not url:
        raise CassetteLoadError(f"{what} is missing")
    parts = urlsplit(url)
    return normalise_path(parts.path), parts.query


def require_mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        raise CassetteLoadError(f"{what} is missing")
    if not isinstance(value, dict):
        raise CassetteLoadError(f"{what} must be a mapping, not {type(value).__name__} {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def recorded_request(request: dict[str, Any], *, url_field: str, body: bytes) -> RecordedRequest:
    """The parts every format spells alike: ``method`` (any case), the URL under ``url_field``
    and ``headers``; the body is read by the format."""
    method = request.get("method")
    if method is not None and not isinstance(method, str):
        raise CassetteLoadError(f"request.method must be text like POST, not {_shown(method)}")
    if not method:
        raise CassetteLoadError("request.method is missing")
    url = request.get(url_field)
    other = "url" if url_field == "uri" else "uri"
    if url is None and other in request:
        raise CassetteLoadError(f"request.{url_field} is missing; the request has `{other}`, as the other format "
                                f"(go-vcr: `url`, vcrpy: `uri`) writes it: write every interaction of a file in one format")
    path, query = split_url(url, f"request.{url_field}")
    headers = tuple((name.lower(), value) for name, value in header_pairs(request.get("headers"), "request.headers"))
    return RecordedRequest(method=method.upper(), url=url, path=path, query=query, headers=headers, body=body)
