"""Stopping a server, on a real socket: streams in flight finish within uvicorn's grace period
(like every other reply), and a server stopped in a process leaves nothing behind that breaks
the next one (test suites and plugins start servers one after another in one process).
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier

import httpx

from server import Settings, create_app
from server.cli import UVICORN_OPTIONS

from .conftest import interaction, running_server
from .test_cli import server as server_process

EVENTS = [f'data: {{"n":{n}}}\n\n'.encode() for n in range(5)] + [b"data: [DONE]\n\n"]
BODY = interaction()["request"]["body"]


def streamed(url: str) -> list[bytes]:
    """The pieces of one streamed reply, as they arrived."""
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url + "/v1/chat/completions", content=BODY) as response:
            assert response.status_code == 200
            return list(response.iter_raw())


def test_a_server_started_after_one_stopped_by_sigterm_still_streams(write_cassette, cassette_dir: Path) -> None:
    write_cassette("s", interaction(response_body=b"".join(EVENTS).decode(), content_type="text/event-stream"))
    settings = Settings(paths=(cassette_dir,), event_interval=0.01)  # paced: the event-by-event path
    with running_server(create_app(settings)) as (url, first):
        assert streamed(url) == EVENTS
        first.handle_exit(signal.SIGTERM, None)  # what uvicorn's signal handler does on SIGTERM
    assert first.should_exit
    with running_server(create_app(settings)) as (url, _):
        # sse-starlette kept a process-wide "exiting" flag set by the first server's SIGTERM and
        # cut this reply after its headers ("incomplete chunked read")
        assert streamed(url) == EVENTS


def test_sigterm_lets_a_stream_in_flight_finish_byte_exact(write_cassette, cassette_dir: Path) -> None:
    offsets = [0.0, 0.3, 0.6, 0.9, 1.2, 1.5]
    write_cassette("s", interaction(response_body=b"".join(EVENTS).decode(), content_type="text/event-stream",
                                    event_offsets=offsets))
    grace = UVICORN_OPTIONS["timeout_graceful_shutdown"]
    with server_process(str(cassette_dir)) as (url, process):
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", url + "/v1/chat/completions", content=BODY) as response:
                pieces = response.iter_raw()
                received = [next(pieces)]
                process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                received += pieces
                finished = time.monotonic() - signalled
        assert process.wait(timeout=grace + 5) == 0
    assert received == EVENTS  # nothing cut, nothing added
    assert finished < grace  # the rest came at the recorded offsets, not at the end of the grace


def test_sigterm_with_many_streams_in_flight_ends_each_cleanly_and_exits_0(write_cassette, cassette_dir: Path) -> None:
    """Twenty streams at once, the signal after each has its first event: every one finishes
    byte-exact at its recorded pace, then the process exits 0, all within the grace period."""
    offsets = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    write_cassette("s", interaction(response_body=b"".join(EVENTS).decode(), content_type="text/event-stream",
                                    event_offsets=offsets))
    grace = UVICORN_OPTIONS["timeout_graceful_shutdown"]
    count = 20
    first_events = Barrier(count + 1, timeout=30)

    def stream(url: str) -> list[bytes]:
        with httpx.Client(timeout=30) as client, client.stream("POST", url + "/v1/chat/completions", content=BODY) as reply:
            pieces = reply.iter_raw()
            received = [next(pieces)]
            first_events.wait()
            return received + list(pieces)

    with server_process(str(cassette_dir)) as (url, process), ThreadPoolExecutor(count) as pool:
        streams = [pool.submit(stream, url) for _ in range(count)]
        first_events.wait()
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert [future.result(timeout=grace + 5) for future in streams] == [EVENTS] * count
        assert process.wait(timeout=grace + 5) == 0
        assert time.monotonic() - signalled < grace
