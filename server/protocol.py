"""uvicorn's HTTP/1.1 protocol, answering a request it cannot parse in the JSON error shape.

uvicorn refuses bytes that are not HTTP (a space or a non-ASCII byte in the path, a header line
without a colon, a bad Content-Length) itself, before the app sees anything, with a plain-text
``Invalid HTTP request received.``. Clients and SDKs pointed at this server read errors as JSON,
so the same refusal is written in the JSON error shape (400 ``bad_request``). Everything else is
uvicorn's protocol unchanged: the one method replaced is the one uvicorn calls for such a
request (``send_400_response``), on the implementation uvicorn itself would pick.
"""

from __future__ import annotations

import asyncio
import json

from .errors import BadRequest

try:  # what uvicorn's "auto" picks: httptools when installed, else h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Protocol
except ImportError:  # pragma: no cover - without httptools
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Protocol  # type: ignore[assignment]


def parse_error_body(reason: str) -> bytes:
    """The JSON error body for a request that could not be parsed, ``reason`` being uvicorn's."""
    error = BadRequest(f"The request could not be read as HTTP/1.1 ({reason.rstrip('.')}): check the request line "
                       "(METHOD /path HTTP/1.1, the path percent-encoded, without spaces or non-ASCII bytes), the "
                       "header lines (Name: value) and the body's framing (Content-Length or chunked). Nothing was "
                       "replayed.")
    return json.dumps(error.to_json()).encode()


class JsonErrorsProtocol(_Protocol):  # type: ignore[misc, valid-type]
    """uvicorn's protocol; a request it cannot parse gets a JSON 400, then the connection closes
    (as uvicorn does: the rest of the bytes cannot be trusted to frame another request)."""

    transport: asyncio.Transport

    def send_400_response(self, msg: str) -> None:
        body = parse_error_body(msg)
        self.transport.write(b"".join([
            b"HTTP/1.1 400 Bad Request\r\n",
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-should-retry: false\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]))
        self.transport.close()
