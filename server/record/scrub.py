"""What of a recorded exchange may reach the disk: secrets never do.

- Request headers are kept by an allow-list: what says what was asked and by which client,
  never who pays (``--keep-header`` widens it, but never to a credential or a cookie).
- Credential query parameters (``key=``, ``api_key=``, …) are written as ``REDACTED``; matching
  ignores their value, so the request still replays.
- Response headers: cookies are dropped; headers naming an account are ``REDACTED``.

Request bodies are recorded as sent: they are what matching compares.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote

from ..credentials import CREDENTIAL_HEADERS, REDACTED, is_credential_parameter

# Request headers recorded by default (lower case).
RECORDED_REQUEST_HEADERS = frozenset(
    {"content-type", "accept", "user-agent", "anthropic-version", "anthropic-beta", "openai-beta"}
)
# Request headers never recorded, whatever --keep-header says: credentials, cookies, AWS signing.
NEVER_RECORDED = frozenset(
    {*CREDENTIAL_HEADERS, "cookie", "x-amz-security-token", "x-amz-date", "x-amz-content-sha256"}
)
# Response headers left out of a recording: cookies.
DROPPED_RESPONSE_HEADERS = frozenset({"set-cookie", "set-cookie2"})
# Response headers that name the account the key belongs to: recorded as REDACTED.
ACCOUNT_HEADERS = frozenset({"openai-organization", "openai-project", "anthropic-organization-id"})


def keepable_header(name: str) -> str:
    """A ``--keep-header`` name, lower case; raises ValueError for one that is never recorded."""
    lower = name.strip().lower()
    if lower in NEVER_RECORDED:
        raise ValueError(f"{name!r} carries a credential or a cookie and is never recorded")
    if not lower:
        raise ValueError("a header name is empty")
    return lower


class Scrubber:
    """Applies the rules above; ``keep_headers`` are extra request headers to record."""

    def __init__(self, keep_headers: Iterable[str] = ()) -> None:
        self.recorded_request_headers = RECORDED_REQUEST_HEADERS | {keepable_header(name) for name in keep_headers}

    def request_headers(self, headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        return tuple((name, value) for name, value in headers if name.lower() in self.recorded_request_headers)

    def response_headers(self, headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        kept = []
        for name, value in headers:
            lower = name.lower()
            if lower in DROPPED_RESPONSE_HEADERS:
                continue
            kept.append((name, REDACTED if lower in ACCOUNT_HEADERS else value))
        return tuple(kept)


def redact_query(query: str) -> str:
    """A raw query string with the value of every credential parameter replaced by REDACTED;
    everything else is kept exactly as sent (order, encoding, blank values)."""
    if not query:
        return query
    parts = []
    for part in query.split("&"):
        name, equals, _ = part.partition("=")
        parts.append(f"{name}={REDACTED}" if equals and is_credential_parameter(unquote(name.replace("+", " "))) else part)
    return "&".join(parts)
