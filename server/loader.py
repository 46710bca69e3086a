"""Cassette paths → loaded cassettes plus every file that could not be loaded, and why.

A bad file never stops the others from loading; the caller decides whether errors are fatal
(``--strict``).

Directories are searched for ``*.yaml`` / ``*.yml`` and ``*.json``. JSON is also what
package manifests, fixtures and settings are written in, so a ``.json`` file found in a
directory counts as a cassette only when its text has an ``"interactions"`` key; others are
passed over silently. A file named on the command line is always loaded (and reported).
Symbolic links are followed, each directory and file once (a loop is not followed around).
``*.yaml.gz`` / ``*.yml.gz`` files (LangChain's cassettes) are gzip-compressed YAML.

Memory stays bounded while loading: a file larger than ``max_file_size`` (``--max-cassette-size``)
is refused before it is read (a compressed one as soon as it inflates past it), and only regular
files are read (a FIFO named ``x.yaml`` would block the reader forever).
"""

from __future__ import annotations

import logging
import os
import stat
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .documents import parse_document
from .errors import CassetteLoadError
from .formats import parse_cassette
from .models import Cassette
from .parallel_load import load_files

CASSETTE_SUFFIXES = (".yaml", ".yml", ".json")
COMPRESSED_SUFFIXES = (".yaml.gz", ".yml.gz")  # gzip-compressed YAML (LangChain's persister)
FOUND_SUFFIXES = CASSETTE_SUFFIXES + COMPRESSED_SUFFIXES  # what a directory search loads
DEFAULT_MAX_FILE_SIZE = 64 * 1024**2  # the default of --max-cassette-size
_JSON_SUFFIX = ".json"
_JSON_CASSETTE_MARK = b'"interactions"'

log = logging.getLogger("cassette_server")


@dataclass(frozen=True)
class LoadFailure:
    """A file (or a path) that gave no cassette."""

    name: str | None
    file: str
    errors: tuple[CassetteLoadError, ...]


@dataclass(frozen=True)
class LoadResult:
    cassettes: tuple[Cassette, ...] = ()
    failures: tuple[LoadFailure, ...] = field(default=())

    @property
    def errors(self) -> list[CassetteLoadError]:
        return [error for failure in self.failures for error in failure.errors]

    @property
    def interaction_count(self) -> int:
        return sum(len(cassette.interactions) for cassette in self.cassettes)

    def replacing(self, cassette: Cassette) -> LoadResult:
        """This result with ``cassette`` in place of the cassette of its name (after the others
        when the name is new), and no longer any failure of that name."""
        cassettes = [cassette if loaded.name == cassette.name else loaded for loaded in self.cassettes]
        if all(loaded.name != cassette.name for loaded in self.cassettes):
            cassettes.append(cassette)
        return LoadResult(tuple(cassettes), tuple(failure for failure in self.failures if failure.name != cassette.name))


def load_paths(
    paths: Sequence[Path], *, reuse: Mapping[str, Cassette] | None = None, max_file_size: int = DEFAULT_MAX_FILE_SIZE,
) -> LoadResult:
    """Load every cassette under ``paths`` (files, or directories searched recursively).

    ``reuse`` maps files (as discovered) known to be unchanged to the cassette loaded from them
    before: those are not read again, so a reload after one file changed costs that file. A
    file larger than ``max_file_size`` bytes (once decompressed) is a load error.
    """
    reuse = reuse or {}
    failures: list[LoadFailure] = []
    wanted: list[tuple[str, str, Cassette | None]] = []  # (name, file, the cassette kept from before)
    for name, file, found_in_directory in discover(paths, failures):
        before = reuse.get(file)
        if before is not None and before.name != name:
            before = None
        if before is None and found_in_directory and not may_be_cassette(Path(file)):
            continue
        wanted.append((name, file, before))
    loaded = load_files([(name, file) for name, file, before in wanted if before is None],
                        partial(_load_named, max_size=max_file_size))
    cassettes: list[Cassette] = []
    names: dict[str, str] = {}
    for name, file, before in wanted:
        if name in names:
            reason = f"cassette name {name!r} is already used by {names[name]}; rename one of the files"
            failures.append(LoadFailure(name, file, (CassetteLoadError(reason, file=file),)))
            continue
        outcome = before if before is not None else loaded[file]
        if isinstance(outcome, Cassette):
            cassettes.append(outcome)
            names[name] = file
        else:
            failures.append(LoadFailure(name, file, outcome))
    return LoadResult(tuple(cassettes), tuple(failures))


def may_be_cassette(path: Path) -> bool:
    """Whether a file found in a directory is loaded: False for a ``.json`` file without an
    ``"interactions"`` key (not a cassette)."""
    if path.suffix.lower() != _JSON_SUFFIX:
        return True
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return True  # let load_file report what it is
            return holds_json_cassette_mark(handle.read(DEFAULT_MAX_FILE_SIZE))
    except OSError:
        return True  # let load_file report why it cannot be read


def holds_json_cassette_mark(text: bytes) -> bool:
    """Whether the text of a ``.json`` file found in a directory counts as a cassette."""
    return _JSON_CASSETTE_MARK in text


def _load_named(name: str, file: str, *, max_size: int) -> Cassette:
    return load_file(Path(file), name=name, max_size=max_size)


def load_file(path: Path, *, name: str, max_size: int = DEFAULT_MAX_FILE_SIZE) -> Cassette:
    """Read and parse one cassette file (gzip-compressed when it ends in ``.gz``)."""
    return load_bytes(cassette_text(path, max_size), name=name, file=str(path))


def cassette_text(path: Path, max_size: int = DEFAULT_MAX_FILE_SIZE) -> bytes:
    """The text of a cassette file (decompressed when its name ends in ``.gz``), at most
    ``max_size`` bytes; else CassetteLoadError, as soon as that is known."""
    text = read_cassette_file(path, max_size)
    return _inflate(text, max_size, str(path)) if path.name.lower().endswith(".gz") else text


def read_cassette_file(path: Path, max_size: int) -> bytes:
    """The bytes of a regular file of at most ``max_size`` bytes; else CassetteLoadError, before
    reading anything. The size is checked on the open file, so a file that grows meanwhile is
    still read no further than the limit."""
    file = str(path)
    try:  # non-blocking: opening a FIFO to read would otherwise wait for a writer
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise CassetteLoadError(f"not a regular file ({_file_kind(status.st_mode)}): a cassette is a file; "
                                        "remove it or rename it without a cassette suffix", file=file)
            text = b""
            if status.st_size <= max_size:  # read what the size says: a read takes its whole buffer up front
                text = handle.read(status.st_size + 1)
                if len(text) > status.st_size:  # it grew meanwhile (being written): the rest, up to the limit
                    text += handle.read(max_size + 1 - len(text))
    except OSError as error:
        advice = "; it is a symbolic link whose target is missing" if path.is_symlink() and not path.exists() else ""
        if isinstance(error, PermissionError):
            advice = "; give the server's user read permission on it (and on its directories)"
        raise CassetteLoadError(f"cannot read: {error.strerror or error}{advice}", file=file) from None
    if status.st_size > max_size or len(text) > max_size:
        raise CassetteLoadError(_too_large(max(status.st_size, len(text)), max_size), file=file)
    return text


def _inflate(data: bytes, max_size: int, file: str) -> bytes:
    """Decompress gzip data, refusing it as soon as it inflates past ``max_size`` (a small file
    can stand for gigabytes)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        text = inflater.decompress(data, max_size + 1)
    except zlib.error as error:
        raise CassetteLoadError(f"not gzip data, though the name ends in .gz: {error}; decompress it, or rename it",
                                file=file) from None
    if len(text) > max_size:
        raise CassetteLoadError(_too_large(len(text), max_size, "decompressed, it is"), file=file)
    if not inflater.eof:
        raise CassetteLoadError("the gzip data is cut short (truncated file); record it again", file=file)
    return text


def _too_large(size: int, limit: int, what: str = "it is") -> str:
    return (f"{what} {size:,} bytes or more, more than the {limit:,} a cassette may be (--max-cassette-size, "
            "CASSETTE_SERVER_MAX_CASSETTE_SIZE); raise the limit to load it, or split the cassette")


def _file_kind(mode: int) -> str:
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket",
             stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device"}
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def load_bytes(text: bytes, *, name: str, file: str) -> Cassette:
    """Parse cassette text; ``file`` names its origin in errors. Raises CassetteLoadError or
    InvalidCassette (every bad interaction)."""
    return parse_cassette(parse_document(text, file=file), name=name, file=file)


def discover(paths: Iterable[Path], failures: list[LoadFailure]) -> list[tuple[str, str, bool]]:
    """(cassette name, file, found in a directory) for every cassette file, in a stable order.

    A directory's cassettes are named by their path relative to it, without extension
    (``openai/chat``); a file given directly is named by its file name without extension.
    Hidden files and directories are skipped. The same file given twice is loaded once.
    """
    found: list[tuple[str, str, bool]] = []
    seen: set[Path] = set()
    for root in paths:
        if root.is_dir():
            candidates = [(_name_in(root, file), file, True) for file in _walk(root)]
        elif root.exists() or root.is_symlink():  # a file, or anything else: loading it says what is wrong
            candidates = [(_without_suffix(Path(root.name)), root, False)]
        else:
            reason = "no such file or directory"
            failures.append(LoadFailure(None, str(root), (CassetteLoadError(reason, file=str(root)),)))
            continue
        for name, file, in_directory in candidates:
            if not _printable_name(str(file)):
                shown = os.fsencode(file).decode("utf-8", "replace")
                reason = "the file name is not valid UTF-8, so it cannot name a cassette; rename the file"
                failures.append(LoadFailure(None, shown, (CassetteLoadError(reason, file=shown),)))
                continue
            resolved = file.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found.append((name, str(file), in_directory))
    return found


def _walk(root: Path) -> list[Path]:
    """The cassette files under ``root``, sorted by path, following symbolic links.

    Directories are visited level by level (then in name order), each once, however many
    links lead to it: the first path found is the shortest, and it names the cassettes in it.
    So a link back up (a loop, even a directory linking to itself) is not followed again and
    does not repeat its cassettes under ever longer names. A file reached by two paths is
    likewise found once, by the shorter.
    """
    files: list[Path] = []
    seen: set[tuple[int, int]] = set()  # (device, inode) of every directory and file found
    level = [root]
    while level:
        deeper: list[Path] = []
        for directory in level:
            if not _first_visit(directory, seen):
                log.debug("Not following %s again: it leads to a directory already searched", directory)
                continue
            try:
                entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
            except OSError:  # unreadable or gone: as os.walk, pass over it
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if _is_directory(entry):
                    deeper.append(Path(entry.path))
                elif entry.name.lower().endswith(FOUND_SUFFIXES) and _first_visit(Path(entry.path), seen):
                    files.append(Path(entry.path))
        level = deeper
    return sorted(files)


def _first_visit(path: Path, seen: set[tuple[int, int]]) -> bool:
    """Whether ``path`` (links followed) was not found before; a path that cannot be looked at
    counts as new, so that loading it reports why."""
    try:
        status = path.stat()
    except OSError:
        return True
    identity = (status.st_dev, status.st_ino)
    if identity in seen:
        return False
    seen.add(identity)
    return True


def _is_directory(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symbolic links
    except OSError:
        return False


def _printable_name(path: str) -> bool:
    """False for a path with bytes that are not UTF-8 (Python keeps them as lone surrogates,
    which no JSON reply, log line or terminal can carry)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _name_in(root: Path, file: Path) -> str:
    return _without_suffix(file.relative_to(root))


def _without_suffix(path: Path) -> str:
    """The cassette name of a file: its path without ``.yaml`` (or ``.yaml.gz``, …)."""
    if path.name.lower().endswith(COMPRESSED_SUFFIXES):
        path = path.with_suffix("")
    return path.with_suffix("").as_posix()
