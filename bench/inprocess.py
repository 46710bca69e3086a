"""The replay handler's own cost per request, without uvicorn or sockets: the part this project
controls, and the way to see whether a lookup stays flat as the corpus grows.

The app is built as ``serve --speed 0`` builds it (``create_app(Settings(paths=..., speed=0))``,
every other setting at its default, so the journal is on) and called through ASGI with a fake
receive (the body once, then nothing until the client would leave) and a send that drops the
messages. Going through the ASGI callable rather than the service's lookup keeps this working
while the service's API changes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from fixtures import CORPUS_PATH, Case, corpus_request

ROOT = Path(__file__).resolve().parent.parent
DISTINCT_REQUESTS = 1000  # lookups cycle over this many recordings spread over the corpus
ROUNDS = 5


def build_app(directory: Path):
    """The app ``cassette-server serve DIRECTORY --speed 0`` would serve (its logger silenced:
    a miss warns, and the terminal is not what is measured)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from server import Settings, create_app

    logging.getLogger("cassette_server").disabled = True
    return create_app(Settings(paths=(directory,), speed=0.0))


def _scope(method: str, path: str) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
            "raw_path": path.encode(), "query_string": b"", "scheme": "http", "root_path": "",
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
            "headers": [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json")]}


async def _time_requests(app, requests: Sequence[tuple[dict, bytes]], budget: float, expect: int) -> float:
    """Microseconds per request, calling the app over ``requests`` in turn: the best of ``ROUNDS``
    rounds of ``budget / ROUNDS`` seconds each (the least disturbed by the rest of the machine).
    A first pass must answer with status ``expect`` (a hit is not timed as a miss)."""
    never = asyncio.Event()
    statuses: list[int] = []

    def receiver(body: bytes):
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await never.wait()
            return {"type": "http.disconnect"}

        return receive

    async def checked_send(message: dict) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def send(message: dict) -> None:
        pass

    for scope, body in requests:
        await app(scope, receiver(body), checked_send)
    if set(statuses) != {expect}:
        raise RuntimeError(f"in-process answers had status {sorted(set(statuses))}, expected {expect}")
    rounds = []
    for _ in range(ROUNDS):
        done = 0
        began = time.perf_counter()
        while (elapsed := time.perf_counter() - began) < budget / ROUNDS:
            for scope, body in requests:
                await app(scope, receiver(body), send)
            done += len(requests)
        rounds.append(elapsed / done * 1e6)
    return min(rounds)


def per_request_us(app, case: Case, budget: float) -> float:
    """Microseconds per request for one benchmark case."""
    expect = case.answer.status if case.answer else 404
    return asyncio.run(_time_requests(app, [(_scope(case.method, case.path), case.body)], budget, expect))


def lookup_us(corpus: Path, size: int, budget: float) -> float:
    """Microseconds per hit with a corpus of ``size`` interactions, cycling over up to
    ``DISTINCT_REQUESTS`` recordings spread evenly over it (not one hot entry)."""
    app = build_app(corpus)
    step = max(1, size // DISTINCT_REQUESTS)
    requests = [(_scope("POST", CORPUS_PATH), corpus_request(number)) for number in range(0, size, step)]
    try:
        return asyncio.run(_time_requests(app, requests, budget, 200))
    finally:
        del app
        gc.collect()
