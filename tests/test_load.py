"""Load on a live uvicorn (loopback only): 1,000 clients that leave in the middle of a paced SSE
stream. Afterwards the server's event loop holds no task more than before, its memory is back
near where it was, it is healthy, and the journal says how each stream ended.

Covered elsewhere on a live server: 200 concurrent identical requests served each recording
once, in order, a quarter of the clients leaving during the header delay
(test_live.test_concurrent_identical_requests_get_each_recording_once); SIGTERM during streams,
which end within the grace period, the process exiting 0
(test_shutdown.test_sigterm_lets_a_stream_in_flight_finish_byte_exact); misses that do not hold
up streams (test_live); the memory after a storm of big misses (test_memory.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from server import Settings, create_app

from .conftest import interaction, running
from .test_memory import resident_mb

CLIENTS = 1000
AT_ONCE = 250  # connections open together (a CI runner's file descriptors, and this machine's two cores)
# 60 events 0.1 s apart: six seconds, so that a client slowed down by a busy machine (the clients
# share this process with the server) still leaves in the middle
EVENTS = [f'data: {{"n":{n}}}\n\n'.encode() for n in range(60)] + [b"data: [DONE]\n\n"]
BODY = interaction()["request"]["body"].encode()


class LoopSpy:
    """The app, noting the event loop it runs on (the server's, in its own thread)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)


def tasks_on(loop: asyncio.AbstractEventLoop) -> int:
    """How many tasks the server's loop holds, counted on that loop (not this one's)."""
    async def count() -> int:
        return len(asyncio.all_tasks()) - 1  # not this one

    return asyncio.run_coroutine_threadsafe(count(), loop).result(timeout=10)


async def leave_mid_stream(port: int, done: list[bytes]) -> None:
    """Ask for the stream, read its headers and first event, and close the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
    received = b""
    while EVENTS[0] not in received:
        chunk = await asyncio.wait_for(reader.read(65536), timeout=30)
        assert chunk, received
        received += chunk
    writer.close()
    await writer.wait_closed()
    done.append(received.split(b"\r\n", 1)[0])


async def storm(port: int) -> list[bytes]:
    done: list[bytes] = []
    gate = asyncio.Semaphore(AT_ONCE)

    async def one() -> None:
        async with gate:
            await leave_mid_stream(port, done)

    await asyncio.gather(*(one() for _ in range(CLIENTS)))
    return done


def test_a_thousand_clients_leaving_mid_stream_leave_nothing_behind(write_cassette, cassette_dir: Path) -> None:
    write_cassette("s", interaction(response_body=b"".join(EVENTS).decode(), content_type="text/event-stream"))
    spy = LoopSpy(create_app(Settings(paths=(cassette_dir,), event_interval=0.1, journal_size=CLIENTS + 10)))
    with running(spy) as url, httpx.Client(timeout=30) as client:
        port = int(url.rsplit(":", 1)[1])
        with client.stream("POST", url + "/v1/chat/completions", content=BODY, headers={"X-Replay-Speed": "0"}) as first:
            assert b"".join(first.iter_raw()) == b"".join(EVENTS)  # warmed up: a whole stream went through
        assert spy.loop is not None
        before_tasks, before_mb = tasks_on(spy.loop), resident_mb(os.getpid())
        started = time.monotonic()
        statuses = asyncio.run(storm(port))
        took = time.monotonic() - started
        assert statuses == [b"HTTP/1.1 200 OK"] * CLIENTS
        deadline = time.monotonic() + 30
        while True:  # each stream ends when the server notices its client left (at once, or at its next event)
            journal = client.get(url + "/__admin/requests?limit=2000").json()
            left = [entry for entry in journal if entry["outcome"] == "client_left_mid_stream"]
            if len(left) == CLIENTS and tasks_on(spy.loop) <= before_tasks or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        outcomes = Counter((entry["status"], entry["outcome"]) for entry in journal)
        assert len(left) == CLIENTS, outcomes
        assert all(entry["status"] == 200 and 1 <= entry["pieces_sent"] < len(EVENTS) for entry in left)
        assert tasks_on(spy.loop) <= before_tasks, "tasks left behind on the server's loop"
        assert client.get(url + "/__admin/health").json()["status"] == "ok"
        with client.stream("POST", url + "/v1/chat/completions", content=BODY, headers={"X-Replay-Speed": "0"}) as again:
            assert b"".join(again.iter_raw()) == b"".join(EVENTS)
        after_mb = resident_mb(os.getpid())
    assert after_mb < before_mb + 40, (before_mb, after_mb)  # this process: the server and its 1,000 clients
    print(f"1,000 clients left mid-stream in {took:.1f} s; tasks {before_tasks} before and after; "
          f"resident {before_mb:.0f} → {after_mb:.0f} MB")
