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
import math
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


class _Workload:
    """Requests sent in turn to one app, through ASGI with a fake receive and send."""

    def __init__(self, app, requests: Sequence[tuple[dict, bytes]], expect: int) -> None:
        self.app = app
        self.requests = requests
        self.expect = expect  # the status every answer must have (a hit is not timed as a miss)
        self._never = asyncio.Event()

    def _receiver(self, body: bytes):
        """Like a server: the body once, then nothing until the client would leave."""
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await self._never.wait()
            return {"type": "http.disconnect"}

        return receive

    async def check(self) -> None:
        statuses: list[int] = []

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        for scope, body in self.requests:
            await self.app(scope, self._receiver(body), send)
        if set(statuses) != {self.expect}:
            raise RuntimeError(f"in-process answers had status {sorted(set(statuses))}, expected {self.expect}")

    async def round(self, seconds: float) -> float:
        """Microseconds per request over about ``seconds``."""

        async def send(message: dict) -> None:
            pass

        done = 0
        began = time.perf_counter()
        while (elapsed := time.perf_counter() - began) < seconds:
            for scope, body in self.requests:
                await self.app(scope, self._receiver(body), send)
            done += len(self.requests)
        return elapsed / done * 1e6


async def _best_of_rounds(workloads: Sequence[_Workload], budget: float) -> list[float]:
    """Microseconds per request for each workload: the best of ``ROUNDS`` rounds, the rounds of
    all workloads interleaved, so a busy moment of the machine does not favour one of them."""
    for workload in workloads:
        await workload.check()
    best = [math.inf] * len(workloads)
    for _ in range(ROUNDS):
        for position, workload in enumerate(workloads):
            best[position] = min(best[position], await workload.round(budget / ROUNDS / len(workloads)))
    return best


def per_request_us(app, case: Case, budget: float) -> float:
    """Microseconds per request for one benchmark case."""
    workload = _Workload(app, [(_scope(case.method, case.path), case.body)], case.answer.status if case.answer else 404)
    return asyncio.run(_best_of_rounds([workload], budget))[0]


def lookup_us(corpora: dict[int, Path], budget: float) -> dict[int, float]:
    """Microseconds per hit for each corpus size, cycling over up to ``DISTINCT_REQUESTS``
    recordings spread evenly over the corpus (not one hot entry). Every app is built first, then
    their rounds are interleaved."""
    workloads = []
    for size, corpus in corpora.items():
        step = max(1, size // DISTINCT_REQUESTS)
        requests = [(_scope("POST", CORPUS_PATH), corpus_request(number)) for number in range(0, size, step)]
        workloads.append(_Workload(build_app(corpus), requests, 200))
    try:
        return dict(zip(corpora, asyncio.run(_best_of_rounds(workloads, budget * len(workloads)))))
    finally:
        workloads.clear()
        gc.collect()
