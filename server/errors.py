"""Every error the server reports, with the HTTP status and stable code it is answered with.

    CassetteServerError
    ├── CassetteLoadError        a cassette file cannot be used (file, line, reason); never HTTP
    │   └── UnknownFormat        not a cassette format (or version) we read
    ├── InvalidCassette          several load errors found in one file
    └── HTTPError                answered to a client as one JSON error shape (see ``to_json``)
        ├── BadRequest           400 invalid_request_error / bad_request
        ├── Unauthorized         401 authentication_error / unauthorized
        ├── Forbidden            403 permission_error / forbidden (an admin call the server refuses to anyone)
        ├── NotFound             404 not_found_error / not_found (no such admin endpoint)
        ├── UnknownCassette      404 not_found_error / unknown_cassette
        ├── CassetteMiss         404 not_found_error / cassette_miss
        ├── Conflict             409 invalid_request_error / conflict
        │   └── NotWritable      409 invalid_request_error / not_writable (PUT could not write the file)
        ├── TooLarge             413 request_too_large / too_large (a body over --max-body-size, a PUT body over
        │                        --max-cassette-size, a recorded request over either)
        └── UpstreamError        502 api_error / upstream_error (recording: the upstream could not be reached,
                                 timed out, or no upstream is known for the path)

The JSON shape is readable by every SDK we target: OpenAI reads ``error.message`` and
``error.code``, Anthropic ``error.type`` and ``error.message``, google-genai ``error.status`` and
``error.message``. Misses also carry ``x-should-retry: false`` so no SDK retries them.
"""

from __future__ import annotations

import zlib
from typing import Any, ClassVar


class CassetteServerError(Exception):
    """Base of every error raised on purpose by cassette-server."""


class CassetteLoadError(CassetteServerError):
    """A cassette file (or one interaction in it) that cannot be loaded."""

    def __init__(self, reason: str, *, file: str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.file = file
        self.line = line
        super().__init__(self.where() + reason)

    def where(self) -> str:
        """``file:line: `` (or less, where unknown), to prefix the reason with."""
        if self.file is None:
            return ""
        return f"{self.file}:{self.line}: " if self.line else f"{self.file}: "


class UnknownFormat(CassetteLoadError):
    """A document that is not a cassette format (or version) we can read."""


class InvalidCassette(CassetteServerError):
    """A cassette file with one or more bad interactions: the file is not loaded."""

    def __init__(self, problems: list[CassetteLoadError]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


class HTTPError(CassetteServerError):
    """An error answered to the HTTP client; subclasses fix the status and codes."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    code: ClassVar[str] = "internal_error"
    status: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {
                "type": self.error_type,
                "code": self.code,
                "status": self.status,
                "message": self.message,
            },
        }


class BadRequest(HTTPError):
    """The request itself is unusable (a bad control header, a conflicting scope)."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "bad_request"
    status = "INVALID_ARGUMENT"


class Unauthorized(HTTPError):
    """An admin call without the right bearer token."""

    status_code = 401
    error_type = "authentication_error"
    code = "unauthorized"
    status = "UNAUTHENTICATED"


class Forbidden(HTTPError):
    """An admin call refused whoever makes it: a write to a server exposed without a token, or a
    call that a web page made (another Host or Origin: DNS rebinding, cross-site requests)."""

    status_code = 403
    error_type = "permission_error"
    code = "forbidden"
    status = "PERMISSION_DENIED"


class NotFound(HTTPError):
    """An admin URL that names no endpoint."""

    status_code = 404
    error_type = "not_found_error"
    code = "not_found"
    status = "NOT_FOUND"


class MethodNotAllowed(HTTPError):
    """An admin URL that names an endpoint, with a method it does not take (the answer's
    ``Allow`` header lists those it does)."""

    status_code = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"
    status = "INVALID_ARGUMENT"


class UnknownCassette(HTTPError):
    """A request scoped (header or URL prefix) to a cassette that is not loaded."""

    status_code = 404
    error_type = "not_found_error"
    code = "unknown_cassette"
    status = "NOT_FOUND"


class CassetteMiss(HTTPError):
    """No recorded interaction answers this request (or all that do are used up)."""

    status_code = 404
    error_type = "not_found_error"
    code = "cassette_miss"
    status = "NOT_FOUND"

    def __init__(self, message: str, *, near_misses_json: bytes = b"[]") -> None:
        super().__init__(message)
        # The closest recordings, closest first, as the request journal shows them (a JSON array
        # of NearMiss.to_json). Kept as text, not objects: a miss stays in the journal, and its
        # near misses as objects (some 40 the garbage collector tracks) made each young-generation
        # collection after a burst of misses scan tens of thousands of them, 30 to 50 ms on the
        # event loop, with every stream in flight waiting. Kept compressed: the differences
        # repeat field names and recorded values, so 4.2 KB of JSON keeps as 0.8 KB (zlib level
        # 1: about 30 µs, in the thread that explains the miss), and the journal's byte bound
        # holds five times as many misses. Compressing also copies the text out of orjson's
        # bytes, which keep the whole buffer they were written in (8 KB for 4 KB of JSON).
        self.near_misses_packed = zlib.compress(near_misses_json, 1)

    @property
    def near_misses_json(self) -> bytes:
        """The near misses' JSON, as it was given (decompressed on each call: read by the admin API)."""
        return zlib.decompress(self.near_misses_packed)


class Conflict(HTTPError):
    """An admin change that the current state does not allow (e.g. no directory to write to)."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"
    status = "FAILED_PRECONDITION"


class NotWritable(Conflict):
    """A cassette file the admin API cannot write (read-only mount, permissions, a directory in
    the way): the server's surroundings, not the request, have to change."""

    code = "not_writable"


class TooLarge(HTTPError):
    """A request body larger than the server accepts (a replayed request over --max-body-size, a
    cassette PUT over --max-cassette-size)."""

    status_code = 413
    error_type = "request_too_large"
    code = "too_large"
    status = "INVALID_ARGUMENT"


class UpstreamError(HTTPError):
    """Recording could not get an answer from the upstream (unreachable, timed out, or none is
    known for the path): nothing was recorded. The message names the upstream URL."""

    status_code = 502
    error_type = "api_error"
    code = "upstream_error"
    status = "UNAVAILABLE"
