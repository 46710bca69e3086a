"""Form bodies → what they mean, however a client spelled them on the wire.

SDKs pick a random multipart boundary for every request (audio transcriptions, image edits, file
uploads), so two identical uploads never have the same bytes. A ``multipart/form-data`` body is
read as its parts, in order: name, filename, content type and the part's bytes, without the
boundary. An ``application/x-www-form-urlencoded`` body is read as its decoded name/value pairs,
sorted. Both are compared exactly; anything malformed is not a form (compared as bytes).

The multipart reader is small and strict (RFC 2046 delimiters, CRLF line ends, every part a
``form-data`` with a name): it splits on the delimiter with ``bytes.find``, so a 20 MB upload
costs one copy of each part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

MULTIPART = "multipart/form-data"
URLENCODED = "application/x-www-form-urlencoded"

_CRLF = b"\r\n"
_PARAMETER = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_MAX_BOUNDARY = 70  # RFC 2046


@dataclass(frozen=True)
class Part:
    """One part of a multipart form. Text is what the part's headers say (quotes removed)."""

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(frozen=True)
class Form:
    """A form body without its wire spelling: hashable, so it can stand in a match key.
    ``parts`` for multipart bodies (in order), ``pairs`` for urlencoded ones (sorted)."""

    kind: str  # MULTIPART or URLENCODED
    parts: tuple[Part, ...] = ()
    pairs: tuple[tuple[bytes, bytes], ...] = ()


def read_form(body: bytes, content_type: str | None) -> Form | None:
    """The form a body holds, by its Content-Type; None when it is no form or is malformed.

    A multipart body recorded without a Content-Type (headers scrubbed) is recognised by its
    first line, ``--boundary``.
    """
    if not body:  # nothing to compare but the empty body
        return None
    media_type, parameters = parse_content_type(content_type or "")
    if media_type == URLENCODED:
        return Form(URLENCODED, pairs=read_urlencoded(body))
    if media_type == MULTIPART:
        boundary = parameters.get("boundary", "").encode("latin-1", "replace")
    elif not media_type and body.startswith(b"--"):
        line_end = body.find(_CRLF, 2, 2 + _MAX_BOUNDARY + 16)  # a boundary, maybe some padding
        boundary = body[2:line_end].rstrip(b" \t") if line_end > 0 else b""
    else:
        return None
    if not 0 < len(boundary) <= _MAX_BOUNDARY:
        return None
    parts = read_multipart(body, boundary)
    return Form(MULTIPART, parts=parts) if parts is not None else None


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """(lower-case media type, parameters with lower-case names and unquoted values)."""
    media_type, _, rest = value.partition(";")
    return media_type.strip().lower(), _parameters(";" + rest)


def read_urlencoded(body: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """Decoded (name, value) pairs, sorted: ``+`` is a space, ``%XX`` a byte. Bytes, not text,
    so a form in any encoding compares exactly; empty values are kept, empty pairs dropped."""
    pairs = []
    for field in body.split(b"&"):
        if field:
            name, _, value = field.partition(b"=")
            pairs.append((_unquote_plus(name), _unquote_plus(value)))
    return tuple(sorted(pairs))


def read_multipart(body: bytes, boundary: bytes) -> tuple[Part, ...] | None:
    """The parts between ``--boundary`` delimiters, or None when the body is not well formed.
    A preamble before the first delimiter and an epilogue after the last are ignored (RFC 2046)."""
    delimiter = b"--" + boundary
    separator = _CRLF + delimiter
    if body.startswith(delimiter):
        position = len(delimiter)
    else:
        found = body.find(separator)
        if found < 0:
            return None
        position = found + len(separator)
    parts: list[Part] = []
    while not body.startswith(b"--", position):  # "--" after a delimiter closes the body
        line_end = body.find(_CRLF, position)
        if line_end < 0 or body[position:line_end].strip(b" \t"):  # only padding may follow a delimiter
            return None
        start = line_end + len(_CRLF)
        end = body.find(separator, start)
        if end < 0:
            return None
        part = _read_part(body, start, end)
        if part is None:
            return None
        parts.append(part)
        position = end + len(separator)
    return tuple(parts)


def _read_part(body: bytes, start: int, end: int) -> Part | None:
    if body.startswith(_CRLF, start):  # no headers at all: not a form field
        return None
    header_end = body.find(_CRLF + _CRLF, start, end)
    if header_end < 0:
        return None
    headers = _part_headers(body[start:header_end])
    if headers is None:
        return None
    disposition, parameters = parse_content_type(headers.get("content-disposition", ""))
    if disposition != "form-data" or "name" not in parameters:
        return None
    filename = parameters.get("filename", parameters.get("filename*"))
    return Part(parameters["name"], filename, headers.get("content-type"), body[header_end + 4 : end])


def _part_headers(block: bytes) -> dict[str, str] | None:
    """A part's headers by lower-case name; None for a line that is not a header."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("latin-1")
    headers: dict[str, str] = {}
    name = None
    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t") and name is not None:  # a folded line continues the one before
            headers[name] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            return None
        headers[name] = value.strip()
    return headers


def _parameters(text: str) -> dict[str, str]:
    parameters = {}
    for match in _PARAMETER.finditer(text):
        value = match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        parameters[match.group(1).lower()] = value
    return parameters


def _unquote_plus(text: bytes) -> bytes:
    return unquote_to_bytes(text.replace(b"+", b" "))


def diff_forms(recorded: Form, received: Form) -> list[tuple[str, object, object]]:
    """(where, recorded, received) for each place two forms of one kind differ; None stands
    for a side that is missing. Multipart parts are paired by position and named ``part NAME``
    (``part NAME filename``, ``part NAME content type``); urlencoded fields ``form NAME``."""
    if recorded.kind == URLENCODED:
        return _diff_pairs(recorded.pairs, received.pairs)
    found: list[tuple[str, object, object]] = []
    for position in range(max(len(recorded.parts), len(received.parts))):
        a = recorded.parts[position] if position < len(recorded.parts) else None
        b = received.parts[position] if position < len(received.parts) else None
        if a is not None and b is not None and a.name != b.name:
            found.append((f"part {position + 1} name", a.name, b.name))
            continue
        where = f"part {(a or b).name}"  # type: ignore[union-attr]
        if a is None or b is None:
            found.append((where, a and _shown(a.data), b and _shown(b.data)))
            continue
        if a.filename != b.filename:
            found.append((f"{where} filename", a.filename, b.filename))
        if a.content_type != b.content_type:
            found.append((f"{where} content type", a.content_type, b.content_type))
        if a.data != b.data:
            found.append((where, _shown(a.data), _shown(b.data)))
    return found


def _diff_pairs(recorded: tuple[tuple[bytes, bytes], ...], received: tuple[tuple[bytes, bytes], ...]) -> list[tuple[str, object, object]]:
    def values(pairs: tuple[tuple[bytes, bytes], ...]) -> dict[bytes, list[bytes]]:
        grouped: dict[bytes, list[bytes]] = {}
        for name, value in pairs:
            grouped.setdefault(name, []).append(value)
        return grouped

    a, b = values(recorded), values(received)
    found: list[tuple[str, object, object]] = []
    for name in list(a) + [name for name in b if name not in a]:
        if a.get(name) != b.get(name):
            found.append((f"form {_text(name)}", _joined(a.get(name)), _joined(b.get(name))))
    return found


def _joined(values: list[bytes] | None) -> str | None:
    return None if values is None else ", ".join(_text(value) for value in values)


def _shown(data: bytes) -> str | bytes:
    """Text when the bytes are UTF-8 (a prompt, a model name), else the bytes (a file)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")
