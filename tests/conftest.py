"""Shared fixtures: cassette files written to a temp dir, and a real uvicorn on a free port."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml

from server import Settings, create_app
from server.app import CassetteServerApp
from server.cli import UVICORN_OPTIONS

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "cassettes"
# ../shared beside the project (a git worktree one level deeper finds it at ../../shared)
SHARED = next((folder for folder in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if folder.is_dir()),
              ROOT.parent / "shared")
CORPUS = SHARED / "corpus"
GOVCR_LOAD = SHARED / "tools" / "govcr-load"  # go-vcr's own loader (../shared/tools/govcr-load.md)


def interaction(
    body: str | bytes | None = '{"model":"m","messages":[{"role":"user","content":"hi"}]}',
    *,
    url: str = "https://api.openai.com/v1/chat/completions",
    method: str = "POST",
    response_body: str | bytes = '{"ok":true}',
    code: int = 200,
    content_type: str | None = "application/json",
    duration: str = "0s",
    request_headers: dict[str, list[str]] | None = None,
    response_headers: dict[str, list[str]] | None = None,
    **response_extra: Any,
) -> dict[str, Any]:
    """One go-vcr v2 interaction as a dict (ids are assigned by ``go_vcr``)."""
    headers = dict(response_headers or {})
    if content_type is not None:
        headers.setdefault("Content-Type", [content_type])
    return {
        "request": {"body": body, "headers": request_headers or {}, "url": url, "method": method},
        "response": {"body": response_body, "headers": headers, "status": f"{code}", "code": code,
                     "duration": duration, **response_extra},
    }


def go_vcr(*interactions: dict[str, Any], version: int = 2) -> str:
    items = [{"id": i, **item} if version == 2 else item for i, item in enumerate(interactions)]
    return yaml.safe_dump({"version": version, "interactions": items}, allow_unicode=True, sort_keys=False)


def on_event_loop() -> bool:
    """Whether the caller runs on an event loop (rather than in a worker thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _no_capture_on_uvicorns_access_log() -> None:
    """Leave uvicorn's access logger without handlers, as ``serve`` has it. pytest attaches its
    log-capture handlers, at the start of each test phase, to every logger that does not
    propagate, and uvicorn makes its access logger so when the access log is off (and an earlier
    server's logging setup may have left uvicorn's own handler there); uvicorn then finds
    handlers on it, turns the access log on for every new connection, and answers by its own
    path instead of the one ``serve`` takes (replay/direct.py, protocol.py). A server started by
    a fixture, before the test's phase, would test that other path. A test that wants the access
    log adds its handler itself."""
    logging.getLogger("uvicorn.access").handlers.clear()


@pytest.hookimpl(wrapper=True, trylast=True)  # inside pytest's logging wrapper: after it attached its handlers
def pytest_runtest_setup(item: pytest.Item) -> Any:
    _no_capture_on_uvicorns_access_log()
    return (yield)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    _no_capture_on_uvicorns_access_log()
    return (yield)


@pytest.fixture
def cassette_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "cassettes"
    directory.mkdir()
    return directory


@pytest.fixture
def write_cassette(cassette_dir: Path) -> Callable[..., Path]:
    """write_cassette("name", text_or_interaction_dicts...) → the file written."""

    def write(name: str, *content: str | dict[str, Any], version: int = 2) -> Path:
        path = cassette_dir / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        if len(content) == 1 and isinstance(content[0], str):
            path.write_text(content[0], encoding="utf-8")
        else:
            path.write_text(go_vcr(*content, version=version), encoding="utf-8")  # type: ignore[arg-type]
        return path

    return write


@contextmanager
def live_server(settings: Settings) -> Iterator[tuple[str, CassetteServerApp]]:
    """A real uvicorn serving ``settings`` on a free port, in a thread."""
    app = create_app(settings)
    with running(app) as url:
        yield url, app


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Any ASGI app on a real uvicorn on a free port, in a thread; yields its base URL."""
    with running_server(app) as (url, _):
        yield url


@contextmanager
def running_server(app: Any, **config: Any) -> Iterator[tuple[str, uvicorn.Server]]:
    """Like ``running``, and yields the uvicorn.Server too, for tests that stop it themselves;
    ``config`` overrides uvicorn settings (``http="h11"``, …)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, **{"log_level": "warning", "lifespan": "on", **UVICORN_OPTIONS, **config}))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def uvicorn_servers(settings: Settings) -> Iterator[Callable[..., str]]:
    """start(**uvicorn_config) → "host:port" of a live server on ``settings``, as ``serve`` runs
    uvicorn (without its access log, so uvicorn drops the logger's handlers); every server
    started is stopped on exit."""
    with ExitStack() as stack:

        def start(**config: Any) -> str:
            app = create_app(settings)
            url, _ = stack.enter_context(running_server(app, **{"access_log": False, **config}))
            return url.removeprefix("http://")

        yield start


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[str, CassetteServerApp]]]:
    """serve(*paths, **settings) → (base URL, app) of a live server, stopped after the test."""
    stack: list[Any] = []

    def start(*paths: Path, **options: Any) -> tuple[str, CassetteServerApp]:
        manager = live_server(Settings(paths=tuple(paths), **options))
        stack.append(manager)
        return manager.__enter__()

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


@pytest.fixture(scope="module")
def bundled_server() -> Iterator[str]:
    """One live server on the bundled cassettes at speed 0, shared by a test module."""
    with live_server(Settings(paths=(BUNDLED,), speed=0)) as (url, _):
        yield url


# The compatibility corpus lives beside the project (../shared/corpus); without it there is
# nothing to check, so its module is not collected (rather than skipped). Likewise the check of
# recorded files with go-vcr's own loader needs that tool (../shared/tools/govcr-load).
collect_ignore = [] if CORPUS.is_dir() else ["test_corpus.py"]
if not os.access(GOVCR_LOAD, os.X_OK):
    collect_ignore.append("test_record_govcr.py")
