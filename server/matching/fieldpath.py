"""JSON field paths: the syntax users write to ignore fields, and the one miss reports print.

    metadata.user_id          a key inside a key
    messages[2].content       an array element by position
    messages[*].cache_control every element of an array
    tools[*].*                every key of a mapping
    **.cache_control          at any depth (zero or more levels)
    ["key.with.dots"]         a key that is not a plain name (``["*"]`` is the key ``*``)
    $.model                   a leading ``$`` is allowed and means the document root
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterator
from typing import Any, Union


class Wildcard(enum.Enum):
    """A segment that stands for many. Not a string, so that a quoted key spelled like one
    (``["*"]``, ``["**"]``) stays the literal key it says."""

    ANY_KEY = "*"
    ANY_INDEX = "[*]"
    ANY_DEPTH = "**"


ANY_KEY = Wildcard.ANY_KEY
ANY_INDEX = Wildcard.ANY_INDEX
ANY_DEPTH = Wildcard.ANY_DEPTH
Segment = Union[str, int, Wildcard]  # a key, an index, or a wildcard
FieldPath = tuple[Segment, ...]

_TOKEN = re.compile(
    r"""(?P<dot>\.)?(?:
        (?P<deep>\*\*) | (?P<star>\*) | (?P<name>[^.\[\]"'*\s]+)
      | \[(?P<index>\d+)\] | \[(?P<anyindex>\*)\]
      | \[(?P<quoted>"(?:[^"\\]|\\.)*")\]
    )""",
    re.VERBOSE,
)
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def parse_field_path(text: str) -> FieldPath:
    """Parse the syntax above; raises ValueError saying where the path is wrong."""
    source = text.strip()
    position = 2 if source.startswith("$.") else 1 if source == "$" else 0
    segments: list[Segment] = []
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None or (segments and match["dot"] is None and not source[position] == "["):
            raise ValueError(f"bad field path {text!r} at character {position + 1}")
        if not segments and match["dot"] is not None:
            raise ValueError(f"bad field path {text!r}: it cannot start with '.'")
        if match["deep"]:
            segments.append(ANY_DEPTH)
        elif match["star"]:
            segments.append(ANY_KEY)
        elif match["name"] is not None:
            segments.append(match["name"])
        elif match["index"] is not None:
            segments.append(int(match["index"]))
        elif match["anyindex"]:
            segments.append(ANY_INDEX)
        else:
            segments.append(json.loads(match["quoted"]))
        position = match.end()
    if not segments:
        raise ValueError(f"bad field path {text!r}: it is empty")
    return tuple(segments)


def format_field_path(segments: tuple[str | int, ...]) -> str:
    """``messages[2].content`` style, for concrete paths (no wildcards)."""
    parts: list[str] = []
    for segment in segments:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif _PLAIN_NAME.fullmatch(segment):
            parts.append(f".{segment}" if parts else segment)
        else:
            parts.append(f"[{json.dumps(segment, ensure_ascii=False)}]")
    return "".join(parts) or "$"


def remove_field(value: Any, path: FieldPath) -> None:
    """Delete what ``path`` names from a parsed JSON value, in place. Missing parts are fine."""
    if not path:
        return
    head, rest = path[0], path[1:]
    if head is ANY_DEPTH:
        remove_field(value, rest)
        for child in list(_children(value)):
            remove_field(child, path)
        return
    if not rest:
        _delete(value, head)
        return
    for child in list(_matching(value, head)):
        remove_field(child, rest)


def _children(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        yield from value.values()
    elif isinstance(value, list):
        yield from value


def _matching(value: Any, segment: Segment) -> Iterator[Any]:
    if isinstance(value, dict):
        if segment is ANY_KEY:
            yield from value.values()
        elif isinstance(segment, str) and segment in value:
            yield value[segment]
    elif isinstance(value, list):
        if segment is ANY_INDEX:
            yield from value
        elif isinstance(segment, int) and segment < len(value):
            yield value[segment]


def _delete(value: Any, segment: Segment) -> None:
    if isinstance(value, dict):
        if segment is ANY_KEY:
            value.clear()
        elif isinstance(segment, str):
            value.pop(segment, None)
    elif isinstance(value, list):
        if segment is ANY_INDEX:
            value.clear()
        elif isinstance(segment, int) and segment < len(value):
            del value[segment]
