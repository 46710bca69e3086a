"""The ceiling: the least an ASGI app on uvicorn can do to answer from the same cassette files.

    python bench/bare.py DIR --port P [--sse-sends event|whole]

It parses every ``*.yaml`` under DIR with PyYAML's C loader, keys each recorded answer by the
exact request (method, path, body bytes: no JSON normalisation, no sessions, no journal, no
near misses) and answers with the recorded bytes and headers. SSE bodies go out one send per
event (``--sse-sends event``, what a streaming replay must do) or in one send (``whole``). An
answer recorded with ``event_offsets`` (the paced case) is paced: headers at request arrival +
``duration``, each event at headers + its offset, with asyncio.sleep; every other answer is sent
at once (speed 0). An unknown request gets a fixed 404. uvicorn runs with the same loop, HTTP
parser and header settings as ``cassette-server serve``, without access log and without the
proxy-headers middleware (``serve`` turns it off; until 2026-12-03 the bare app kept it: 5 %
more instructions per JSON request, 133,123 against 126,329); and with the
garbage-collector settings ``serve`` uses (startup frozen, full collections rarer): left at the
defaults, a full collection in the first paced run after the load cases stalled its streams
by 30 to 50 ms, a handicap the ceiling should not have.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn
import yaml
from fixtures import split_events

HEALTH_PATH = "/__admin/health"
FULL_COLLECTION_AFTER = 100  # as server/memory.py
MISS = b'{"error":"no recorded answer"}'
_GO_DURATION = re.compile(r"([\d.]+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    pieces: tuple[bytes, ...]  # one send each
    delay: float = 0.0  # seconds from request to headers (only when paced)
    offsets: tuple[float, ...] | None = None  # seconds from headers to each piece; None: at once


def _seconds(value: object) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    return sum(float(number) * _UNITS[unit] for number, unit in _GO_DURATION.findall(str(value or "")))


def _reply(response: dict, sse_sends: str) -> Reply:
    body = (response.get("body") or "").encode()
    recorded = response.get("headers") or {}
    headers = [(name.lower().encode(), str(values[0]).encode()) for name, values in recorded.items()]
    streamed = any(name == b"content-type" and value.startswith(b"text/event-stream") for name, value in headers)
    if not streamed:
        return Reply(response["code"], headers + [(b"content-length", str(len(body)).encode())], (body,))
    pieces = (split_events(body) or (body,)) if sse_sends == "event" else (body,)
    offsets = response.get("event_offsets")
    if offsets is None or len(offsets) != len(pieces):
        return Reply(response["code"], headers, pieces)
    return Reply(response["code"], headers, pieces, _seconds(response.get("duration")), tuple(map(float, offsets)))


def load_table(directory: Path, sse_sends: str) -> dict[tuple[str, str, bytes], Reply]:
    table: dict[tuple[str, str, bytes], Reply] = {}
    for file in sorted(directory.rglob("*.yaml")):
        data = yaml.load(file.read_bytes(), Loader=yaml.CSafeLoader)
        for interaction in data["interactions"]:
            request = interaction["request"]
            key = (request["method"].upper(), urlsplit(request["url"]).path, (request.get("body") or "").encode())
            table.setdefault(key, _reply(interaction["response"], sse_sends))
    return table


class BareApp:
    def __init__(self, table: dict[tuple[str, str, bytes], Reply]) -> None:
        self.table = table

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        arrived = asyncio.get_running_loop().time()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        reply = self.table.get((scope["method"], scope["path"], body))
        if reply is None:
            status = 200 if scope["path"] == HEALTH_PATH else 404
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-length", str(len(MISS)).encode())]})
            await send({"type": "http.response.body", "body": MISS})
            return
        if reply.offsets is None:
            await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
            last = len(reply.pieces) - 1
            for position, piece in enumerate(reply.pieces):
                await send({"type": "http.response.body", "body": piece, "more_body": position < last})
            return
        await self._paced(reply, arrived, send)

    @staticmethod
    async def _paced(reply: Reply, arrived: float, send) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, arrived + reply.delay - loop.time()))
        await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
        started = loop.time()
        assert reply.offsets is not None
        for position, (piece, offset) in enumerate(zip(reply.pieces, reply.offsets)):
            wait = started + offset - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await send({"type": "http.response.body", "body": piece, "more_body": position < len(reply.pieces) - 1})

    @staticmethod
    async def _lifespan(receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sse-sends", choices=("event", "whole"), default="event")
    args = parser.parse_args()
    app = BareApp(load_table(args.directory, args.sse_sends))
    # As server/memory.py's freeze_startup_objects (not imported: its ctypes alone is 15 ms of startup).
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)
    # The same settings cassette-server gives uvicorn (loop and http "auto": uvloop, httptools; no
    # proxy-headers middleware), but its own protocol: uvicorn's.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                server_header=False, date_header=False, proxy_headers=False)


if __name__ == "__main__":
    main()
