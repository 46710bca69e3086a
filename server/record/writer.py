"""Recorded interactions → cassette files, one whole file at a time.

The first time a run appends to a file, it re-writes the whole cassette from its parsed data,
as go-vcr and vcrpy themselves do on save, because no text-level append works for every file:
vcrpy writes ``interactions`` before ``version``, a JSON cassette must stay one JSON value, and
a YAML file may use flow style or end its list anywhere. What makes re-writing safe: the new
text is parsed back before it replaces the file, and it must give every interaction the old
file had exactly as it was (request, response, id), plus the new one with the bytes that were
recorded; otherwise nothing is written. The file keeps its format (go-vcr or vcrpy) and syntax
(YAML or JSON); comments and YAML anchors are not kept.

After that, a go-vcr YAML file this writer wrote and nobody changed since (same inode, size and
mtime) ends with its block list of interactions, so the next interaction is appended as text:
its own YAML, checked to read back as written, after the file's unchanged bytes. That keeps a
long recording session linear: each append costs the new interaction, not the whole file.

Each write goes through a temporary file, fsync and a rename, then an fsync of the directory
(``storage.write_whole``): the file on disk is always a whole cassette, the old one or the new.
Writes to one file are serialised by a lock for that file; ids are given under it.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: writers in one process still take turns
    fcntl = None  # type: ignore[assignment]

from ..documents import dump_document, parse_document
from ..errors import CassetteLoadError, HTTPError, InvalidCassette
from ..formats import FORMATS_BY_NAME, detect, govcr, parse_cassette
from ..formats.common import DELIBERATE_REPEAT_FIELD
from ..matching.keys import MatchKey, MatchRules
from ..models import Cassette, Exchange, Interaction
from ..storage import cassette_path, write_whole

log = logging.getLogger("cassette_server")


class RecordingFailed(Exception):
    """An interaction could not be written; the cassette file is as it was. The message says
    why and what to do."""


class _FileLock:
    """A lock for one cassette file; the writer keeps it only while someone holds it."""

    __slots__ = ("lock", "__weakref__")

    def __init__(self) -> None:
        self.lock = threading.Lock()


@contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) on ``directory`` across processes, for one read,
    change and write of a cassette in it: each writer reads the file as the other left it, so
    no interaction is lost and ids stay unique. The directory, not the file: a new cassette's
    file does not exist yet, and no lock file is left beside the cassettes. Where flock is
    missing (Windows) or the directory cannot be opened, only this process's lock holds."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


@dataclass(frozen=True)
class _Written:
    """A go-vcr YAML file as this writer last left it, to append the next interaction as text."""

    signature: tuple[int, int, int]  # inode, size, mtime (ns): the file is unchanged while these are
    cassette: Cassette  # what it holds, as published
    next_id: int


_DOCUMENT_END = b"...\n"  # YAML's end marker, written after a block scalar that keeps trailing newlines


class CassetteWriter:
    """Appends recorded exchanges to cassettes (call ``append`` from a worker thread: it reads,
    parses and writes files).

    ``directory`` holds new cassettes; ``new_format`` is the format they are written in;
    ``loaded_file`` gives the file of a cassette the server has loaded (it is appended to
    wherever it lives); ``rules`` decide which requests are the same (for deliberate repeats);
    ``max_size`` is --max-cassette-size: no file is written larger, as the server would not load it.
    """

    def __init__(self, *, directory: Path, new_format: str, rules: MatchRules,
                 loaded_file: Callable[[str], str | None], max_size: int) -> None:
        self.directory = directory
        self.max_size = max_size
        self.new_format = FORMATS_BY_NAME[new_format]
        self.rules = rules
        self.loaded_file = loaded_file
        self._guard = threading.Lock()
        self._locks: weakref.WeakValueDictionary[Path, _FileLock] = weakref.WeakValueDictionary()
        self._recorded: dict[Path, set[MatchKey]] = {}  # requests this run recorded, per file
        self._written: dict[Path, _Written] = {}  # files that take the next interaction as appended text

    def file_of(self, name: str) -> Path:
        """The file cassette ``name`` is written to: the loaded one, else one under ``directory``
        (an existing ``name.yaml``/``.yml``/``.json``, else a new ``name.yaml``). Raises
        BadRequest for a name that cannot be a file there."""
        loaded = self.loaded_file(name)
        return Path(loaded) if loaded is not None else cassette_path(self.directory, name)

    def append(self, name: str, exchange: Exchange, publish: Callable[[Cassette], None],
               replacing: set[Path] | None = None) -> Interaction:
        """Write ``exchange`` as the next interaction of cassette ``name`` and hand the cassette,
        as now on disk, to ``publish`` (still under the file's lock, so cassettes are published
        in the order they were written). Returns the new interaction. Raises RecordingFailed.

        ``replacing`` re-records from scratch: unless the file is in it already, the cassette's
        old interactions are dropped (its format and syntax kept) and the file is added to it
        once written. So the old file is only replaced by a recording that happened; one that
        records nothing leaves it as it was."""
        try:
            path = self.file_of(name)
        except HTTPError as error:
            raise RecordingFailed(error.message) from None
        where = path.resolve()  # one file, however its path is spelled: one lock, one state
        holder = self._lock_for(where)
        # the check and the first write of a replacement, too, are one step; other processes
        # recording into the same directory (pytest-xdist workers, two servers) wait too
        with holder.lock, _directory_lock(self.directory if where.is_relative_to(self.directory.resolve()) else where.parent):
            if replacing is not None and where not in replacing:
                cassette = self._rewrite(name, path, where, exchange, fresh=True)
                replacing.add(where)
            else:
                cassette = self._append(name, path, where, exchange)
            publish(cassette)
        return cassette.interactions[-1]

    def _lock_for(self, path: Path) -> _FileLock:
        with self._guard:
            holder = self._locks.get(path)
            if holder is None:
                holder = _FileLock()
                self._locks[path] = holder
            return holder

    def _append(self, name: str, path: Path, where: Path, exchange: Exchange) -> Cassette:
        written = self._written.pop(where, None)
        if written is not None and _signature(path) == written.signature:
            return self._append_text(name, path, where, exchange, written)
        return self._rewrite(name, path, where, exchange)

    def _rewrite(self, name: str, path: Path, where: Path, exchange: Exchange, *, fresh: bool = False) -> Cassette:
        """Write the whole cassette again from its parsed data, with the new interaction;
        ``fresh``: with only the new interaction."""
        file = str(path)
        data, fmt, syntax, before = self._read(name, path)
        if fresh:
            self._written.pop(where, None)
            self._recorded.pop(where, None)  # repeats are counted in the new recording only
            data, before = {**data, "interactions": []}, None
        interactions = list(data.get("interactions") or [])
        new_id = fmt.next_id(interactions)
        new, key = self._new_interaction(fmt, exchange, new_id, where, len(interactions))
        try:
            text = dump_document({**data, "interactions": [*interactions, new]}, syntax=syntax,
                                 explicit_start=fmt is govcr and syntax == "yaml")
            after = parse_cassette(parse_document(text, file=file), name=name, file=file)
        except (ValueError, CassetteLoadError, InvalidCassette) as error:
            raise RecordingFailed(f"cassette '{name}' ({file}) cannot hold this interaction: {error}; "
                                  "nothing was written") from None
        _check_unchanged(name, file, before, after)
        _check_recorded(name, file, after.interactions[-1], exchange)
        self._write(path, where, text, key)
        if fmt is govcr and syntax == "yaml" and list(data)[-1] == "interactions":
            self._written[where] = _Written(_signature(path), after, new_id + 1)
        return after

    def _append_text(self, name: str, path: Path, where: Path, exchange: Exchange, written: _Written) -> Cassette:
        """Add the new interaction's YAML after the file's bytes, which this writer wrote last."""
        file = str(path)
        try:
            text = path.read_bytes()
        except OSError as error:
            raise RecordingFailed(f"cannot read cassette file {path}: {error.strerror or error}") from None
        if text.endswith(b"\n" + _DOCUMENT_END):
            text = text[: -len(_DOCUMENT_END)]  # the document goes on: the list gets one more item
        position = len(written.cassette.interactions)
        new, key = self._new_interaction(govcr, exchange, written.next_id, where, position)
        fragment = dump_document([new])
        try:
            [item] = parse_document(fragment, file=file).data
            if item != new:
                raise CassetteLoadError("it does not read back as written")
            interaction_id, request, response = govcr.parse_interaction(item, position)
        except (ValueError, CassetteLoadError) as error:
            raise RecordingFailed(f"cassette '{name}' ({file}) cannot hold this interaction: {error}; "
                                  "nothing was written") from None
        interaction = Interaction(name, interaction_id, request, response, file, text.count(b"\n") + 1,
                                  new.get(DELIBERATE_REPEAT_FIELD) is True)
        _check_recorded(name, file, interaction, exchange)
        self._write(path, where, text + fragment, key)
        cassette = Cassette(name, file, written.cassette.format, (*written.cassette.interactions, interaction))
        self._written[where] = _Written(_signature(path), cassette, written.next_id + 1)
        return cassette

    def _new_interaction(self, fmt: ModuleType, exchange: Exchange, interaction_id: int, where: Path,
                         position: int) -> tuple[dict[str, Any], MatchKey]:
        """The exchange as the format writes it, and its match key; marked as a deliberate
        repeat when this run recorded the same request into this file before."""
        new = fmt.dump_interaction(exchange, interaction_id)
        key = self._key(fmt, new, position)
        if key in self._recorded.get(where, ()):
            new[DELIBERATE_REPEAT_FIELD] = True
        return new, key

    def _write(self, path: Path, where: Path, text: bytes, key: MatchKey) -> None:
        """Write the file whole; ``key`` is the request now recorded in it."""
        if len(text) > self.max_size:
            raise RecordingFailed(f"cassette file {path} would be {len(text):,} bytes with this interaction, more than "
                                  f"the {self.max_size:,} of --max-cassette-size, and would not load again; nothing was "
                                  "written: record into another cassette (X-Cassette) or raise --max-cassette-size")
        try:
            write_whole(path, text)
        except HTTPError as error:  # NotWritable: says why and what to change
            raise RecordingFailed(error.message) from None
        self._recorded.setdefault(where, set()).add(key)

    def _read(self, name: str, path: Path) -> tuple[dict[str, Any], ModuleType, str, Cassette | None]:
        """(document data, format, syntax, cassette) of the file as it is now; a new document
        in the format for new cassettes when there is no file (or an empty one)."""
        try:
            text = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # a new cassette (or a file in the way: said on writing)
            text = b""
        except OSError as error:
            raise RecordingFailed(f"cannot read cassette file {path}: {error.strerror or error}") from None
        if not text.strip():
            return self.new_format.new_document(), self.new_format, "yaml", None
        file = str(path)
        try:
            document = parse_document(text, file=file)
            cassette = parse_cassette(document, name=name, file=file)
        except CassetteLoadError as error:
            raise RecordingFailed(f"cassette '{name}' cannot be appended to: {error}; fix the file (nothing was "
                                  "written)") from None
        except InvalidCassette as error:
            raise RecordingFailed(f"cassette '{name}' cannot be appended to: {error}; fix the file (nothing was "
                                  "written)") from None
        fmt = detect(document.data)
        assert fmt is not None  # parse_cassette refused any other document
        return document.data, fmt, document.syntax, cassette

    def _key(self, fmt: ModuleType, raw: dict[str, Any], position: int) -> MatchKey:
        _, request, _ = fmt.parse_interaction(raw, position)
        return self.rules.key(request.method, request.path, request.query, request.header, request.body)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _check_unchanged(name: str, file: str, before: Cassette | None, after: Cassette) -> None:
    """Raise RecordingFailed unless ``after`` holds every interaction of ``before`` as it was, and one more."""
    old = before.interactions if before else ()
    if len(after.interactions) != len(old) + 1:
        raise RecordingFailed(f"re-writing cassette '{name}' ({file}) would not give {len(old) + 1} interactions; "
                              "nothing was written")
    for was, now in zip(old, after.interactions):
        if (was.id, was.request, was.response, was.deliberate_repeat) != (now.id, now.request, now.response,
                                                                          now.deliberate_repeat):
            raise RecordingFailed(f"re-writing cassette '{name}' ({file}) would change what {was.label} replays; "
                                  "nothing was written (please report this with the file)")


def _check_recorded(name: str, file: str, new: Interaction, exchange: Exchange) -> None:
    """Raise RecordingFailed unless ``new`` replays the recorded exchange byte for byte."""
    if (new.request.body, new.response.status, new.response.body, new.response.event_offsets) != (
            exchange.request_body, exchange.status, exchange.response_body, exchange.event_offsets):
        raise RecordingFailed(f"cassette '{name}' ({file}) would not replay the recorded answer as it came; "
                              "nothing was written (please report this)")
