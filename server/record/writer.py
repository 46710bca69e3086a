"""Recorded interactions → cassette files, one whole file at a time.

Appending re-writes the whole cassette from its parsed data, as go-vcr and vcrpy themselves do
on save, because no text-level append works for every file: vcrpy writes ``interactions``
before ``version``, a JSON cassette must stay one JSON value, and a YAML file may use flow
style or end its list anywhere. What makes re-writing safe: the new text is parsed back before
it replaces the file, and it must give every interaction the old file had exactly as it was
(request, response, id), plus the new one with the bytes that were recorded; otherwise nothing
is written. The file keeps its format (go-vcr or vcrpy) and syntax (YAML or JSON); comments
and YAML anchors are not kept.

Each write goes through a temporary file, fsync and a rename, then an fsync of the directory
(``storage.write_whole``): the file on disk is always a whole cassette, the old one or the new.
Writes to one file are serialised by a lock for that file; ids are given under it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

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


class CassetteWriter:
    """Appends recorded exchanges to cassettes (call ``append`` from a worker thread: it reads,
    parses and writes files).

    ``directory`` holds new cassettes; ``new_format`` is the format they are written in;
    ``loaded_file`` gives the file of a cassette the server has loaded (it is appended to
    wherever it lives); ``rules`` decide which requests are the same (for deliberate repeats).
    """

    def __init__(self, *, directory: Path, new_format: str, rules: MatchRules,
                 loaded_file: Callable[[str], str | None]) -> None:
        self.directory = directory
        self.new_format = FORMATS_BY_NAME[new_format]
        self.rules = rules
        self.loaded_file = loaded_file
        self._guard = threading.Lock()
        self._locks: weakref.WeakValueDictionary[Path, _FileLock] = weakref.WeakValueDictionary()
        self._recorded: dict[Path, set[MatchKey]] = {}  # requests this run recorded, per file

    def file_of(self, name: str) -> Path:
        """The file cassette ``name`` is written to: the loaded one, else one under ``directory``
        (an existing ``name.yaml``/``.yml``/``.json``, else a new ``name.yaml``). Raises
        BadRequest for a name that cannot be a file there."""
        loaded = self.loaded_file(name)
        return Path(loaded) if loaded is not None else cassette_path(self.directory, name)

    def append(self, name: str, exchange: Exchange, publish: Callable[[Cassette], None]) -> Interaction:
        """Write ``exchange`` as the next interaction of cassette ``name`` and hand the cassette,
        as now on disk, to ``publish`` (still under the file's lock, so cassettes are published
        in the order they were written). Returns the new interaction. Raises RecordingFailed."""
        try:
            path = self.file_of(name)
        except HTTPError as error:
            raise RecordingFailed(error.message) from None
        holder = self._lock_for(path.resolve())
        with holder.lock:
            cassette = self._append(name, path, exchange)
            publish(cassette)
        return cassette.interactions[-1]

    def _lock_for(self, path: Path) -> _FileLock:
        with self._guard:
            holder = self._locks.get(path)
            if holder is None:
                holder = _FileLock()
                self._locks[path] = holder
            return holder

    def _append(self, name: str, path: Path, exchange: Exchange) -> Cassette:
        file = str(path)
        data, fmt, syntax, before = self._read(name, path)
        interactions = list(data.get("interactions") or [])
        new = fmt.dump_interaction(exchange, fmt.next_id(interactions))
        key = self._key(fmt, new, len(interactions))
        if key in self._recorded.get(path, ()):
            new[DELIBERATE_REPEAT_FIELD] = True
        try:
            text = dump_document({**data, "interactions": [*interactions, new]}, syntax=syntax,
                                 explicit_start=fmt is govcr and syntax == "yaml")
            after = parse_cassette(parse_document(text, file=file), name=name, file=file)
        except (ValueError, CassetteLoadError, InvalidCassette) as error:
            raise RecordingFailed(f"cassette '{name}' ({file}) cannot hold this interaction: {error}; "
                                  "nothing was written") from None
        _check_unchanged(name, file, before, after, exchange)
        try:
            write_whole(path, text)
        except HTTPError as error:  # NotWritable: says why and what to change
            raise RecordingFailed(error.message) from None
        self._recorded.setdefault(path, set()).add(key)
        return after

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


def _check_unchanged(name: str, file: str, before: Cassette | None, after: Cassette, exchange: Exchange) -> None:
    """Raise RecordingFailed unless ``after`` holds every interaction of ``before`` as it was,
    then the recorded exchange, byte for byte."""
    old = before.interactions if before else ()
    if len(after.interactions) != len(old) + 1:
        raise RecordingFailed(f"re-writing cassette '{name}' ({file}) would not give {len(old) + 1} interactions; "
                              "nothing was written")
    for was, now in zip(old, after.interactions):
        if (was.id, was.request, was.response, was.deliberate_repeat) != (now.id, now.request, now.response,
                                                                          now.deliberate_repeat):
            raise RecordingFailed(f"re-writing cassette '{name}' ({file}) would change what {was.label} replays; "
                                  "nothing was written (please report this with the file)")
    new = after.interactions[-1]
    if (new.request.body, new.response.status, new.response.body, new.response.event_offsets) != (
            exchange.request_body, exchange.status, exchange.response_body, exchange.event_offsets):
        raise RecordingFailed(f"cassette '{name}' ({file}) would not replay the recorded answer as it came; "
                              "nothing was written (please report this)")
