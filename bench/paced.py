"""Paced streams: how late each event arrives against the recorded schedule, with many streams
at once. The client is raw asyncio sockets in worker processes of its own (never inside the
server), so its timing is the wire's.

Stream ``i`` of N is started at ``start + i / N * spread`` (N streams over ``spread`` seconds).
Each stream connects at its start; "sent" is the moment just before its request is written, and

    headers lateness = headers arrival - (sent + recorded duration)
    event lateness   = event arrival   - (sent + recorded duration + recorded event offset)

An event has arrived when the de-chunked body reaches the event's last byte; the whole body must
equal the recorded one. Negative header lateness means headers came early (a bug). Each worker
also measures its own event-loop lag (a 5 ms timer's lateness): when it is close to the lateness
measured, the client, not the server, is the bottleneck.

Run by run.py as ``python bench/paced.py`` with a JSON job on stdin; prints a JSON result.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from fixtures import Case
from peers import raise_fd_limit

LAG_PROBE = 0.005  # seconds between the worker's own loop-lag samples


class Stream(asyncio.Protocol):
    """One request and the arrival times of its answer's headers and events."""

    def __init__(self, request: bytes, event_ends: list[int], expected: bytes, done: asyncio.Future) -> None:
        self.request = request
        self.event_ends = event_ends  # position in the body where each event ends
        self.expected = expected
        self.done = done
        self.sent = 0.0
        self.headers_at: float | None = None
        self.event_at: list[float] = []
        self.status = 0
        self.body = bytearray()
        self._buffer = bytearray()
        self._chunked = False
        self._length = -1  # Content-Length, when the body is not chunked
        self._finished = False  # the last chunk came
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self.sent = time.monotonic()  # before the write: the server cannot have it earlier
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self._buffer += data
        if self.headers_at is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.headers_at = now
            lines = bytes(self._buffer[:end]).decode("latin-1").lower().split("\r\n")
            self.status = int(lines[0].split(" ", 2)[1])
            fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
            self._chunked = fields.get("transfer-encoding", "").strip() == "chunked"
            self._length = int(fields.get("content-length", "-1"))
            del self._buffer[: end + 4]
        if self._chunked:
            self._dechunk()
        else:
            self.body += self._buffer
            self._buffer.clear()
        while len(self.event_at) < len(self.event_ends) and len(self.body) >= self.event_ends[len(self.event_at)]:
            self.event_at.append(now)
        complete = self._finished if self._chunked else 0 <= self._length <= len(self.body)
        if complete:
            self._finish()

    def _dechunk(self) -> None:
        while True:
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                return
            size = int(bytes(self._buffer[:line_end]).split(b";")[0], 16)
            if len(self._buffer) < line_end + 2 + size + 2:
                return
            start = line_end + 2
            self.body += self._buffer[start : start + size]
            del self._buffer[: start + size + 2]
            if size == 0:
                self._finished = True
                return

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if self._transport is not None:
            self._transport.close()

    def failure(self) -> str | None:
        """Why this stream does not count (None: it got the recorded answer)."""
        if self.sent == 0.0:
            return "could not connect"
        if self.headers_at is None:
            return "no answer"
        if self.status != 200:
            return f"status {self.status}"
        if bytes(self.body) != self.expected:
            return f"body of {len(self.body)} B is not the recorded one"
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def http_request(case: Case, port: int) -> bytes:
    head = [f"{case.method} {case.path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(case.body)}"]
    head += [f"{name}: {value}" for name, value in case.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + case.body


async def _lag_probe(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        due = time.monotonic() + LAG_PROBE
        await asyncio.sleep(LAG_PROBE)
        lags.append(time.monotonic() - due)


async def _one(loop: asyncio.AbstractEventLoop, port: int, stream: Stream, at: float) -> Stream:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    try:
        await loop.create_connection(lambda: stream, "127.0.0.1", port)
        await asyncio.wait_for(stream.done, timeout=60)
    except (OSError, asyncio.TimeoutError):
        pass
    return stream


async def run_worker(job: dict) -> dict:
    """Run this worker's share of the streams; returns lateness samples (seconds) and counts."""
    loop = asyncio.get_running_loop()
    request = bytes.fromhex(job["request"])
    expected = bytes.fromhex(job["expected"])
    ends = job["event_ends"]
    count, workers, worker = job["streams"], job["workers"], job["worker"]
    lags: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.ensure_future(_lag_probe(lags, stop))
    streams = [Stream(request, ends, expected, loop.create_future()) for _ in range(worker, count, workers)]
    starts = [job["start"] + index / count * job["spread"] for index in range(worker, count, workers)]
    finished = await asyncio.gather(*(_one(loop, job["port"], stream, at) for stream, at in zip(streams, starts)))
    stop.set()
    await probe
    headers: list[float] = []
    events: list[float] = []
    failures: Counter[str] = Counter()
    for stream in finished:
        failure = stream.failure()
        if failure:
            failures[failure] += 1
            continue
        headers.append(stream.headers_at - (stream.sent + job["duration"]))
        events += [at - (stream.sent + job["duration"] + offset) for at, offset in zip(stream.event_at, job["offsets"])]
    return {"headers": headers, "events": events, "failures": failures, "lag": lags}


@dataclass(frozen=True)
class PacedResult:
    streams: int
    failures: dict[str, int]  # why streams failed: no connection, no 200, not the recorded bytes, no answer in 60 s
    headers_early: int
    headers_earliest_ms: float  # the smallest header lateness (negative: early)
    headers_p99_ms: float
    p50_ms: float  # event lateness
    p99_ms: float
    max_ms: float
    client_lag_p99_ms: float  # the client's own event-loop lag: the client's share of lateness
    client_lag_max_ms: float
    steal_percent: float  # CPU time the hypervisor gave to other guests during the run (NaN: not Linux)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (NaN when there is nothing)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) CPU ticks since boot, from Linux's /proc/stat; None elsewhere. Steal is time a
    virtual machine's CPUs were ready to run but the host ran another guest: on a shared VM it is
    the usual reason for lateness that neither server nor client caused."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_percent(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float:
    if before is None or after is None or after[1] <= before[1]:
        return math.nan
    return 100 * (after[0] - before[0]) / (after[1] - before[1])


def measure(case: Case, port: int, streams: int, *, workers: int, spread: float = 1.0) -> PacedResult:
    """Start ``workers`` client processes sharing ``streams`` streams started over ``spread`` s."""
    answer = case.answer
    assert answer is not None and answer.events is not None and answer.event_offsets is not None
    ends = [sum(len(event) for event in answer.events[: position + 1]) for position in range(len(answer.events))]
    processes = [subprocess.Popen([sys.executable, str(Path(__file__).resolve())], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    for process in processes:  # every worker has started its interpreter and imported what it needs
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a paced client worker did not start (status {process.wait()})")
    ticks = cpu_ticks()
    start = time.monotonic() + 0.1  # CLOCK_MONOTONIC is one clock for every process on the machine
    for worker, process in enumerate(processes):
        job = {"request": http_request(case, port).hex(), "expected": answer.body.hex(), "event_ends": ends,
               "offsets": list(answer.event_offsets), "duration": answer.duration, "port": port, "streams": streams,
               "workers": workers, "worker": worker, "start": start, "spread": spread}
        assert process.stdin is not None
        process.stdin.write(json.dumps(job))
        process.stdin.close()
    parts = []
    for process in processes:
        assert process.stdout is not None
        output = process.stdout.read()
        if process.wait() != 0:
            raise RuntimeError(f"a paced client worker failed (status {process.returncode})")
        parts.append(json.loads(output))
    steal = steal_percent(ticks, cpu_ticks())
    headers = [value for part in parts for value in part["headers"]]
    events = [value for part in parts for value in part["events"]]
    lags = [value for part in parts for value in part["lag"]]
    return PacedResult(
        streams=streams,
        failures=dict(sum((Counter(part["failures"]) for part in parts), Counter())),
        headers_early=sum(1 for value in headers if value < 0),
        headers_earliest_ms=min(headers, default=math.nan) * 1000,
        headers_p99_ms=percentile(headers, 0.99) * 1000,
        p50_ms=percentile(events, 0.50) * 1000,
        p99_ms=percentile(events, 0.99) * 1000,
        max_ms=max(events, default=math.nan) * 1000,
        client_lag_p99_ms=percentile(lags, 0.99) * 1000,
        client_lag_max_ms=max(lags, default=math.nan) * 1000,
        steal_percent=steal,
    )


def _worker_main() -> None:
    raise_fd_limit()
    print("ready", flush=True)
    job = json.loads(sys.stdin.read())
    try:
        import uvloop
    except ImportError:  # the plain asyncio loop works too, a little slower
        result = asyncio.run(run_worker(job))
    else:
        result = uvloop.run(run_worker(job))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    _worker_main()
