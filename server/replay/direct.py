"""A whole recorded answer written to the connection in one call, instead of two ASGI messages.

Why: an answer sent whole (a JSON body, or a stream at speed 0) is most of what a test suite asks
for, and on that path uvicorn's ``send`` was a third of the server's time: it checks every
header against two regular expressions, lower-cases it, looks for framing headers, joins the
head, then writes head and body in two system calls. A recording's headers were checked and put
in wire form once, at load time (``RecordedResponse.header_block``), so all that is left per
request is one write (one ``writev`` under uvloop). Measured with wrk on the benchmark's JSON
case (2 cores): 13.4–13.8k requests/s before, 18.7–19.1k now (15.0–15.7k when uvicorn's ``send``
is skipped but head and body still go in two writes: the single system call is most of it).

What uvicorn's ``send`` does for the two messages, this does too, in the same order: the status
line (uvicorn's own table), the header lines, the chunked framing of a stream; then it marks the
exchange started and complete, wakes a waiting ``receive`` and tells the connection the answer
is done (keep-alive timer, the next pipelined request). The bytes on the wire are the same
(a test compares them, answer by answer, with the two-message path).

Where that is not certain, it writes nothing and the caller sends the two messages as before:
another HTTP implementation than uvicorn's httptools one (h11, another server, an in-process
test client), a uvicorn whose exchange object lacks any attribute used here (checked once), a
HEAD request, a connection that closes after this answer (HTTP/1.0, ``Connection: close``,
shutting down), a client that stopped reading (uvicorn must wait for it), uvicorn's access log
or default headers turned on, a status without a body (1xx, 204, 304).
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope, Send

from ..models import BodyKind, RecordedResponse

try:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as _Exchange
except ImportError:  # pragma: no cover - without httptools, uvicorn runs h11: always the ASGI path
    _Exchange = None
    STATUS_LINE = {}

# What is read or set on uvicorn's exchange object (RequestResponseCycle): all instance
# attributes, so they are checked on the first one seen.
_USED = ("response_started", "response_complete", "disconnected", "keep_alive", "flow", "access_log",
         "default_headers", "waiting_for_100_continue", "transport", "message_event", "on_response",
         "chunked_encoding")
_WITH_BODY = frozenset(status for status in STATUS_LINE if status >= 200 and status not in (204, 304))
LAST_CHUNK = b"0\r\n\r\n"
_CHUNK_END_AND_LAST = b"\r\n" + LAST_CHUNK
_supported: bool | None = None  # decided on the first exchange seen


def write_whole(response: RecordedResponse, scope: Scope, send: Send) -> bool:
    """Write ``response``, headers and whole body, to the connection ``send`` belongs to, as
    uvicorn's ``send`` would with the two messages; False when nothing was written (the caller
    sends the messages)."""
    exchange = direct_exchange(response, scope, send)
    if exchange is None or exchange.flow.write_paused:
        return False
    start_exchange(exchange, response)
    status_line, header_block = head_of(response)
    body = response.body
    if response.kind is BodyKind.WHOLE:  # its Content-Length is in the header block
        exchange.transport.writelines((status_line, header_block, body))
    elif body:  # a stream at speed 0: one chunk, then the last one
        exchange.transport.writelines((status_line, header_block, b"%x\r\n" % len(body), body, _CHUNK_END_AND_LAST))
    else:
        exchange.transport.writelines((status_line, header_block, LAST_CHUNK))
    end_exchange(exchange)
    return True


def direct_exchange(response: RecordedResponse, scope: Scope, send: Send) -> Any:
    """uvicorn's exchange object for ``send``, when ``response`` can be written to its
    connection directly with the bytes uvicorn's ``send`` would write; else None.

    Checked once, when the answer starts: a connection that stops keeping alive or a writer
    that pauses later must be checked again before each write (replay/pacer.py does)."""
    exchange = uvicorn_exchange(send)
    if exchange is None:
        return None
    if (exchange.response_started or exchange.disconnected or not exchange.keep_alive or exchange.access_log
            or exchange.default_headers or scope["method"] == "HEAD" or response.status not in _WITH_BODY):
        return None
    return exchange


def head_of(response: RecordedResponse) -> tuple[bytes, bytes]:
    """The status line and header lines of ``response``, as uvicorn writes them."""
    return STATUS_LINE[response.status], response.header_block


def start_exchange(exchange: Any, response: RecordedResponse) -> None:
    """What uvicorn's ``send`` records when it writes the head of ``response``."""
    exchange.response_started = True
    exchange.waiting_for_100_continue = False
    exchange.chunked_encoding = response.kind is not BodyKind.WHOLE


def end_exchange(exchange: Any) -> None:
    """What uvicorn's ``send`` does once the body is complete: the exchange is over, a waiting
    ``receive`` wakes, a connection that no longer keeps alive (the server stopping) closes,
    and the connection goes on (keep-alive timer, the next pipelined request)."""
    exchange.response_complete = True
    exchange.message_event.set()
    if not exchange.keep_alive:
        exchange.transport.close()
    exchange.on_response()


def uvicorn_exchange(send: Send) -> Any:
    """The uvicorn (httptools) exchange object ``send`` belongs to, when it has every attribute
    used here and in replay/pacer.py; else None (another server, h11, an in-process client)."""
    exchange: Any = getattr(send, "__self__", None)
    if type(exchange) is not _Exchange or not (_supported or _supported is None and _check(exchange)):
        return None
    return exchange


def _check(exchange: object) -> bool:
    """Whether this uvicorn's exchange object has everything used here (once per process)."""
    global _supported  # noqa: PLW0603 - one verdict per process, read on every request
    _supported = all(hasattr(exchange, name) for name in _USED)
    return _supported
