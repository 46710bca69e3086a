"""Peer benchmark: cassette-server against a bare ASGI app (the ceiling) and WireMock.

    python bench/run.py [--quick] [--cases json,sse,miss,paced,cold,startup,inprocess,lookup]
                        [--json results.json]       (--help lists the cases and options)

Every server answers the same recorded bytes (checked before any timing). Prints Markdown
tables, the issue's targets as ratios with PASS/FAIL, and the machine the figures come from.
Needs wrk (installed with apt-get when missing and running as root); WireMock runs when Java is
there (its jar comes from the npm package ``wiremock``, installed into bench/.cache/). A full
run takes about 8 minutes on 2 cores; ``--quick`` (2 s per case, fewer streams, smaller corpora) about 4.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import fixtures
import inprocess
import load
import paced
import peers
import report
import startup
from fixtures import Case
from peers import Peer

CASES = {
    "json": "req/s and latency for a whole JSON body",
    "sse": "req/s and latency for an SSE stream at speed 0",
    "miss": "req/s and latency for a request nobody recorded",
    "paced": "lateness of events with many paced streams at speed 1",
    "cold": "req/s in the first seconds after start",
    "startup": "time to ready and idle memory, with a generated corpus",
    "inprocess": "the ASGI app's own cost per request",
    "lookup": "the cost of a hit against corpus size",
    "wiremock-flags": "WireMock's throughput with each candidate flag set (not run by default)",
}
ALL_CASES = tuple(name for name in CASES if name != "wiremock-flags")
LOAD_CASES = ("json", "sse", "miss")
ROUNDS = 2  # timed runs per load case and server, in turn; the best counts
WIREMOCK_FLAG_SETS = {
    "(defaults)": (),
    "--no-request-journal --disable-request-logging": peers.WIREMOCK_TUNED,
    "… + --container-threads 64": (*peers.WIREMOCK_TUNED, "--container-threads", "64"),
    "… + --async-response-enabled true": (*peers.WIREMOCK_TUNED, "--async-response-enabled", "true"),
}


@dataclass(frozen=True)
class Plan:
    """How long and how big, for a full run or a quick smoke run."""

    seconds: float  # wrk duration per case and server
    warmup: float  # wrk seconds per case before timing, for every server
    wiremock_warmup: float  # more for WireMock: its JIT needs ~45 s
    streams: tuple[int, ...]
    corpus: int  # interactions in the startup corpus
    lookup_sizes: tuple[int, ...]
    repeats: int  # startups measured per server, in turn (median)
    budget: float  # seconds per in-process measurement


FULL = Plan(10, 2, 45, (500, 1000, 2000), 10_000, (1, 100, 1_000, 10_000, 100_000), 5, 2.0)
QUICK = Plan(2, 1, 5, (50, 100, 200), 2_000, (1, 100, 1_000, 10_000), 1, 0.3)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run: its figures are not the targets'")
    parser.add_argument("--cases", default=",".join(ALL_CASES), help="comma-separated, from: " + "; ".join(
        f"{name}: {what}" for name, what in CASES.items()))
    parser.add_argument("--seconds", type=float, help="wrk seconds per case and server (default: 10, quick: 2)")
    parser.add_argument("--wiremock-warmup", type=float, metavar="SECONDS",
                        help="WireMock's warm-up before it is timed (default: 45, quick: 5)")
    parser.add_argument("--paced-workers", type=int, default=2, help="client processes for paced streams (default 2)")
    parser.add_argument("--no-wiremock", action="store_true", help="leave WireMock out even when Java is there")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure to FILE as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the generated fixtures and server logs")
    args = parser.parse_args(argv)
    args.cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; known: {', '.join(CASES)}")
    return args


class Bench:
    """One run: the fixtures in a temporary directory, the servers, and what was measured."""

    def __init__(self, work: Path, plan: Plan, jar: Path | None, paced_workers: int, results: report.Results) -> None:
        self.work = work
        self.plan = plan
        self.jar = jar
        self.paced_workers = paced_workers
        self.results = results
        self.logs = work / "logs"
        self.cases = fixtures.benchmark_cases()
        self.cassettes = fixtures.write_cassettes(self.cases, work / "cassettes")
        self.stubs = fixtures.write_wiremock_root(self.cases, work / "wiremock") if jar else None
        for case in self.cases.values():
            answer = case.answer
            events = f", {len(answer.events)} events" if answer and answer.events else ""
            size = f"{case.name.upper()} {len(answer.body):,} B{events}" if answer else "miss (404)"
            results.case_sizes[case.name] = size

    def say(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    # Servers answering the benchmark cassette.
    def cassette_server(self, directory: Path | None = None) -> Peer:
        return peers.cassette_server(directory or self.cassettes, self.logs)

    def bare(self, directory: Path | None = None, sse_sends: str = "event") -> Peer:
        return peers.bare(directory or self.cassettes, self.logs, sse_sends=sse_sends)

    def wiremock(self, flags: tuple[str, ...] = peers.WIREMOCK_TUNED, name: str = peers.WIREMOCK) -> Peer:
        assert self.jar is not None and self.stubs is not None
        return peers.wiremock(self.jar, self.stubs, self.logs, flags=flags, name=name)

    def served(self, case_names: list[str]) -> None:
        """The load cases and the paced streams. cassette-server and the bare app run side by side
        (a server that is not loaded uses no CPU) and are timed in turn, case by case, so a
        neighbour that slows the machine for a minute slows both; WireMock runs alone
        afterwards (a JVM keeps compiling in the background after its load)."""
        load_cases = [self.cases[name] for name in LOAD_CASES if name in case_names]
        makers: list[Callable[[], Peer]] = [self.cassette_server, self.bare]
        if "sse" in case_names:
            makers.append(lambda: self.bare(sse_sends="whole"))
        running: list[Peer] = []
        try:
            for make in makers:
                running.append(make())
                self.say(f"starting {running[-1].name}")
                running[-1].start()
            for case in load_cases:
                self.in_turn(case, [peer for peer in running if peer.name != peers.BARE_WHOLE or case.name == "sse"],
                             self.plan.warmup)
            if "paced" in case_names:
                self.paced(running[:2])  # cassette-server and the bare app (not its one-send variant)
            time.sleep(startup.IDLE_SETTLE)
            for peer in running:
                self.results.rss_after_load[peer.name] = peer.rss_mib()
        finally:
            for peer in running:
                peer.stop()
        if self.jar and load_cases:
            wiremock = self.wiremock()
            self.say(f"starting {wiremock.name}")
            wiremock.start()
            try:
                for case in load_cases:
                    self.in_turn(case, [wiremock], self.plan.warmup + self.plan.wiremock_warmup / len(load_cases))
                time.sleep(startup.IDLE_SETTLE)
                self.results.rss_after_load[wiremock.name] = wiremock.rss_mib()
            finally:
                wiremock.stop()

    def in_turn(self, case: Case, servers: list[Peer], warmup: float) -> None:
        """Warm each server up on ``case``, then time them in turn, ``ROUNDS`` rounds in
        alternating order (A B, B A, …); each server's best round counts."""
        ready = self.answering(case, servers)
        for peer in ready:
            self.say(f"{case.name}: {peer.name}: warm-up {warmup:.0f} s")
            load.run_wrk(peer.url(case.path), case, warmup, self.work)
        rounds: dict[str, list[load.LoadResult]] = {peer.name: [] for peer in ready}
        for number in range(ROUNDS):
            for peer in ready if number % 2 == 0 else ready[::-1]:
                self.say(f"{case.name}: {peer.name}: round {number + 1} of {ROUNDS}, {self.plan.seconds:g} s")
                rounds[peer.name].append(load.run_wrk(peer.url(case.path), case, self.plan.seconds, self.work))
        for name, timed in rounds.items():
            self.results.throughput.setdefault(case.name, {})[name] = max(timed, key=lambda run: run.requests_per_second)
            self.results.throughput_rounds.setdefault(case.name, {})[name] = [run.requests_per_second for run in timed]

    def answering(self, case: Case, servers: list[Peer]) -> list[Peer]:
        """The servers that answer ``case`` with the recorded bytes; the others are noted, not timed."""
        ready = []
        for peer in servers:
            problem = load.check_answer(peer.url(case.path), case)
            if problem:
                self.results.mismatches[f"{case.name} / {peer.name}"] = problem
                self.say(f"{case.name}: {peer.name} does not answer the recorded bytes ({problem}): not timed")
            else:
                ready.append(peer)
        return ready

    def paced(self, servers: list[Peer]) -> None:
        """Each number of streams against each server in turn, ``ROUNDS`` rounds in alternating
        order (A B, B A), as for the load cases: each server's round with the lower p99 counts, and
        every round is kept (a neighbour's burst in one round decides no target; a header sent
        early or a failed stream in any round still fails one)."""
        case = self.cases["paced"]
        ready = self.answering(case, servers)
        order = itertools.cycle([ready, ready[::-1]])
        for streams in self.plan.streams:
            rounds: dict[str, list[paced.PacedResult]] = {peer.name: [] for peer in ready}
            for number in range(ROUNDS):
                for peer in next(order):
                    self.say(f"paced: {streams} streams against {peer.name}, round {number + 1} of {ROUNDS}")
                    result = paced.measure(case, peer.port, streams, workers=self.paced_workers)
                    rounds[peer.name].append(result)
                    self.results.paced_rounds.append((peer.name, result))
                    time.sleep(1.0)  # let the last connections close before the next run
            for name, measured in rounds.items():
                self.results.paced.append((name, min(measured, key=lambda result: result.p99_ms)))

    def cold(self) -> None:
        """Fresh processes, loaded with wrk from the moment they answer (the JSON case)."""
        makers = {peers.CASSETTE_SERVER: self.cassette_server, peers.BARE: self.bare}
        if self.jar:
            makers[peers.WIREMOCK] = self.wiremock
        for name, make in makers.items():
            self.say(f"first {self.plan.seconds:g} s after start: {name}")
            self.results.cold[name] = startup.cold_load(make, self.cases["json"], self.plan.seconds, self.work)

    def startup(self) -> None:
        corpus = fixtures.write_corpus(self.work / "corpus", self.plan.corpus)
        size = f"{self.plan.corpus:,} interactions"
        makers = {
            f"{peers.CASSETTE_SERVER}, benchmark cassette": self.cassette_server,
            f"{peers.BARE}, benchmark cassette": self.bare,
            f"{peers.CASSETTE_SERVER}, {size}": lambda: self.cassette_server(corpus),
            f"{peers.BARE}, {size}": lambda: self.bare(corpus),
        }
        if self.jar:
            makers[f"{peers.WIREMOCK}, the same stubs"] = self.wiremock
        self.say(f"startup: {', '.join(makers)}, in turn, {self.plan.repeats} times each")
        self.results.startup.update(startup.measure_in_turn(makers, self.plan.repeats))
        self.results.parse_s = startup.parse_seconds(corpus, self.plan.repeats)

    def inprocess(self) -> None:
        app = inprocess.build_app(self.cassettes)
        for name in ("json", "sse", "miss"):
            self.say(f"in-process: {name}")
            self.results.inprocess_us[self.results.case_sizes[name]] = inprocess.per_request_us(
                app, self.cases[name], self.plan.budget)

    def lookup(self) -> None:
        sizes = self.plan.lookup_sizes
        self.say(f"lookup: loading corpora of {', '.join(f'{size:,}' for size in sizes)} interactions")
        corpora = {size: fixtures.write_corpus(self.work / f"lookup-{size}", size) for size in sizes}
        self.results.lookup_us.update(inprocess.lookup_us(corpora, self.plan.budget))

    def wiremock_flags(self) -> None:
        """WireMock's JSON throughput with each flag set, after the same warm-up: which is fastest."""
        for label, flags in WIREMOCK_FLAG_SETS.items():
            peer = self.wiremock(flags, name=f"WireMock {label}")
            try:
                self.say(f"WireMock {label}")
                peer.start()
                url = peer.url(self.cases["json"].path)
                load.run_wrk(url, self.cases["json"], self.plan.wiremock_warmup, self.work)
                self.results.wiremock_flags[label] = load.run_wrk(url, self.cases["json"], self.plan.seconds, self.work)
            finally:
                peer.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.seconds:
        plan = replace(plan, seconds=args.seconds)
    if args.wiremock_warmup is not None:
        plan = replace(plan, wiremock_warmup=args.wiremock_warmup)
    peers.raise_fd_limit()
    wanted = [case for case in CASES if case in args.cases]
    if any(case in LOAD_CASES + ("cold", "wiremock-flags") for case in wanted):
        load.ensure_wrk()
    jar = None if args.no_wiremock else peers.wiremock_jar()
    results = report.Results(
        mode="quick" if args.quick else "full", seconds=plan.seconds, warmup=plan.warmup,
        wiremock_warmup=plan.wiremock_warmup, wiremock_flags_used=" ".join(peers.WIREMOCK_TUNED) if jar else "",
        startup_repeats=plan.repeats, paced_workers=args.paced_workers, corpus_size=plan.corpus)
    work = Path(tempfile.mkdtemp(prefix="cassette-bench-"))
    machine = report.machine(jar)
    if jar is None:
        results.notes.append("WireMock was not run (--no-wiremock, no Java, or npm could not install it): "
                             "its targets are not run.")
    load_at_start = os.getloadavg()[0]
    if load_at_start > 0.5:
        results.notes.append(f"the machine was busy (load average {load_at_start:.2f} on {os.cpu_count()} cores at the "
                             "start): these figures are not meaningful; measure on a quiet machine.")
    failed = False
    ticks_at_start = paced.cpu_ticks()
    try:
        bench = Bench(work, plan, jar, args.paced_workers, results)
        for names, stage in _stages(bench, wanted):
            try:
                stage()
            except Exception as error:  # a server that will not start must not hide the other figures
                failed = True
                results.notes.append(f"{names}: did not complete: {error}")
                bench.say(f"{names}: did not complete: {error}")
    finally:
        if args.keep:
            print(f"fixtures and server logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    steal = paced.steal_percent(ticks_at_start, paced.cpu_ticks())
    if steal >= 1.0:  # on a shared VM, the time other guests took: lateness and req/s neither server caused
        results.notes.append(f"the hypervisor gave {steal:.1f} % of this machine's CPU time to other guests during "
                             "the run (steal, /proc/stat): the figures are lower and later than this machine can do.")
    print_report(results, machine)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, **results.as_json()}, indent=2, default=str))
    return 1 if failed else 0


def _stages(bench: Bench, wanted: list[str]) -> list[tuple[str, Callable[[], None]]]:
    """(what, how) for each stage of the run: the cases served by running servers go together."""
    served = [case for case in wanted if case in LOAD_CASES + ("paced",)]
    stages: list[tuple[str, Callable[[], None]]] = [(", ".join(served), lambda: bench.served(wanted))] if served else []
    return stages + [(case, getattr(bench, case.replace("-", "_"))) for case in wanted
                     if case not in served and (case != "wiremock-flags" or bench.jar)]


def print_report(results: report.Results, machine: str) -> None:
    print(f"## cassette-server peer benchmark ({results.mode} run)\n")
    print(f"Machine: {machine}; load average {os.getloadavg()[0]:.2f} at the end.")
    if results.mode == "quick":
        print("A quick run (short cases, fewer streams, smaller corpora) checks that the benchmark works; "
              "its figures are not the targets' conditions.")
    for note in results.notes:
        print(f"Note: {note}")
    for where, problem in results.mismatches.items():
        print(f"Not byte-exact, not timed: {where}: {problem}")
    print()
    print(report.render(results))
    print()
    print(report.render_targets(report.targets(results)))

if __name__ == "__main__":
    sys.exit(main())
