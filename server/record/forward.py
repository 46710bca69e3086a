"""The call to the upstream: one httpx client for the server's lifetime, each answer read as it
arrives (decoded: gzip, deflate, zstd), with go-vcr's timing measured on the way.

``duration`` is go-vcr's: from sending the request to the response headers (connecting
included). Each decoded chunk carries its arrival time, from which recording derives the
per-event offsets.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from ..responses import HOP_BY_HOP_AND_LENGTH, standard_reason

# Request headers the server sets itself when forwarding (framing, the upstream's host, the
# codings it can decode), besides hop-by-hop ones.
_REPLACED_REQUEST_HEADERS = HOP_BY_HOP_AND_LENGTH | {"host", "accept-encoding", "expect"}


@dataclass
class UpstreamAnswer:
    """An upstream's response whose headers are in and whose body is still to be read."""

    response: httpx.Response
    sent_ns: int  # monotonic clock, when the request was handed to the connection
    headers_ns: int  # monotonic clock, when the response headers were in

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def reason(self) -> str:
        return self.response.reason_phrase or standard_reason(self.status)

    @property
    def proto(self) -> str:
        """Go's spelling of the HTTP version: ``HTTP/1.1``, ``HTTP/2.0``."""
        version = self.response.http_version
        return "HTTP/2.0" if version == "HTTP/2" else version

    @property
    def encoded(self) -> bool:
        """Whether the upstream compressed the body (it is read decoded)."""
        return self.response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")

    @property
    def chunked(self) -> bool:
        return "chunked" in self.response.headers.get("transfer-encoding", "").lower()

    @property
    def content_length(self) -> int | None:
        """The body's length when it is passed on as sent (not decoded) and the upstream said it."""
        text = self.response.headers.get("content-length")
        if self.encoded or text is None or not text.strip().isdigit():
            return None
        return int(text)

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The upstream's headers (lower-case names) without framing ones: hop-by-hop headers,
        Content-Length and Content-Encoding (the body is read decoded)."""
        framing = HOP_BY_HOP_AND_LENGTH | {"content-encoding"}
        return [(name, value) for name, value in self.response.headers.multi_items() if name not in framing]

    @property
    def duration_ns(self) -> int:
        return self.headers_ns - self.sent_ns

    async def chunks(self) -> AsyncIterator[tuple[bytes, int]]:
        """The decoded body, chunk by chunk as it arrives, each with its arrival (monotonic ns)."""
        async for chunk in self.response.aiter_bytes():
            yield chunk, time.monotonic_ns()

    async def close(self) -> None:
        await self.response.aclose()


class Forwarder:
    """Sends requests upstream. The client lives from the app's startup to its shutdown
    (``running``), so connections to a provider are reused across requests."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout), follow_redirects=False)
        self._client = client
        try:
            yield
        finally:
            self._client = None
            await client.aclose()

    async def send(self, method: str, url: str, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> UpstreamAnswer:
        """Send the request as the client sent it (its own headers, as raw ASGI bytes so that values
        that are not ASCII go on unchanged, minus framing), asking for the codings httpx decodes;
        return once the response headers are in. Raises httpx.HTTPError."""
        client = self._client
        if client is None:
            raise RuntimeError("the upstream client runs in the app's lifespan; start the app with lifespan events")
        forwarded = [(name, value) for name, value in headers
                     if name.decode("latin-1").lower() not in _REPLACED_REQUEST_HEADERS]
        forwarded.append((b"accept-encoding", client.headers["accept-encoding"].encode()))  # what httpx can decode here
        sends_body = body or any(name.lower() == b"content-length" for name, _ in headers)
        request = httpx.Request(method, url, headers=forwarded, content=body if sends_body else None)
        sent = time.monotonic_ns()
        response = await client.send(request, stream=True)
        return UpstreamAnswer(response, sent, time.monotonic_ns())


def describe_failure(error: httpx.HTTPError, timeout: float) -> str:
    """What went wrong talking to the upstream, in words."""
    if isinstance(error, httpx.TimeoutException):
        return f"no answer within --upstream-timeout {timeout:g} s ({type(error).__name__})"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
