"""Where the admin API writes cassettes: a cassette name → a file inside one directory, never
outside it, written whole so that a reload (or a file watcher) never reads half a file.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .documents import looks_like_json
from .errors import BadRequest, Conflict, NotWritable
from .loader import CASSETTE_SUFFIXES, holds_json_cassette_mark, may_be_cassette

_NAME_HELP = "use a relative name without extension, like 'openai/chat' or 'weather'"
# File systems allow 255 bytes a file name; a part's file also gets a suffix (.yaml) and its
# temporary file a dot, the suffix and a random ending (``write_whole``): 200 leaves room.
MAX_NAME_PART_BYTES = 200


def cassette_file(directory: Path, name: str, body: bytes) -> Path:
    """The file that holds cassette ``name`` under ``directory``, to write ``body`` to: the
    existing ``.yaml``, ``.yml`` or cassette ``.json`` file of that name, else a new ``.yaml`` one.

    Raises what ``cassette_path`` raises, and Conflict for a body that is not JSON when the
    cassette is a ``.json`` file: written there, the loader would pass it over, and written
    beside it, two files would claim the name.
    """
    target = cassette_path(directory, name)
    if target.suffix == ".json" and not (looks_like_json(body) and holds_json_cassette_mark(body)):
        raise Conflict(
            f"cassette '{name}' is stored as JSON in {target} and this body is not JSON: the file would no longer "
            "load as a cassette (a .json file counts only when it holds JSON with an \"interactions\" key). "
            f"Nothing was written. PUT the cassette as JSON, or delete {target} first to store it as YAML."
        )
    return target


def cassette_path(directory: Path, name: str) -> Path:
    """The file of cassette ``name`` under ``directory``: the existing ``.yaml``, ``.yml`` or
    cassette ``.json`` file of that name, else a new ``.yaml`` one.

    Raises BadRequest for names that would leave the directory (``../x``, ``/etc/x``, through a
    symbolic link), that the loader would not find again (hidden parts, an extension) or that
    are too long for the file system; NotWritable when the file system refuses to look.
    A ``.json`` file that is not a cassette (``package.json``) is passed over, as the loader does.
    """
    problem = name_problem(name)
    if problem:
        raise BadRequest(f"cassette name {name!r} {problem}; {_NAME_HELP}")
    base = directory / name
    candidates = [base.with_name(base.name + suffix) for suffix in CASSETTE_SUFFIXES]
    try:
        existing = [path for path in candidates if path.is_file() and may_be_cassette(path)]
        target = existing[0] if existing else candidates[0]
        inside = target.resolve().is_relative_to(directory.resolve())
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:  # each part fits, but not the whole path
            raise BadRequest(f"cassette name {name!r} is too long for the file system under {directory}; "
                             f"{_NAME_HELP}") from None
        raise not_writable(candidates[0], error) from None
    if not inside:
        raise BadRequest(f"cassette name {name!r} leads outside {directory} (through a symbolic link); {_NAME_HELP}")
    return target


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a cassette name under a directory, or None."""
    if not name:
        return "is empty"
    if name.startswith("/"):
        return "is an absolute path"
    if "\\" in name:
        return "contains a backslash"
    if any(ord(char) < 32 or char == "\x7f" for char in name):
        return "contains control characters"
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' part"
    if any(part.startswith(".") for part in parts):
        return "has a part starting with '.' (hidden files are not loaded)"
    if any(len(part.encode("utf-8")) > MAX_NAME_PART_BYTES for part in parts):
        return f"has a part longer than {MAX_NAME_PART_BYTES} bytes (in UTF-8), too long for a file name"
    if name.lower().endswith(CASSETTE_SUFFIXES):
        return "ends with a file extension"
    return None


def write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary file and an atomic rename.

    The file's data is flushed to disk before the rename and the directory entry after it, so
    once this returns the new file survives a crash or a power cut; before, the old file (or
    none) is there, never part of the new one. A leftover temporary file is hidden, so the
    loader passes it over. A replaced file keeps its permissions; a new one is made readable by
    everyone, like a file an editor would write. Missing parent directories are created. Raises
    NotWritable, saying why and what to change, when the file system refuses; ``path`` is then
    left as it was.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise not_writable(path, error) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
        _sync_directory(path.parent)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise not_writable(path, error) from None
        raise


def _sync_directory(directory: Path) -> None:
    """Flush a directory entry (a rename) to disk; where directories cannot be opened (Windows),
    the rename is as durable as the system makes it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse fsync on a directory; the rename is done
        pass
    finally:
        os.close(descriptor)


def not_writable(path: Path, error: OSError) -> NotWritable:
    """The admin API's answer to a failed write: the file, the system's reason, what to do."""
    reason = error.strerror or str(error)
    if error.filename and Path(error.filename) != path and not Path(error.filename).name.startswith("."):
        reason += f" ({error.filename})"  # a folder on the way; our hidden temporary file would only confuse
    if error.errno == errno.EROFS:
        advice = (f"{path.parent} is on a read-only file system: mount it read-write to add cassettes with PUT "
                  "(with Docker: drop ':ro' from the -v option)")
    elif error.errno in (errno.EACCES, errno.EPERM):
        user = f"uid {os.geteuid()}" if hasattr(os, "geteuid") else "the server's user"
        advice = (f"make {path.parent} writable for {user}, the user the server runs as "
                  "(the Docker image runs as uid 10001: chown -R 10001 the mounted directory)")
    elif error.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
        advice = f"something other than a file is in the way at {path} or a folder on the way to it: move it, or PUT under another name"
    elif error.errno == errno.ENAMETOOLONG:
        advice = "the path is too long for the file system: PUT under a shorter name"
    elif error.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = f"free some space on the file system of {path.parent}"
    else:
        advice = f"check that {path.parent} is a writable directory"
    return NotWritable(f"cannot write cassette file {path}: {reason}; {advice}. The cassettes served are unchanged.")
