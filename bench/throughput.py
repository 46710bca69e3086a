"""Replay throughput: requests per second for a whole (JSON) body, an SSE stream and a miss.

    python bench/throughput.py [--duration 5] [--connections 16]

Starts ``cassette-server serve cassettes --speed 0`` on a free port and drives it with wrk
(``apt-get install wrk``), which runs in its own process so it measures the server, not a
Python client. Also prints the in-process cost of the replay handler per request (no sockets),
which is the part this project controls. Figures depend on the machine: compare runs, not
absolute numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
CASSETTES = ROOT / "cassettes"


def recorded_body(cassette: str, number: int = 0) -> str:
    data = yaml.safe_load((CASSETTES / f"{cassette}.yaml").read_text())
    return data["interactions"][number]["request"]["body"]


CASES = {
    "whole JSON body (openai/haiku)": recorded_body("openai/haiku"),
    "SSE stream, 12 events (weather#0)": recorded_body("weather"),
    "miss with near-miss diff": '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"not recorded"}]}',
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wrk(url: str, body: str, seconds: int, connections: int) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = [==[{body}]==]\nwrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script.name, url],
                         capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    latency = re.search(r"Latency\s+(\S+)", out)
    return f"{float(rate.group(1)):>9.0f} req/s   mean latency {latency.group(1)}" if rate and latency else out


def in_process(body: str, count: int = 20000) -> float:
    """Microseconds per request through the ASGI app, without uvicorn or sockets."""
    sys.path.insert(0, str(ROOT))
    from server import Settings, create_app

    app = create_app(Settings(paths=(CASSETTES,), speed=0, log_level="critical"))
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]}
    raw = body.encode()

    never = asyncio.Event()

    def receiver():  # like a server: the body once, then nothing until the client leaves
        messages = [{"type": "http.request", "body": raw, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop()
            await never.wait()
            return {"type": "http.disconnect"}

        return receive

    async def send(message: dict) -> None:
        pass

    async def run() -> float:
        start = time.perf_counter()
        for _ in range(count):
            await app(scope, receiver(), send)
        return (time.perf_counter() - start) / count * 1e6

    import logging

    logging.getLogger("cassette_server").disabled = True
    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()

    print("in-process replay handler (no sockets):")
    for name, body in CASES.items():
        print(f"  {name:<36} {in_process(body, 2000 if 'miss' in name else 20000):8.1f} µs/request")

    if not shutil.which("wrk"):
        print("wrk not found: install it (apt-get install wrk) for the over-the-socket figures")
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "server", "serve", str(CASSETTES), "--speed", "0",
                               "--port", str(port), "--log-level", "error"], cwd=ROOT)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{port}/__admin/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        print(f"over a socket (uvicorn, wrk -c{args.connections}, {args.duration}s each):")
        for name, body in CASES.items():
            print(f"  {name:<36} {wrk(url, body, args.duration, args.connections)}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
