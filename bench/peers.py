"""The servers compared, each a subprocess on its own port: cassette-server as users start it,
the bare ASGI app (the ceiling) and WireMock standalone.

cassette-server runs as ``python -m server serve DIR --speed 0 --port P`` with every other
option at its default (log level info, so uvicorn's access log is on: users pay for it too;
CASSETTE_SERVER_* variables are left out of its environment).
Its output goes to a log file beside the fixtures, shown when it fails to start.
"""

from __future__ import annotations

import glob
import http.client
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WIREMOCK_CACHE = BENCH / ".cache" / "wiremock"  # git-ignored; `npm install wiremock` lands here
HEALTH_PATH = "/__admin/health"  # cassette-server's, WireMock's, and the bare app's
# The names the report shows and the targets look up.
CASSETTE_SERVER = "cassette-server"
BARE = "bare ASGI"
BARE_WHOLE = "bare ASGI, one send"
WIREMOCK = "WireMock tuned"
# "WireMock tuned": no request journal (it grows with every request) and no request logging.
# `run.py --cases wiremock-flags` compares them with the defaults, with 64 container threads and
# with async responses; on a (busy) 2-core machine these two flags gave the most, the other two
# nothing more. Re-run that case on the machine that measures.
WIREMOCK_TUNED = ("--no-request-journal", "--disable-request-logging")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Peer:
    """A server under test: how to start it and where it answers."""

    name: str
    command: list[str]
    port: int
    log: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, timeout: float = 180.0) -> float:
        """Start the process; return the seconds until its health check answered 200."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            began = time.perf_counter()
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                            stdin=subprocess.DEVNULL, env=_defaults_environment())
        health = self.url(HEALTH_PATH)
        while time.perf_counter() - began < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.process.returncode}:\n{self.log_tail()}")
            if _answers_200(self.port, HEALTH_PATH):
                return time.perf_counter() - began
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {health} within {timeout:.0f} s:\n{self.log_tail()}")

    def rss_mib(self) -> float:
        """Resident memory now, from /proc/PID/status (VmRSS)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for {self.name} (pid {self.process.pid})")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # uvicorn and the JVM both stop cleanly on it
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _answers_200(port: int, path: str) -> bool:
    """Whether a GET of ``path`` answers 200. A plain connection: the poll must take next to no CPU
    from the server it waits for (an httpx client per call builds an SSL context: ~50 ms of CPU, measured)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _defaults_environment() -> dict[str, str]:
    """This environment without CASSETTE_SERVER_* variables: the servers run with the defaults."""
    return {name: value for name, value in os.environ.items() if not name.startswith("CASSETTE_SERVER_")}


def cassette_server(directory: Path, logs: Path) -> Peer:
    port = free_port()
    command = [sys.executable, "-m", "server", "serve", str(directory), "--speed", "0", "--port", str(port)]
    return Peer(CASSETTE_SERVER, command, port, logs / "cassette-server.log")


def bare(directory: Path, logs: Path, *, sse_sends: str = "event") -> Peer:
    port = free_port()
    name = BARE if sse_sends == "event" else BARE_WHOLE
    command = [sys.executable, str(BENCH / "bare.py"), str(directory), "--port", str(port), "--sse-sends", sse_sends]
    return Peer(name, command, port, logs / f"bare-{sse_sends}.log")


def wiremock_jar() -> Path | None:
    """The standalone jar from the npm package ``wiremock``, installed into the git-ignored
    cache on first use; None when Java or npm is missing."""
    if shutil.which("java") is None:
        return None
    pattern = str(WIREMOCK_CACHE / "node_modules" / "wiremock" / "build" / "wiremock-standalone-*.jar")
    if not glob.glob(pattern) and shutil.which("npm"):
        WIREMOCK_CACHE.mkdir(parents=True, exist_ok=True)
        print("installing WireMock (npm install wiremock) into", WIREMOCK_CACHE, file=sys.stderr)
        subprocess.run(["npm", "install", "--prefix", str(WIREMOCK_CACHE), "--no-audit", "--no-fund", "wiremock@3"],
                       check=True, stdout=subprocess.DEVNULL)
    jars = sorted(glob.glob(pattern))
    return Path(jars[-1]) if jars else None


def wiremock_version(jar: Path) -> str:
    return jar.stem.removeprefix("wiremock-standalone-")


def wiremock(jar: Path, root: Path, logs: Path, *, flags: tuple[str, ...] = WIREMOCK_TUNED,
             name: str = WIREMOCK) -> Peer:
    port = free_port()
    command = ["java", "-jar", str(jar), "--port", str(port), "--bind-address", "127.0.0.1",
               "--root-dir", str(root), "--disable-banner", *flags]
    return Peer(name, command, port, logs / f"{name.replace(' ', '-')}.log")


def raise_fd_limit() -> None:
    """Raise this process's open-file limit to the hard limit (children inherit it): 2,000
    streams need 2,000 sockets on each side."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

