"""``--watch``: reload the cassettes when a cassette file under the served paths changes.

Uses watchfiles (inotify and friends, polling where those do not work: set
``WATCHFILES_FORCE_POLLING=1``). A burst of changes, e.g. a whole folder re-recorded, gives one
reload. Reloads go through ``CassetteService.reload``, so the guarantees are the admin API's:
the new index replaces the old one whole, requests in flight finish on the old one, and files
that fail to load are reported while the others are served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from watchfiles import Change, DefaultFilter, awatch

from .loader import CASSETTE_SUFFIXES
from .service import CassetteService

log = logging.getLogger("cassette_server")


class CassetteFiles(DefaultFilter):
    """Changes that matter: cassette files (not hidden ones, which the loader skips too) under
    a watched directory, or one of the files given directly."""

    def __init__(self, directories: Sequence[Path], files: Sequence[Path]) -> None:
        super().__init__()
        self.directories = tuple(directories)
        self.files = frozenset(str(file) for file in files)

    def __call__(self, change: Change, path: str) -> bool:
        if path in self.files:
            return True
        if not super().__call__(change, path) or not path.lower().endswith(CASSETTE_SUFFIXES):
            return False
        candidate = Path(path)
        for directory in self.directories:
            if candidate.is_relative_to(directory):
                return not any(part.startswith(".") for part in candidate.relative_to(directory).parts)
        return False


def watched(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(directories, files) to watch, absolute; paths that do not exist are left out."""
    directories = [path.resolve() for path in paths if path.is_dir()]
    files = [path.resolve() for path in paths if path.is_file()]
    return directories, files


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
    async for changes in awatch(*roots, watch_filter=CassetteFiles(directories, files), stop_event=stop):
        paths = {Path(path) for _, path in changes}
        if service.loaded_already(paths):
            continue  # written by PUT /__admin/cassettes, which reloaded itself
        log.info("Cassette files changed (%s): reloading", ", ".join(sorted(map(str, paths))))
        try:
            await asyncio.to_thread(service.reload)
        except Exception:  # keep watching: the next change may fix it
            log.exception("reload after a file change failed; still serving the cassettes loaded before")
