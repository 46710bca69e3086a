"""Request normalisation: the one function that turns a request into its index key.

Recorded requests are normalised once at load time, incoming requests once per request, with
the same function, so that two requests match exactly when their keys are equal:

- method: upper case;  path: percent-decoded;  query: decoded pairs, sorted, the value of a
  credential parameter (``key=``, ``api_key=``, …) replaced by REDACTED, so that a recording
  made with the key redacted matches a request sent with a real one;
- body: JSON compared by value (key order, whitespace, ``\\u00e9`` vs ``é``, ``1`` vs ``1.0``
  and CRLF vs LF inside strings do not matter; ignored fields are removed first); multipart
  and urlencoded forms (by the request's Content-Type) by their parts or sorted fields
  (forms.py), whatever the boundary; anything else byte for byte; ``exact_body`` compares
  every body byte for byte;
- headers: only those named in ``match_headers`` (case-insensitive names, exact values; several
  values of one header, received or recorded, compare joined with ", ").
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Union
from urllib.parse import parse_qsl, unquote

import orjson

from ..credentials import REDACTED, is_credential_parameter
from .fieldpath import FieldPath, parse_field_path, remove_field
from .forms import Form, read_form

# What normalise_json changes can only be in a body that has a number with a fraction or an
# exponent (``1.0``, ``1e2``) or an escaped carriage return; most bodies have neither and skip
# the walk. False positives (``"gpt-4.1"``) only cost the walk. (``needs_normalising`` looks for
# the escapes with ``in`` and the numbers with a pattern that starts with a character class:
# three times faster on a megabyte body than one alternation.)
_FRACTION_OR_EXPONENT = re.compile(rb"[0-9][.eE]")


def needs_normalising(body: bytes) -> bool:
    return (b"\\r" in body or b"\\u000d" in body or b"\\u000D" in body
            or _FRACTION_OR_EXPONENT.search(body) is not None)


BodyKey = Union[bytes, Form]
MatchKey = tuple[str, str, tuple[tuple[str, str], ...], tuple[str | None, ...], BodyKey]
CONTENT_TYPE = "content-type"  # a request header the key reads (forms), whatever match_headers says
_NOT_JSON = object()


@dataclass(frozen=True)
class MatchRules:
    """How requests are compared; fixed for the life of an index."""

    ignore_fields: tuple[FieldPath, ...] = ()
    match_headers: tuple[str, ...] = ()  # lower-case names
    exact_body: bool = False

    @classmethod
    def build(cls, *, ignore_fields: tuple[str, ...] = (), match_headers: tuple[str, ...] = (), exact_body: bool = False) -> MatchRules:
        """From user-facing strings; raises ValueError for a bad field path."""
        return cls(
            ignore_fields=tuple(parse_field_path(text) for text in ignore_fields),
            match_headers=tuple(name.strip().lower() for name in match_headers),
            exact_body=exact_body,
        )

    def key(self, method: str, path: str, query: str, header: Callable[[str], str | None], body: bytes,
            known_bodies: Mapping[bytes, BodyKey] | None = None) -> MatchKey:
        """The index key of a request. ``path`` must already be percent-decoded. ``known_bodies``
        (the index's: recorded JSON bodies → their body keys) saves parsing and re-serialising a
        body sent exactly as it was recorded, which is what a client replaying its own recording
        sends."""
        if self.exact_body:
            body_key: BodyKey = body
        else:
            known = known_bodies.get(body) if known_bodies else None
            body_key = known if known is not None else self.body_key(body, header(CONTENT_TYPE))
        return (
            method.upper(),
            path,
            normalise_query(query) if query else (),
            tuple(header(name) for name in self.match_headers) if self.match_headers else (),
            body_key,
        )

    def body_key(self, body: bytes, content_type: str | None = None) -> BodyKey:
        """Canonical JSON bytes for a JSON body; else the form it holds (by ``content_type``:
        the parts of a multipart body without its boundary, urlencoded fields sorted); else
        the body itself. JSON comes first: ``curl -d '{…}'`` sends JSON labelled urlencoded."""
        value = self.json_value(body)
        if value is _NOT_JSON:
            form = read_form(body, content_type)
            return body if form is None else form
        try:
            return canonical_json(value)
        except (RecursionError, ValueError):  # too deep, or not writable as JSON: compare the bytes
            return body

    def form_of(self, body: bytes, content_type: str | None) -> Form | None:
        """The form matching compares a body as, or None (JSON, not a form, ``exact_body``).
        Asks for the form first: most bodies say they are JSON, and that answer is cheap."""
        if self.exact_body:
            return None
        form = read_form(body, content_type)
        return form if form is not None and self.json_value(body) is _NOT_JSON else None  # as body_key decides

    def json_value(self, body: bytes) -> Any:
        """The normalised JSON value of a body (ignored fields removed), or ``_NOT_JSON``."""
        value = parse_json(body)
        if value is _NOT_JSON:
            return value
        try:
            if needs_normalising(body):  # else the parsed value is already normal
                value = normalise_json(value)
            for path in self.ignore_fields:
                remove_field(value, path)
        except RecursionError:  # nested deeper than Python recurses: compare the bytes
            return _NOT_JSON
        return value


def is_json(value: Any) -> bool:
    return value is not _NOT_JSON


def normalise_path(raw_path: str) -> str:
    """Percent-decode a path (ASGI servers hand it over decoded already; cassettes do not)."""
    return unquote(raw_path) or "/"


def normalise_query(query: str) -> tuple[tuple[str, str], ...]:
    """Decoded (name, value) pairs in a canonical order; blank values are kept; credentials are
    REDACTED on both sides (recordings never hold them, and they must not decide a match)."""
    if not query:
        return ()
    pairs = parse_qsl(query, keep_blank_values=True)
    return tuple(sorted((name, REDACTED) if is_credential_parameter(name) else (name, value) for name, value in pairs))


class NonFinite(float):
    """NaN, Infinity or a number too big for a double, as Python's json reads them: a float
    subclass, so that canonical_json spells it out (``NaN``) instead of orjson's ``null``."""


def _non_finite_constant(name: str) -> NonFinite:
    return NonFinite(name.replace("Infinity", "inf"))


def _float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else NonFinite(value)


def parse_json(body: bytes) -> Any:
    """The parsed body, or ``_NOT_JSON`` when it is empty or not JSON."""
    if not body:
        return _NOT_JSON
    if not _has_long_digit_run(body):  # orjson reads an integer past 64 bits as a float, losing digits
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
    try:  # what orjson refuses or misreads but Python's json reads: NaN, 1e400, lone surrogates, huge ints
        value = json.loads(body, parse_constant=_non_finite_constant, parse_float=_float)
        return _escape_lone_surrogates(value) if _SURROGATE_ESCAPE.search(body) else value
    except (ValueError, RecursionError):
        return _NOT_JSON


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# 19 digits in a row may be an integer beyond 64 bits (-9223372036854775809), which orjson turns
# into a float; false positives (a long id in a string) only cost Python's slower parser. Found by
# translating every digit to "0" and the rest to " ": a fraction of a regex scan's time.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_DIGIT_RUN = b"0" * 19
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_long_digit_run(body: bytes) -> bool:
    return _LONG_DIGIT_RUN in body.translate(_DIGITS_AS_ZEROS)


def _escape_lone_surrogates(value: Any) -> Any:
    """Strings with a lone surrogate (``"\\ud83d"``: half an emoji, cut by a client) keep it as
    its escape text, so every string the server compares, shows or writes is valid Unicode."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", value)
    if isinstance(value, dict):
        return {_escape_lone_surrogates(key): _escape_lone_surrogates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escape_lone_surrogates(item) for item in value]
    return value


def normalise_json(value: Any) -> Any:
    """A copy with CRLF → LF in strings and integral floats as ints (``1.0`` == ``1``)."""
    if isinstance(value, dict):
        return {_text(key): normalise_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise_json(item) for item in value]
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def canonical_json(value: Any) -> bytes:
    """One spelling per JSON value: sorted keys, no whitespace, UTF-8.

    The bytes are copied out of orjson's: those keep the whole buffer they were written in
    (4 KB at least, whatever ``sys.getsizeof`` says), and an index keeps one key per recorded
    JSON body: 39 MiB of a 10,000-interaction corpus's 145 MiB went there. The copy costs
    about 0.3 µs."""
    try:
        return bytes(memoryview(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)))
    except TypeError:  # integers beyond 64 bits, NonFinite, lone surrogates: Python's json writes them
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8", "surrogatepass")


def _text(value: str) -> str:
    return value.replace("\r\n", "\n") if "\r" in value else value
