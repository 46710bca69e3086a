"""Instructions per request, counted by valgrind's callgrind: the one figure here that does not
move with what else the machine is doing (the same count twice, whatever the load next door).

    python bench/instructions.py [--seconds 20] [--case json]
    python bench/instructions.py --in-process [--case json]

cassette-server (``serve DIR --speed 0``, as bench/run.py starts it) and the bare ASGI app
(bench/bare.py) each run under callgrind on the benchmark's cassettes; wrk warms each up, then
the count is zeroed, wrk loads it for ``--seconds`` and the count is read: instructions in
the server's process (its threads and native code, not the kernel) divided by the requests
wrk saw answered. Needs valgrind (apt-get install valgrind) and wrk. About two minutes.

``--in-process`` counts the app's own share of a hit instead, without uvicorn, sockets or the
write itself: the app ``serve`` builds, called as serve's protocol calls it
(``headers_for_whole_body``, then ``answer_whole_request``) with the write to the connection
replaced by nothing; the process is run twice under callgrind, with 0 and with 20,000 requests
after 2,000 of warm-up, and the difference is divided by 20,000. About one minute.

Counts are not time: an interpreted instruction and a compiled one cost differently, so a
server can run fewer instructions and not answer faster (docs/performance.md, "Hits answered
without a task").
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fixtures
import load
import peers

WARMUP = 5.0
IN_PROCESS_REQUESTS = 20_000
IN_PROCESS_WARMUP = 2_000  # the journal full, as under load


def callgrind(peer: peers.Peer, out: Path) -> peers.Peer:
    """``peer``, run under callgrind writing its counts to ``out``.PID."""
    peer.command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", *peer.command]
    return peer


def instructions_per_request(peer: peers.Peer, case: fixtures.Case, seconds: float, work: Path, out: Path) -> float:
    peer.start(timeout=300)  # interpreted by valgrind: a start takes tens of seconds
    try:
        pid = peer.process.pid  # type: ignore[union-attr]
        load.run_wrk(peer.url(case.path), case, WARMUP, work)
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        timed = load.run_wrk(peer.url(case.path), case, seconds, work)
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
        time.sleep(1.0)  # the dump is written by the server's process
        dumps = sorted(out.parent.glob(f"{out.name}.{pid}.*"), key=lambda dump: dump.stat().st_mtime)
        if not dumps:
            raise RuntimeError(f"callgrind wrote no dump for {peer.name} in {out.parent}")
        for line in dumps[-1].read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1]) / timed.requests
        raise RuntimeError(f"no total in {dumps[-1]}")
    finally:
        peer.stop()


def drive_in_process(directory: Path, case: fixtures.Case, requests: int) -> None:
    """Answer ``requests`` hits of ``case`` in this process, as serve's protocol asks for them."""
    import inprocess

    app = inprocess.build_app(directory)
    import server.app  # after build_app, which puts the checkout on the path

    server.app.write_whole = lambda response, scope, send: True  # the app's share only: no socket to write to
    scope = inprocess._scope(case.method, case.path)
    scope["headers"].append((b"content-length", str(len(case.body)).encode()))
    for _ in range(IN_PROCESS_WARMUP + requests):
        headers = app.headers_for_whole_body(scope)
        if headers is None or app.answer_whole_request(scope, headers, case.body, None) is not None:
            raise RuntimeError("the in-process request was not answered as a hit written whole")


def in_process_instructions(directory: Path, case_name: str, out: Path) -> float:
    counts = []
    for requests in (0, IN_PROCESS_REQUESTS):
        dump = out.with_name(f"{out.name}-in-process-{requests}")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", sys.executable, __file__,
                        "--drive", str(requests), "--case", case_name, str(directory)],
                       check=True, capture_output=True)
        counts.append(next(int(line.split()[1]) for line in dump.read_text().splitlines()
                           if line.startswith(("summary:", "totals:"))))
    return (counts[1] - counts[0]) / IN_PROCESS_REQUESTS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="wrk seconds counted per server (default 20)")
    parser.add_argument("--case", choices=("json", "sse"), default="json", help="the load case (default json)")
    parser.add_argument("--in-process", action="store_true", help="the app's own share of a hit, without uvicorn")
    parser.add_argument("--drive", type=int, metavar="N", help=argparse.SUPPRESS)  # the process --in-process counts
    parser.add_argument("directory", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive is not None:
        drive_in_process(args.directory, fixtures.benchmark_cases()[args.case], args.drive)
        return 0
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} is needed: apt-get install valgrind", file=sys.stderr)
            return 2
    cases = fixtures.benchmark_cases()
    case = cases[args.case]
    with tempfile.TemporaryDirectory(prefix="cassette-instructions-") as temporary:
        work = Path(temporary)
        cassettes = fixtures.write_cassettes(cases, work / "cassettes")
        if args.in_process:
            count = in_process_instructions(cassettes, args.case, work / "callgrind")
            print(f"| server | instructions per request ({args.case}, in process: the app's share of a hit) |")
            print("| --- | --- |")
            print(f"| cassette-server | {count:,.0f} |")
            return 0
        load.ensure_wrk()
        servers = [peers.cassette_server(cassettes, work / "logs"), peers.bare(cassettes, work / "logs")]
        print(f"| server | instructions per request ({args.case}, wrk -t2 -c50, {args.seconds:g} s) |")
        print("| --- | --- |")
        for peer in servers:
            count = instructions_per_request(callgrind(peer, work / "callgrind"), case, args.seconds, work,
                                             work / "callgrind")
            print(f"| {peer.name} | {count:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
