"""Nothing recorded is lost: an answer is on disk before the client has its end, a recording
server killed with SIGKILL (mid-stream, between interactions) leaves a whole file with every
finished interaction, and concurrent recordings into one cassette all land."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.checks import check_paths
from server.loader import load_file
from server.matching.keys import MatchRules

from .conftest import ROOT, running
from .recording import recording
from .standin import KEY, StandIn, answer

AUTH = {"Authorization": f"Bearer {KEY}"}


def chat(question: str, **extra: object) -> dict[str, object]:
    return {"model": "gpt-standin", "messages": [{"role": "user", "content": question}], **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RecordingProcess:
    """`cassette-server record` in its own process, to be killed like a real one."""

    def __init__(self, upstream: str, out: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", "record", "--upstream", upstream, "--out", str(out),
             "--port", self.url.rsplit(":", 1)[1], "--log-level", "warning"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.url}/__admin/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the recording server did not start: {self.process.stderr.read()!r}")  # type: ignore[union-attr]
            time.sleep(0.1)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process.stderr.close()  # type: ignore[union-attr]


@pytest.fixture
def standin() -> Iterator[tuple[StandIn, str]]:
    provider = StandIn()
    with running(provider.app()) as url:
        yield provider, url


def visible_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file() and not path.name.startswith("."))


def test_the_answer_is_on_disk_before_the_client_has_its_end(tmp_path: Path) -> None:
    with recording(StandIn(), tmp_path) as (url, _, _):
        for number in range(3):
            response = httpx.post(f"{url}/v1/chat/completions", json=chat(f"q{number}"), headers=AUTH)
            assert response.status_code == 200
            assert len(load_file(tmp_path / "recorded.yaml", name="recorded").interactions) == 2 * number + 1
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat(f"s{number}", stream=True),
                              headers=AUTH) as stream:
                streamed = stream.read()
            interactions = load_file(tmp_path / "recorded.yaml", name="recorded").interactions
            assert len(interactions) == 2 * number + 2 and interactions[-1].response.body == streamed


def test_kill_9_mid_stream_and_between_interactions_loses_no_finished_interaction(
        tmp_path: Path, standin: tuple[StandIn, str]) -> None:
    provider, upstream = standin
    out = tmp_path / "out"
    server = RecordingProcess(upstream, out)
    try:
        first = httpx.post(f"{server.url}/v1/chat/completions", json=chat("before the kill"), headers=AUTH, timeout=10)
        assert first.status_code == 200
        received: list[bytes] = []

        def stream() -> None:
            try:
                with httpx.stream("POST", f"{server.url}/v1/chat/completions", headers=AUTH, timeout=10,
                                  json=chat("killed mid-stream", model="slow-standin", stream=True)) as response:
                    for chunk in response.iter_raw():
                        received.append(chunk)
            except httpx.HTTPError:
                pass  # the server died under it

        client = threading.Thread(target=stream)
        client.start()
        deadline = time.monotonic() + 10
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(received) >= 2  # mid-stream: events are flowing, the stream is far from done
    finally:
        server.kill()
    client.join(timeout=10)
    assert b"[DONE]" not in b"".join(received)  # killed before the stream's end
    [file] = visible_files(out)
    cassette = load_file(file, name="recorded")
    assert len(cassette.interactions) == 1 and cassette.interactions[0].response.body == first.content

    server = RecordingProcess(upstream, out)  # a new run appends to what the last one left
    try:
        second = httpx.post(f"{server.url}/v1/chat/completions", json=chat("between interactions"), headers=AUTH,
                            timeout=10)
        assert second.status_code == 200
    finally:
        server.kill()  # right after an answer: between interactions
    cassette = load_file(file, name="recorded")
    assert [i.response.body for i in cassette.interactions] == [first.content, second.content]
    assert [i.id for i in cassette.interactions] == [0, 1]
    assert check_paths([out], MatchRules()).errors == []
    assert len(provider.requests) == 3


def test_concurrent_recordings_into_one_cassette_all_land(tmp_path: Path) -> None:
    async def record_all(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
            return await asyncio.gather(*(
                client.post("/v1/chat/completions", json=chat(f"concurrent {n}", stream=n % 2 == 0))
                for n in range(20)))

    with recording(StandIn(), tmp_path) as (url, app, _):
        responses = asyncio.run(record_all(url))
    assert all(response.status_code == 200 for response in responses)
    cassette = load_file(tmp_path / "recorded.yaml", name="recorded")
    assert sorted(i.id for i in cassette.interactions) == list(range(20))
    by_question = {i.request.body: i.response.body for i in cassette.interactions}
    for n, response in enumerate(responses):
        assert by_question[httpx.Request("POST", "/", json=chat(f"concurrent {n}", stream=n % 2 == 0)).read()] \
            == response.content
    assert responses[1].json()["choices"][0]["message"]["content"] == answer("concurrent 1")
    assert check_paths([tmp_path], MatchRules()).findings == ()
    assert len(app.service.index.by_name["recorded"].interactions) == 20  # served from now on


def test_a_client_that_leaves_mid_stream_does_not_lose_the_recording(tmp_path: Path) -> None:
    """The upstream's answer is read to its end and recorded (SDKs close a stream at its last
    event, before the end of the body; and an answer that was paid for is worth keeping)."""
    standin = StandIn()
    with recording(standin, tmp_path) as (url, _, _):
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=chat("left early", stream=True),
                          headers=AUTH) as response:
            next(response.iter_raw())
        deadline = time.monotonic() + 10
        while not (tmp_path / "recorded.yaml").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    [interaction] = load_file(tmp_path / "recorded.yaml", name="recorded").interactions
    assert interaction.response.body == standin.sent[0]
