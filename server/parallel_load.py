"""Many cassette files → their cassettes, using every core the process may run on.

Loading is Python work under the GIL: PyYAML's C parser still builds every node, and resolves
every scalar, through Python, so one core parses about 4 MB of cassettes a second and a large
corpus kept a server from answering for seconds. Threads cannot share that work; processes
can. The files are split into chunks of about equal size, forked workers load them, and the
cassettes come back pickled (plain frozen records: unpickling them costs a fraction of parsing).

Only when it pays and is safe: from ``PARALLEL_FROM_BYTES`` of text, with more than one core,
where ``fork`` exists, and while the process runs a single thread (a fork copies locks that
other threads may hold, so reloads in a running server, and servers started inside a test
process, load in-process). Whatever goes wrong with the workers, the files are loaded here
instead: the result never depends on how it was computed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from .errors import CassetteLoadError, InvalidCassette
from .models import Cassette

PARALLEL_FROM_BYTES = 4 * 1024**2  # below this a load takes under a second: not worth forking
MAX_WORKERS = 8
CHUNKS_PER_WORKER = 4  # smaller chunks even out files of very different sizes

LoadOne = Callable[[str, str], Cassette]  # (cassette name, file) → cassette; raises the load errors
Outcome = Cassette | tuple[CassetteLoadError, ...]  # the cassette, or why the file gave none
_Problem = tuple[str, str | None, int | None]  # a CassetteLoadError's (reason, file, line): it pickles

log = logging.getLogger("cassette_server")


def load_files(jobs: Sequence[tuple[str, str]], load_one: LoadOne, *, workers: int | None = None) -> dict[str, Outcome]:
    """Load every (name, file) of ``jobs`` with ``load_one``: each file → its outcome.
    ``load_one`` must be picklable (a module-level function, or a partial of one). ``workers``:
    how many processes (None: as many as pays, see above; 1: none)."""
    sizes = [_size(file) for _, file in jobs]
    workers = _workers(len(jobs), sum(sizes)) if workers is None else workers
    if workers > 1:
        try:
            return _in_workers(jobs, sizes, load_one, workers)
        except Exception as error:  # noqa: BLE001 - a pool that failed: the same work, here
            log.info("Loading in %d processes failed (%s); loading in this one", workers, error)
    return dict(_load_chunk(list(jobs), load_one, pickled=False))


def _workers(files: int, total_bytes: int) -> int:
    if files < 2 or total_bytes < PARALLEL_FROM_BYTES:
        return 1
    if "fork" not in multiprocessing.get_all_start_methods() or threading.active_count() > 1:
        return 1
    return min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
               files, MAX_WORKERS)


def _in_workers(jobs: Sequence[tuple[str, str]], sizes: list[int], load_one: LoadOne, workers: int) -> dict[str, Outcome]:
    chunks = _chunks(list(jobs), sizes, workers * CHUNKS_PER_WORKER)
    outcomes: dict[str, Outcome] = {}
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for chunk in pool.map(_load_chunk, chunks, [load_one] * len(chunks)):
            outcomes.update((file, _unpickled(outcome)) for file, outcome in chunk)
    return outcomes


def _chunks(jobs: list[tuple[str, str]], sizes: list[int], count: int) -> list[list[tuple[str, str]]]:
    """``jobs`` in order, cut into at most ``count`` runs of about equal total size."""
    share = max(1, sum(sizes) // count)
    chunks: list[list[tuple[str, str]]] = [[]]
    filled = 0
    for job, size in zip(jobs, sizes):
        if filled >= share and chunks[-1]:
            chunks.append([])
            filled = 0
        chunks[-1].append(job)
        filled += size
    return chunks


def _load_chunk(jobs: list[tuple[str, str]], load_one: LoadOne, pickled: bool = True
                ) -> list[tuple[str, Cassette | tuple[_Problem, ...] | tuple[CassetteLoadError, ...]]]:
    """Each file's cassette, or its problems (as plain tuples when they cross to the parent:
    CassetteLoadError's keyword arguments do not survive pickling)."""
    done: list[tuple[str, Cassette | tuple[_Problem, ...] | tuple[CassetteLoadError, ...]]] = []
    for name, file in jobs:
        try:
            done.append((file, load_one(name, file)))
        except (CassetteLoadError, InvalidCassette) as error:
            problems = tuple(error.problems) if isinstance(error, InvalidCassette) else (error,)
            done.append((file, tuple((p.reason, p.file, p.line) for p in problems) if pickled else problems))
    return done


def _unpickled(outcome: Cassette | tuple[_Problem, ...]) -> Outcome:
    if isinstance(outcome, Cassette):
        return outcome
    return tuple(CassetteLoadError(reason, file=file, line=line) for reason, file, line in outcome)


def _size(file: str) -> int:
    try:
        return os.stat(file).st_size
    except OSError:
        return 0
