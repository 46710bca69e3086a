"""Request paths while recording: which part of ``/__cassette/NAME/…`` names a cassette that is
not loaded yet, and the path to send upstream once the prefix is gone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..errors import BadRequest
from ..storage import name_problem

# An API version segment (v1, v1beta, v2alpha1, …): where a provider's path starts.
_VERSION_SEGMENT = re.compile(r"v\d+(?:alpha|beta)?\d*")
# What a path keeps unencoded when it has to be encoded again (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def new_cassette_name(rest: str) -> str:
    """The cassette a ``/__cassette/{rest}`` URL names when no loaded cassette does: the
    segments before the first API version segment (``team/chat`` in ``team/chat/v1/messages``),
    else the first segment. Raises BadRequest for a name that cannot be a cassette file."""
    segments = rest.split("/")
    cut = next((i for i, segment in enumerate(segments) if i and _VERSION_SEGMENT.fullmatch(segment)), 1)
    name = "/".join(segments[:cut])
    problem = name_problem(name)
    if problem:
        raise BadRequest(f"cassette name {name!r} (from the URL prefix /__cassette/{name}/) {problem}; use a relative "
                         "name without extension, like /__cassette/team/chat/v1/…")
    return name


def forwarded_path(scope: Mapping[str, Any], path: str) -> str:
    """The path to send upstream: the client's own bytes (its percent-encoding kept) with any
    ``/__cassette/NAME`` prefix removed; ``path`` is the decoded path without the prefix."""
    raw = scope.get("raw_path")
    if path == "/" or not raw:
        return quote(path, safe=_PATH_SAFE)
    raw_segments = raw.decode("latin-1").split("/")
    if len(raw_segments) != len(scope["path"].split("/")):  # an encoded slash: segments do not line up
        return quote(path, safe=_PATH_SAFE)
    kept = path.count("/")
    return "/" + "/".join(raw_segments[len(raw_segments) - kept:])


# Printable ASCII but for what a URL's query cannot hold as such: the quote, angle brackets and `#`.
_QUERY_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) not in '"<>#')


def forwarded_query(query: str) -> str:
    """The query to send upstream, and to record: the client's own bytes (``query`` is them
    decoded as latin-1), its percent-encoding kept, and what cannot stand in a URL (a quote,
    angle brackets; a space or bytes that are not ASCII, which uvicorn's parsers refuse anyway)
    percent-encoded, as httpx would send it. So the recorded URL is the one sent."""
    return quote(query.encode("latin-1"), safe=_QUERY_SAFE)
