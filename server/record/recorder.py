"""The one object the app hands a request to in a record mode: forward it upstream, pass the
answer on to the client as it arrives, write it into a cassette, and publish that cassette to
the index so the request is replayed from then on.

What is held back: each decoded chunk goes to the client as soon as it arrives, except the end
of the answer, which waits until the cassette file is on disk (fsync'ed and renamed):

- an answer of known length (the upstream's Content-Length, body not compressed) is passed on
  with that length, without its last byte;
- any other answer (a stream, or a body the upstream compressed, which is sent decoded) is
  passed on chunk by chunk; what is held is its end (the terminating chunk).

So a client never holds a complete answer that is not on disk. When the upstream cuts its
answer, or it cannot be written, the client's answer is cut the same way (the connection is
closed without the end) and nothing is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from ..errors import UpstreamError
from ..matching.keys import MatchRules
from ..models import BodyKind, Cassette, Exchange, ReceivedRequest, Recorded
from ..responses import build_response, header_bytes
from ..settings import Settings
from .forward import Forwarder, UpstreamAnswer, describe_failure
from .scoping import forwarded_path, forwarded_query
from .scrub import Scrubber, redact_query
from .timing import event_offsets
from .upstreams import Upstreams
from .writer import CassetteWriter, RecordingFailed

log = logging.getLogger("cassette_server")

Send = Callable[[dict[str, Any]], Awaitable[None]]
# Publishes a cassette just written: (cassette, session, scope) → the index serves it.
Publish = Callable[[Cassette, str, str | None], None]


class Recorder:
    """Recording, for one server. ``rules`` decide which requests are the same; ``loaded_file``
    gives the file of a loaded cassette; ``publish`` swaps a written cassette into the index;
    ``control_headers`` are the server's own request headers, never forwarded."""

    def __init__(self, settings: Settings, *, rules: MatchRules, loaded_file: Callable[[str], str | None],
                 publish: Publish, control_headers: Iterable[str]) -> None:
        self.default_cassette = settings.cassette
        self.record_errors = settings.record_errors
        self.max_size = settings.max_cassette_size
        self.timeout = settings.upstream_timeout
        self.upstreams = Upstreams(settings.upstream)
        self.scrubber = Scrubber(settings.keep_headers)
        self.forwarder = Forwarder(settings.upstream_timeout)
        self.writer = CassetteWriter(directory=settings.recording_directory(), new_format=settings.format,
                                     rules=rules, loaded_file=loaded_file, max_size=settings.max_cassette_size)
        self.publish = publish
        self.control_headers = frozenset(name.lower() for name in control_headers)

    def running(self) -> AbstractAsyncContextManager[None]:
        """The upstream client's lifetime: enter at the app's startup, leave at its shutdown."""
        return self.forwarder.running()

    async def forward(self, scope: Mapping[str, Any], send: Send, *, request: ReceivedRequest, cassette: str | None,
                      session: str, replacing: set[Path] | None = None) -> Recorded:
        """Forward ``request`` and pass the answer to ``send``; record it into ``cassette`` (the
        request's scope) or the default cassette. ``replacing``: the session starts each cassette
        afresh, and these are the files it has started so far (``CassetteWriter.append``). Raises an
        HTTPError (UpstreamError, BadRequest) before anything is sent; once the answer has started,
        every outcome is returned."""
        name = cassette or self.default_cassette
        self.writer.file_of(name)  # a name that cannot be a file is refused before the upstream is asked
        headers = _decoded_headers(scope["headers"])
        origin = self.upstreams.origin_for(request.path, _first(headers))
        what = f"{request.method} {request.path}"
        if origin is None:
            raise UpstreamError(
                f"No upstream is known for {what}: it is not an OpenAI, Anthropic or Gemini path. Pass --upstream URL "
                f"(or --upstream PREFIX=URL) to say where to send it. Nothing was recorded (cassette '{name}')."
            )
        path = forwarded_path(scope, request.path)
        query = forwarded_query(request.query)
        url = origin + path + (f"?{query}" if query else "")
        recorded_url = origin + path + (f"?{redact_query(query)}" if query else "")
        sent_headers = [(header, value) for header, value in scope["headers"]
                        if header.decode("latin-1").lower() not in self.control_headers]
        try:
            answer = await self.forwarder.send(request.method, url, sent_headers, request.body)
        except httpx.HTTPError as error:
            reason = describe_failure(error, self.timeout)
            log.warning("Upstream %s gave no answer to %s (%s); nothing recorded into cassette '%s'",
                        origin, what, reason, name)
            raise UpstreamError(f"The upstream {origin} gave no answer to {what}: {reason}. Nothing was recorded "
                                f"(cassette '{name}').") from None
        try:
            return await self._pass_on(answer, send, request, name=name, url=recorded_url, headers=headers,
                                       http_version=scope.get("http_version", "1.1"), session=session,
                                       scoped_to=cassette, replacing=replacing)
        finally:
            await answer.close()

    async def _pass_on(self, answer: UpstreamAnswer, send: Send, request: ReceivedRequest, *, name: str, url: str,
                       headers: list[tuple[str, str]], http_version: str, session: str,
                       scoped_to: str | None, replacing: set[Path] | None) -> Recorded:
        """Pass the answer on, holding back its end; write it; then let the end go."""
        what = f"{request.method} {request.path}"
        outcome = Recorded(name, url, answer.status, answer.duration_ns / 1e9)
        not_recorded = None
        if not (200 <= answer.status < 300 or self.record_errors):
            not_recorded = f"the upstream answered {answer.status} (pass --record-errors to record answers that are not 2xx)"
        known_length = answer.content_length
        client_headers = answer.headers
        if known_length is not None:
            client_headers.append(("content-length", str(known_length)))
        await send({"type": "http.response.start", "status": answer.status, "headers": _encoded(client_headers)})

        chunks: list[bytes] = []
        arrivals: list[int] = []
        size = 0
        held = b""
        try:
            async for chunk, arrived in answer.chunks():
                size += len(chunk)
                if not_recorded is None:
                    if size > self.max_size:
                        not_recorded = f"the answer is larger than --max-cassette-size ({self.max_size} bytes)"
                        chunks.clear()
                        arrivals.clear()
                    else:
                        chunks.append(chunk)
                        arrivals.append(arrived)
                        if known_length is not None and size >= known_length and chunk:
                            chunk, held = chunk[:-1], chunk[-1:]  # the last byte waits for the disk
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as error:
            reason = f"the upstream cut its answer after {size} bytes ({describe_failure(error, self.timeout)})"
            log.warning("%s: %s; the client's answer is cut too, nothing recorded into cassette '%s'", what, reason, name)
            return replace(outcome, not_recorded=reason)

        if not_recorded is not None:
            log.warning("%s: not recorded into cassette '%s': %s", what, name, not_recorded)
            await send({"type": "http.response.body", "body": held, "more_body": False})
            return replace(outcome, not_recorded=not_recorded)

        def publish(cassette: Cassette) -> None:
            self.publish(cassette, session, scoped_to)

        try:
            exchange = self._exchange(answer, request, url, headers, http_version, chunks, arrivals)
            interaction = await asyncio.to_thread(self.writer.append, name, exchange, publish, replacing)
        except RecordingFailed as error:
            log.error("%s: could not record into cassette '%s': %s; the client's answer is cut, so it is not taken "
                      "for recorded", what, name, error)
            return replace(outcome, not_recorded=str(error))
        except Exception as error:  # a bug of ours, after the answer started: cut it, say so
            log.exception("%s: internal error while recording into cassette '%s'; the client's answer is cut", what,
                          name)
            return replace(outcome, not_recorded=f"cassette-server internal error: {error!r}; please report it")
        events = "" if exchange.event_offsets is None else f", {len(exchange.event_offsets)} events"
        log.info("Recorded %s as %s (%s:%s): upstream %s answered %d in %.3f s%s", what, interaction.label,
                 interaction.file, interaction.line, url.split("?")[0], answer.status, outcome.duration, events)
        await send({"type": "http.response.body", "body": held, "more_body": False})
        return replace(outcome, interaction=interaction)

    def _exchange(self, answer: UpstreamAnswer, request: ReceivedRequest, url: str, headers: list[tuple[str, str]],
                  http_version: str, chunks: list[bytes], arrivals: list[int]) -> Exchange:
        body = b"".join(chunks)
        recorded_headers = self.scrubber.response_headers(answer.headers)
        prepared = build_response(status=answer.status, reason=answer.reason, headers=recorded_headers, body=body,
                                  duration=0.0)
        offsets = None
        if prepared.kind is not BodyKind.WHOLE:
            offsets = event_offsets(prepared.chunks, [(len(c), t) for c, t in zip(chunks, arrivals)], answer.headers_ns)
        return Exchange(
            method=request.method,
            url=url,
            request_proto=f"HTTP/{http_version}",
            request_headers=self.scrubber.request_headers(headers),
            request_body=request.body,
            status=answer.status,
            reason=answer.reason,
            response_proto=answer.proto,
            response_headers=recorded_headers,
            response_body=body,
            content_length=answer.content_length,
            chunked=answer.chunked,
            decoded=answer.encoded,
            duration_ns=answer.duration_ns,
            event_offsets=offsets,
        )


def prepare_directory(directory: Path) -> None:
    """Make the directory new cassettes go to, and make sure it can be written, so a recording
    session fails at startup rather than at its first answer. Raises ValueError saying why."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".cassette-server-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"cannot record into {directory}: {error.strerror or error}; make it a directory the "
                         "server can write (the Docker image runs as uid 10001: chown -R 10001 the mounted "
                         "directory, and mount it without :ro)") from None


def _decoded_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """ASGI request headers as text: names in lower case, values as UTF-8 (latin-1 when not)."""
    headers = []
    for name, value in raw:
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("latin-1")
        headers.append((name.decode("latin-1").lower(), text))
    return headers


def _first(headers: list[tuple[str, str]]) -> Callable[[str], str | None]:
    def header(name: str) -> str | None:
        return next((value for key, value in headers if key == name), None)

    return header


def _encoded(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(header_bytes(name), header_bytes(value)) for name, value in headers]
