"""Everything one run measured, printed as Markdown tables, the issue's targets as ratios with
PASS/FAIL, and a line saying which machine and versions produced the figures."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from inprocess import DISTINCT_REQUESTS, ROUNDS
from load import LoadResult, wrk_version
from paced import PacedResult
from peers import BARE, CASSETTE_SERVER, WIREMOCK, wiremock_version
from startup import ColdLoad, Startup

LOOKUP_FLAT = 1.5  # "flat": the largest corpus costs at most this many times the smallest per hit


@dataclass
class Results:
    """What the run measured (fields stay empty for the cases not run)."""

    mode: str
    seconds: float  # wrk duration per case and server
    warmup: float = 0.0  # wrk seconds per case before timing
    wiremock_warmup: float = 0.0  # WireMock's extra warm-up, over its cases
    wiremock_flags_used: str = ""
    startup_repeats: int = 1
    paced_workers: int = 1
    throughput: dict[str, dict[str, LoadResult]] = field(default_factory=dict)  # case → server → best wrk round
    throughput_rounds: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # case → server → req/s of each
    case_sizes: dict[str, str] = field(default_factory=dict)  # case → what its answer is
    paced: list[tuple[str, PacedResult]] = field(default_factory=list)  # (server, the round that counts)
    paced_rounds: list[tuple[str, PacedResult]] = field(default_factory=list)  # (server, result) of every round, in order
    startup: dict[str, Startup] = field(default_factory=dict)  # "server, corpus" → startup
    rss_after_load: dict[str, float] = field(default_factory=dict)  # server → MiB, idle again after the load cases
    parse_s: float | None = None
    corpus_size: int = 0
    cold: dict[str, ColdLoad] = field(default_factory=dict)
    inprocess_us: dict[str, float] = field(default_factory=dict)
    lookup_us: dict[int, float] = field(default_factory=dict)
    wiremock_flags: dict[str, LoadResult] = field(default_factory=dict)
    mismatches: dict[str, str] = field(default_factory=dict)  # "case / server" → how the answer differed
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        data = asdict(self)
        data["paced"] = [{"server": server, **asdict(result)} for server, result in self.paced]
        data["paced_rounds"] = [{"server": server, **asdict(result)} for server, result in self.paced_rounds]
        return data


@dataclass(frozen=True)
class Target:
    what: str
    measured: str
    passed: bool | None  # None: not measured in this run


def machine(wiremock_jar: Path | None) -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    versions = [f"Python {platform.python_version()}"]
    for package in ("uvicorn", "uvloop", "httptools"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"no {package}")
    versions.append(wrk_version())
    if wiremock_jar is not None:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
        versions.append(f"WireMock {wiremock_version(wiremock_jar)} ({java[0] if java else 'java'})")
    else:
        versions.append("no WireMock (needs java and npm)")
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, {model}; {', '.join(versions)}; load average {load:.2f} at the start"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


def render(results: Results) -> str:
    """Every section that has figures, each with a line on what its numbers mean."""
    sections = (_throughput, _paced, _startup, _first_seconds, _in_process, _wiremock_flags)
    return "\n\n".join(text for section in sections if (text := section(results)))


def _throughput(results: Results) -> str:
    if not results.throughput:
        return ""
    rows = []
    for case, servers in results.throughput.items():
        mine = servers[CASSETTE_SERVER].requests_per_second if CASSETTE_SERVER in servers else None
        for server, load in servers.items():
            problems = ["no request completed"] if not load.requests else []
            problems += [f"{load.errors} socket errors"] if load.errors else []
            problems += [f"{load.unexpected_status} non-2xx"] if load.unexpected_status else []
            completed = bool(load.requests)  # wrk prints latencies of 0 when nothing completed
            rows.append([results.case_sizes.get(case, case), server, f"{load.requests_per_second:,.0f}",
                         _ms(load.p50_ms) if completed else "-", _ms(load.p99_ms) if completed else "-",
                         "" if server == CASSETTE_SERVER else _times(_ratio(mine, load.requests_per_second)),
                         ", ".join(problems)])
    return (
        f"### Throughput (wrk -t2 -c50 -d{results.seconds:g}s --latency, speed 0)\n\n"
        "One server is loaded at a time. cassette-server and the bare app run side by side and are timed in turn, "
        f"{_rounds(results)} in alternating order (A B, B A); each server's best round counts; WireMock runs alone "
        "afterwards. Each answered the recorded status, content-type and body bytes (a miss: "
        f"a 404) once before it was timed, then had {results.warmup:g} s of warm-up per case"
        + (f" (WireMock {results.wiremock_warmup:g} s more over its cases, for its JIT)"
           if results.wiremock_flags_used else "")
        + ". cassette-server runs as "
        "`serve DIR --speed 0` with every other option at its default (no access log: a summary line every 1,000 requests); "
        "the bare app on the same uvicorn settings without a log, its SSE both one send per event and one send "
        "in all"
        + (f"; WireMock with `{results.wiremock_flags_used}`, an SSE body whole (its free version cannot send "
           "events one by one)" if results.wiremock_flags_used else "")
        + ".\n\n"
        + _table(["case", "server", "req/s", "p50", "p99", "cassette-server ÷ this", "problems"], rows))


def _rounds(results: Results) -> str:
    counts = {len(rounds) for by_server in results.throughput_rounds.values() for rounds in by_server.values()}
    return f"{max(counts, default=1)} round(s)"


def _paced(results: Results) -> str:
    if not results.paced:
        return ""
    counted = {id(result) for _, result in results.paced}
    every = results.paced_rounds or results.paced
    rows = [[f"{result.streams:,}", server, "✓" if id(result) in counted else "", _ms(result.p50_ms),
             _ms(result.p99_ms), _ms(result.max_ms), _ms(result.headers_p99_ms),
             f"{result.headers_early} ({result.headers_earliest_ms:+.2f} ms)" if result.headers_early else "0",
             ", ".join(f"{count} {why}" for why, count in result.failures.items()) or "0",
             _ms(result.client_lag_p99_ms), "-" if math.isnan(result.steal_percent) else f"{result.steal_percent:.1f} %"]
            for server, result in sorted(every, key=lambda pair: pair[1].streams)]
    rounds = len(every) // len(results.paced)
    return (
        "### Paced streams (speed 1: 20 events 50 ms apart, headers after 100 ms; started over 1 s)\n\n"
        "Lateness = arrival − (request sent + recorded offset), over every event of every stream; headers early: "
        "how many came before their recorded delay (and the earliest). Each number of streams runs against the two "
        f"servers in turn, {rounds} round(s) in alternating order (A B, B A), both up; each server's round with the "
        "lower p99 counts (✓), as the best round does for throughput, and a header early or a failed stream in any "
        "round fails its target. The client runs in "
        f"{results.paced_workers} process(es) of its own; its loop lag is how late its own 5 ms timer fires: when "
        "that nears the lateness, the client is the bottleneck. Steal: the share of the machine's CPU time its "
        "hypervisor gave to other guests during the round (/proc/stat), lateness neither server nor client caused.\n\n"
        + _table(["streams", "server", "counts", "p50", "p99", "max", "headers p99", "headers early", "failed",
                  "client loop lag p99", "steal"], rows))


def _startup(results: Results) -> str:
    if not (results.startup or results.parse_s is not None or results.rss_after_load):
        return ""
    rows = [[label, f"{startup.ready_s:.2f} s", f"{startup.idle_rss_mib:.0f} MiB"]
            for label, startup in results.startup.items()]
    rows += [[f"{server}, after the load cases", "-", f"{rss:.0f} MiB"]
             for server, rss in results.rss_after_load.items()]
    if results.parse_s is not None:
        rows.append([f"yaml.load(CSafeLoader) alone, {results.corpus_size:,} interactions",
                     f"{results.parse_s:.2f} s", "-"])
    method = (f"Ready: the median of {results.startup_repeats} start(s), the servers started in turn (the order "
              "alternating), one at a time. The bare app parses the same files with "
              "CSafeLoader before it listens; the parse alone runs in a fresh interpreter and counts neither the "
              "interpreter's start nor imports. " if results.startup else "")
    return ("### Startup (process start → health check 200) and idle memory (VmRSS)\n\n"
            f"{method}Idle RSS: 1 s after ready, or after the load cases above.\n\n"
            + _table(["server", "ready", "idle RSS"], rows))


def _first_seconds(results: Results) -> str:
    if not results.cold:
        return ""
    rows = [[server, f"{cold.ready_s:.2f} s", f"{cold.load.requests_per_second:,.0f}", _ms(cold.load.p99_ms)]
            for server, cold in results.cold.items()]
    return (f"### The first {results.seconds:g} s after start (JSON, wrk started at the first health 200)\n\n"
            + _table(["server", "ready", "req/s", "p99"], rows))


def _in_process(results: Results) -> str:
    if not (results.inprocess_us or results.lookup_us):
        return ""
    rows = [[case, f"{value:,.1f} µs"] for case, value in results.inprocess_us.items()]
    rows += [[f"hit in a corpus of {size:,}", f"{value:,.1f} µs"] for size, value in results.lookup_us.items()]
    return ("### In-process cost per request (the ASGI app, no uvicorn, no sockets)\n\n"
            f"The best of {ROUNDS} rounds, interleaved. A corpus hit cycles over up to {DISTINCT_REQUESTS:,} "
            "recordings spread over the corpus, not one hot entry; the flatness target compares the largest corpus "
            f"with the smallest that has {DISTINCT_REQUESTS:,} to cycle over.\n\n"
            + _table(["request", "per request"], rows))


def _wiremock_flags(results: Results) -> str:
    if not results.wiremock_flags:
        return ""
    rows = [[flags, f"{load.requests_per_second:,.0f}", _ms(load.p99_ms) if load.requests else "-"]
            for flags, load in results.wiremock_flags.items()]
    return (f"### WireMock flags (JSON, after {results.wiremock_warmup:g} s of warm-up each)\n\n"
            + _table(["flags", "req/s", "p99"], rows))


def targets(results: Results) -> list[Target]:
    """The issue's targets, each from figures of this run (None when a figure is missing)."""
    found: list[Target] = []
    rates = {case: {server: load.requests_per_second for server, load in servers.items()}
             for case, servers in results.throughput.items()}

    def rate_target(case: str, peer: str, at_least: float, label: str) -> None:
        if f"{case} / {CASSETTE_SERVER}" in results.mismatches:
            found.append(Target(f"{label} ≥ {at_least:g}× {peer}", "not byte-exact", False))
            return
        if rates.get(case, {}).get(peer) == 0:
            found.append(Target(f"{label} ≥ {at_least:g}× {peer}", f"{peer} completed no request", None))
            return
        ratio = _ratio(rates.get(case, {}).get(CASSETTE_SERVER), rates.get(case, {}).get(peer))
        found.append(Target(f"{label} ≥ {at_least:g}× {peer}", _times(ratio),
                            None if ratio is None else ratio >= at_least))

    rate_target("json", WIREMOCK, 1.2, "JSON req/s")
    rate_target("json", BARE, 0.8, "JSON req/s")
    rate_target("sse", WIREMOCK, 1.0, "SSE (speed 0) req/s, byte-exact,")
    paced = results.paced
    if f"paced / {CASSETTE_SERVER}" in results.mismatches:
        found.append(Target("paced streams: the recorded bytes", "not byte-exact", False))
    counts = sorted({result.streams for _, result in paced})
    for position, streams in enumerate(counts):
        mine = next((r for s, r in paced if s == CASSETTE_SERVER and r.streams == streams), None)
        bare = next((r for s, r in paced if s == BARE and r.streams == streams), None)
        if mine is None:
            continue
        every = [r for s, r in results.paced_rounds or paced if s == CASSETTE_SERVER and r.streams == streams]
        sound = all(not r.failures and r.headers_early == 0 for r in every)
        early = sum(r.headers_early for r in every)
        if position == 0:
            found.append(Target(f"paced, {streams:,} streams: p99 lateness ≤ 10 ms, headers never early, no failures",
                                f"p99 {_ms(mine.p99_ms)}, {early} early", sound and mine.p99_ms <= 10))
        else:
            ratio = mine.p99_ms / bare.p99_ms if bare and bare.p99_ms > 0 else None
            found.append(Target(f"paced, {streams:,} streams: p99 lateness ≤ 1.5× bare ASGI, headers never early",
                                f"{_times(ratio)} ({_ms(mine.p99_ms)} vs {_ms(bare.p99_ms) if bare else '-'}), "
                                f"{early} early", None if ratio is None else sound and ratio <= 1.5))
    corpus = f"{results.corpus_size:,} interactions"
    mine_start = results.startup.get(f"{CASSETTE_SERVER}, {corpus}")
    bare_start = results.startup.get(f"{BARE}, {corpus}")
    ratio = _ratio(mine_start.ready_s if mine_start else None, bare_start.ready_s if bare_start else None)
    parse_ratio = _ratio(mine_start.ready_s if mine_start else None, results.parse_s)
    found.append(Target(f"startup with {corpus} ≤ 1.1× the bare app (uvicorn + CSafeLoader parse of the same files)",
                        f"{_times(ratio)} (the parse alone: {_times(parse_ratio)})",
                        None if ratio is None else ratio <= 1.1))
    # Compared with the smallest corpus that has as many distinct requests to cycle over as the
    # largest: a corpus of 1 answers one hot request, which flatters it.
    sizes = sorted(results.lookup_us)
    base = next((size for size in sizes if size >= DISTINCT_REQUESTS), sizes[0]) if sizes else 0
    flat = _ratio(results.lookup_us[sizes[-1]], results.lookup_us[base]) if sizes else None
    among = f" ({sizes[-1]:,} vs {base:,} interactions)" if sizes else ""
    found.append(Target(f"lookup flat: a hit in the largest corpus ≤ {LOOKUP_FLAT:g}× one in a small one{among}",
                        _times(flat), None if flat is None else flat <= LOOKUP_FLAT))
    mine_rss = results.startup.get(f"{CASSETTE_SERVER}, benchmark cassette")
    wiremock_rss = results.startup.get(f"{WIREMOCK}, the same stubs")
    ratio = _ratio(mine_rss.idle_rss_mib if mine_rss else None, wiremock_rss.idle_rss_mib if wiremock_rss else None)
    after = _ratio(results.rss_after_load.get(CASSETTE_SERVER), results.rss_after_load.get(WIREMOCK))
    # The table compares "RSS after load" (WireMock 739 MB: after wrk's load, not after
    # reading two stubs), so the target is the idle RSS once the load cases are over; just
    # started, no CPython server is near a tenth of an idle JVM (the bare app alone is ~1/3).
    found.append(Target("idle RSS after the load cases ≤ 1/10 of WireMock's",
                        f"{_times(after)} (just started: {_times(ratio)})",
                        None if after is None else after <= 0.1))
    return found


def render_targets(found: list[Target]) -> str:
    rows = [["PASS" if target.passed else "not run" if target.passed is None else "FAIL", target.what, target.measured]
            for target in found]
    return "### Targets\n\n" + _table(["", "target", "measured"], rows)
