"""Throughput under load with wrk (its own process, in C: it measures the server, not a Python
client), after checking once that the server answers the recorded bytes.

wrk runs as in the issue's measurements: ``-t2 -c50 --latency`` with a Lua script that POSTs
the case's request body (read from a file, byte for byte). It asks for no compression, so every
server sends the recorded bytes as they are.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from fixtures import Case

WRK_THREADS = 2
WRK_CONNECTIONS = 50
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}

_SCRIPT = """\
local file = assert(io.open({path!r}, "rb"))
wrk.method = {method!r}
wrk.body = file:read("*a")
file:close()
{headers}
"""


@dataclass(frozen=True)
class LoadResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors (connect, read, write, timeout)
    unexpected_status: int  # non-2xx/3xx answers when a 2xx was expected


def ensure_wrk() -> str:
    """wrk's path, installing the Debian package when it is missing and we may (root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("installing wrk (apt-get update, apt-get install -y wrk)", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is needed for the throughput cases: install it (sudo apt-get install wrk) and run again")
    return found


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return out.split(" [", 1)[0].strip() or "wrk"


def check_answer(url: str, case: Case) -> str | None:
    """Send the case once; None when the answer is the recorded one (status, content-type and
    body bytes), else what differs. A miss only has to be a 404."""
    headers = {**case.headers, "Accept-Encoding": "identity"}
    try:
        response = httpx.request(case.method, url, content=case.body, headers=headers, timeout=30)
    except httpx.HTTPError as error:
        return f"request failed: {error!r}"
    if case.answer is None:
        return None if response.status_code == 404 else f"a miss answered {response.status_code}, not 404"
    expected = case.answer
    if response.status_code != expected.status:
        return f"status {response.status_code}, recorded {expected.status}"
    if response.headers.get("content-type") != expected.content_type:
        return f"content-type {response.headers.get('content-type')!r}, recorded {expected.content_type!r}"
    if response.content != expected.body:
        return f"body differs: {len(response.content)} B, recorded {len(expected.body)} B"
    return None


def run_wrk(url: str, case: Case, seconds: float, work: Path) -> LoadResult:
    """wrk ``-t2 -c50 -d{seconds}s --latency`` POSTing the case's body; parses its report."""
    body_file = work / f"{case.name}.request"
    body_file.write_bytes(case.body)
    headers = "\n".join(f"wrk.headers[{name!r}] = {value!r}" for name, value in case.headers.items())
    script = work / f"{case.name}.lua"
    script.write_text(_SCRIPT.format(path=str(body_file), method=case.method, headers=headers))
    command = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency",
               "-s", str(script), url]
    report = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(report, expect_success=case.answer is not None)


def parse_wrk(report: str, *, expect_success: bool = True) -> LoadResult:
    def number(pattern: str) -> float:
        found = re.search(pattern, report)
        if not found:
            raise RuntimeError(f"cannot read {pattern!r} in wrk's report:\n{report}")
        return float(found.group(1))

    def percentile(label: str) -> float:
        found = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s|m)\s*$", report, flags=re.MULTILINE)
        if not found:
            raise RuntimeError(f"no {label}% latency in wrk's report:\n{report}")
        return float(found.group(1)) * _UNIT_MS[found.group(2)]

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    return LoadResult(
        requests_per_second=number(r"Requests/sec:\s+([\d.]+)"),
        p50_ms=percentile("50"),
        p99_ms=percentile("99"),
        requests=int(number(r"(\d+) requests in")),
        errors=sum(int(count) for count in errors.groups()) if errors else 0,
        unexpected_status=int(non_2xx.group(1)) if non_2xx and expect_success else 0,
    )
