"""Which upstream a recorded request is forwarded to.

``--upstream URL`` sends everything to one origin (a local model server, a proxy, a stand-in);
``--upstream PREFIX=URL`` sends paths under PREFIX there (the longest prefix wins). Requests no
route covers go to the provider their path and headers name, so recording works for the big
three without any option:

- a request with ``anthropic-version`` (every Anthropic SDK sends it), ``/v1/messages`` and
  ``/v1/complete``: Anthropic;
- a request with ``x-goog-api-key``, a ``/models/NAME:action`` path (``:generateContent``,
  ``:streamGenerateContent``, …) or a ``/v1beta``/``/v1alpha`` path: Gemini;
- any other ``/v1/…`` path (``/v1/chat/completions``, ``/v1/responses``, ``/v1/models``, …): OpenAI.

Upstreams are origins (``scheme://host[:port]``): the request's own path is sent, so a request
recorded from a path replays from the same path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

OPENAI = "https://api.openai.com"
ANTHROPIC = "https://api.anthropic.com"
GEMINI = "https://generativelanguage.googleapis.com"

_GEMINI_ACTION = re.compile(r"/models/[^/]+:[A-Za-z]+$")
_GEMINI_VERSION = re.compile(r"^/(?:upload/)?v\d+(?:alpha|beta)\d*(?:/|$)")
_ANTHROPIC_PATHS = ("/v1/messages", "/v1/complete")


@dataclass(frozen=True)
class UpstreamRoute:
    """Requests whose path starts with ``prefix`` (every request when None) go to ``origin``."""

    prefix: str | None
    origin: str

    def covers(self, path: str) -> bool:
        if self.prefix is None:
            return True
        bare = self.prefix.rstrip("/")
        return path == bare or path.startswith(bare + "/")

    def __str__(self) -> str:
        return self.origin if self.prefix is None else f"{self.prefix}={self.origin}"


def parse_route(text: str) -> UpstreamRoute:
    """``URL`` or ``PREFIX=URL``; raises ValueError saying what is wrong."""
    spec = text.strip()
    prefix = None
    if "=" in spec and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", spec):
        prefix, _, spec = spec.partition("=")
        prefix = prefix.strip()
        spec = spec.strip()
        if not prefix.startswith("/"):
            raise ValueError(f"{text!r}: a route is PREFIX=URL with a path prefix like /v1/messages=https://api.anthropic.com")
    return UpstreamRoute(prefix, parse_origin(spec))


def parse_origin(text: str) -> str:
    """``scheme://host[:port]``, without a trailing slash; raises ValueError."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an upstream URL like https://api.openai.com or http://127.0.0.1:11434")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"{text!r}: give the upstream as scheme://host[:port], without a path: requests keep their own path "
            "(put a path prefix in your client's base URL instead, e.g. http://127.0.0.1:8080/api/v1)"
        )
    try:
        _ = parts.port  # raises ValueError for a port out of range
    except ValueError as error:
        raise ValueError(f"{text!r}: {error}") from None
    return f"{parts.scheme}://{parts.netloc}"


class Upstreams:
    """The configured routes, then the providers' defaults."""

    def __init__(self, routes: Sequence[UpstreamRoute]) -> None:
        prefixed = [route for route in routes if route.prefix is not None]
        self._prefixed = sorted(prefixed, key=lambda route: len(route.prefix or ""), reverse=True)
        self._everything = next((route.origin for route in reversed(routes) if route.prefix is None), None)

    def origin_for(self, path: str, header: Callable[[str], str | None]) -> str | None:
        """The origin to forward ``path`` to; ``header`` gives a request header by lower-case
        name. None when nothing covers it (not a path of a known provider)."""
        for route in self._prefixed:
            if route.covers(path):
                return route.origin
        return self._everything or provider_origin(path, header)


def provider_origin(path: str, header: Callable[[str], str | None]) -> str | None:
    """The provider a request is meant for, from its headers and path (see the module docstring)."""
    if header("anthropic-version") is not None:
        return ANTHROPIC
    if header("x-goog-api-key") is not None or _GEMINI_ACTION.search(path) or _GEMINI_VERSION.match(path):
        return GEMINI
    if any(path == known or path.startswith(known + "/") for known in _ANTHROPIC_PATHS):
        return ANTHROPIC
    if path == "/v1" or path.startswith("/v1/"):
        return OPENAI
    return None
