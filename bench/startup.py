"""What a server costs before and just after it starts: time until its health check answers,
resident memory once idle, and throughput in the first seconds (CI jobs are short; a JVM is
still compiling then).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fixtures import Case
from load import LoadResult, run_wrk
from peers import Peer

IDLE_SETTLE = 1.0  # seconds between "ready" and reading RSS, so start-up garbage can be collected

# Only the parse: read every cassette file and load it with PyYAML's C loader, nothing else.
_PARSE = """\
import sys, time, pathlib, yaml
began = time.perf_counter()
for file in sorted(pathlib.Path(sys.argv[1]).rglob("*.yaml")):
    yaml.load(file.read_bytes(), Loader=yaml.CSafeLoader)
print(time.perf_counter() - began)
"""


@dataclass(frozen=True)
class Startup:
    ready_s: float  # median seconds from process start to the first 200 from the health check
    idle_rss_mib: float  # VmRSS once ready and idle


@dataclass(frozen=True)
class ColdLoad:
    ready_s: float
    load: LoadResult  # wrk started the moment the server was ready


def measure_in_turn(makers: dict[str, Callable[[], Peer]], repeats: int) -> dict[str, Startup]:
    """Start each server ``repeats`` times, in turn (the order alternating), one at a time:
    each one's median time to ready, and its RSS on the last start. In turn, so a minute
    when the machine is slower counts against every server alike."""
    times: dict[str, list[float]] = {label: [] for label in makers}
    rss: dict[str, float] = {}
    labels = list(makers)
    for number in range(repeats):
        for label in labels if number % 2 == 0 else labels[::-1]:
            peer = makers[label]()
            try:
                times[label].append(peer.start())
                time.sleep(IDLE_SETTLE)
                rss[label] = peer.rss_mib()
            finally:
                peer.stop()
    return {label: Startup(statistics.median(times[label]), rss[label]) for label in labels}


def parse_seconds(directory: Path, repeats: int = 1) -> float:
    """Median seconds to parse every ``*.yaml`` under ``directory`` with yaml.CSafeLoader, in a
    fresh interpreter (the parse alone: no interpreter start, no imports)."""
    runs = [float(subprocess.run([sys.executable, "-c", _PARSE, str(directory)], capture_output=True, text=True,
                                 check=True).stdout) for _ in range(repeats)]
    return statistics.median(runs)


def cold_load(make_peer: Callable[[], Peer], case: Case, seconds: float, work: Path) -> ColdLoad:
    """Start a fresh process and load it with wrk as soon as its health check answers."""
    peer = make_peer()
    try:
        ready = peer.start()
        return ColdLoad(ready, run_wrk(peer.url(case.path), case, seconds, work))
    finally:
        peer.stop()
