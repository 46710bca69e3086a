"""``--watch``: reload the cassettes when a cassette file under the served paths changes.

Uses watchfiles (inotify and friends, polling where those do not work: set
``WATCHFILES_FORCE_POLLING=1``). A burst of changes, e.g. a whole folder re-recorded, gives one
reload, which reads only the files that changed. Reloads go through ``CassetteService.reload``, so
the guarantees are the admin API's: the new index replaces the old one whole, requests in flight
finish on the old one, sessions keep their positions, and files that fail to load are reported
while the others are served. Nothing that touches the file system runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from watchfiles import Change, DefaultFilter, awatch

from .loader import FOUND_SUFFIXES, may_be_cassette
from .service import CassetteService

log = logging.getLogger("cassette_server")


class CassetteFiles(DefaultFilter):
    """Changes that matter, by the loader's rules: a file given directly, or a cassette file
    under a watched directory (not hidden; ``*.yaml``, ``*.yml``, ``*.yaml.gz``, and ``*.json`` only when it
    holds an ``"interactions"`` key, or held a cassette at the last load: ``package.json`` and
    other JSON files never reload, which would rewind every session's sequences)."""

    def __init__(self, directories: Sequence[Path], files: Sequence[Path], loaded: Callable[[], Collection[Path]]) -> None:
        super().__init__()
        self.directories = tuple(directories)
        self.files = frozenset(str(file) for file in files)
        self.loaded = loaded  # the files the last load read, resolved

    def __call__(self, change: Change, path: str) -> bool:
        if path in self.files:
            return True
        if not super().__call__(change, path) or not path.lower().endswith(FOUND_SUFFIXES):
            return False
        candidate = Path(path)
        directory = next((directory for directory in self.directories if candidate.is_relative_to(directory)), None)
        if directory is None or any(part.startswith(".") for part in candidate.relative_to(directory).parts):
            return False
        if candidate.suffix.lower() != ".json" or candidate in self.loaded():
            return True
        return change != Change.deleted and may_be_cassette(candidate)


def watched(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(directories, files) to watch, absolute; paths that do not exist are left out."""
    directories = [path.resolve() for path in paths if path.is_dir()]
    files = [path.resolve() for path in paths if path.is_file()]
    return directories, files


def watch_lifespan(service: CassetteService) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """The lifespan of the app that receives lifespan events: with ``--watch``, the file watcher
    runs from startup to shutdown."""

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        if not service.settings.watch:
            yield
            return
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_cassettes(service, stop))
        try:
            yield
        finally:
            stop.set()
            await watcher

    return lifespan


async def watch_cassettes(service: CassetteService, stop: asyncio.Event) -> None:
    """Reload ``service`` after every batch of changes, until ``stop`` is set."""
    directories, files = watched(service.settings.paths)
    if not directories and not files:
        log.warning("--watch: none of the cassette paths exists, so there is nothing to watch")
        return
    # A file given directly is watched through its folder: editors replace files by renaming,
    # which a watch on the file itself would not survive.
    roots = sorted(set(directories) | {file.parent for file in files})
    log.info("Watching %s for cassette changes", ", ".join(map(str, roots)))
    cassettes = CassetteFiles(directories, files, loaded=lambda: service.loaded.files)
    # Not awatch's watch_filter: watchfiles calls that on the event loop, and it reads files (a
    # .json file's text, modification times). awatch keeps its default filter (names only).
    async for changes in awatch(*roots, stop_event=stop):
        paths = await asyncio.to_thread(cassette_changes, changes, cassettes, service)
        if paths:
            await asyncio.to_thread(reload_for, paths, service)


def cassette_changes(changes: Iterable[tuple[Change, str]], cassettes: CassetteFiles, service: CassetteService) -> set[Path]:
    """The changed paths that are cassette files PUT has not loaded already (reads files: call
    it off the event loop)."""
    paths = {Path(path) for change, path in changes if cassettes(change, path)}
    if paths and service.loaded_already(paths):
        log.debug("Cassette files changed (%s) as PUT /__admin/cassettes wrote them, and PUT reloaded: "
                  "not reloading again", _listed(paths))
        return set()
    return paths


def reload_for(paths: set[Path], service: CassetteService) -> None:
    """Reload the changed cassette files (only those: the others are carried over)."""
    log.info("Cassette files changed (%s): reloading", _listed(paths))
    try:
        service.reload(changed={path.resolve() for path in paths})
    except Exception:  # keep watching: the next change may fix it
        log.exception("reload after a file change failed; still serving the cassettes loaded before")


def _listed(paths: set[Path]) -> str:
    return ", ".join(sorted(map(str, paths)))
