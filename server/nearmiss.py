"""Why a request missed: the closest recorded interactions and exactly how each differs.

Only runs on a miss (the slow path), so it may parse recorded bodies again and scan.
Differences are computed on normalised values, so what it reports is what matching compared:
ignored fields and key order never show up as differences.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from .fieldpath import format_field_path
from .matching import MatchRules, is_json, normalise_query
from .models import Interaction, ReceivedRequest


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Difference:
    """One way a request differs from a recording. ``field`` is a JSON path for body fields
    (``messages[2].content``), the header or parameter name for ``header`` / ``query``."""

    part: str  # method | path | query | header | body
    field: str | None
    recorded: Any
    received: Any

    @property
    def where(self) -> str:
        if self.part == "body":
            return self.field if self.field is not None else "body"
        return f"{self.part} {self.field}" if self.field else self.part

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"part": self.part, "field": self.field, "where": self.where}
        for side in ("recorded", "received"):
            value = getattr(self, side)
            if value is not ABSENT:
                data[side] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        return data


@dataclass(frozen=True)
class NearMiss:
    interaction: Interaction
    differences: tuple[Difference, ...]
    score: int

    def to_json(self) -> dict[str, Any]:
        """Every difference in full (long prompts stay comparable), each also rendered as one
        readable line cut around where the values part."""
        interaction = self.interaction
        return {
            "interaction": interaction.label,
            "cassette": interaction.cassette,
            "id": interaction.id,
            "file": interaction.file,
            "line": interaction.line,
            "score": self.score,
            "differences": [{**d.to_json(), "text": render_difference(d)} for d in self.differences],
        }


def near_misses(request: ReceivedRequest, interactions: Iterable[Interaction], rules: MatchRules, limit: int = 3) -> list[NearMiss]:
    """The ``limit`` closest interactions, closest first (ties: recorded order).

    Interactions on the same method and path are preferred; the others are considered only
    when none is on the request's endpoint.
    """
    pool = list(interactions)
    same_endpoint = [i for i in pool if i.request.method == request.method.upper() and i.request.path == request.path]
    candidates = same_endpoint or pool
    received_body = rules.json_value(request.body) if not rules.exact_body else None
    ranked = []
    for order, interaction in enumerate(candidates):
        differences = compare(interaction, request, rules, received_body)
        score = _score(differences)
        ranked.append((score, order, NearMiss(interaction, tuple(differences), score)))
    ranked.sort(key=lambda item: item[:2])
    return [near for _, _, near in ranked[:limit]]


def compare(interaction: Interaction, request: ReceivedRequest, rules: MatchRules, received_body: Any = None) -> list[Difference]:
    """Every difference that matching saw between a recording and a request."""
    recorded = interaction.request
    differences: list[Difference] = []
    if recorded.method != request.method.upper():
        differences.append(Difference("method", None, recorded.method, request.method.upper()))
    if recorded.path != request.path:
        differences.append(Difference("path", None, recorded.path, request.path))
    differences += _mapping_differences("query", dict(normalise_query(recorded.query)), dict(normalise_query(request.query)))
    for name in rules.match_headers:
        if recorded.header(name) != request.header(name):
            differences.append(Difference("header", name, _or_absent(recorded.header(name)), _or_absent(request.header(name))))
    differences += _body_differences(recorded.body, request.body, rules, received_body)
    return differences


def _body_differences(recorded: bytes, received: bytes, rules: MatchRules, received_value: Any) -> list[Difference]:
    if rules.exact_body:
        return [] if recorded == received else [Difference("body", None, recorded, received)]
    recorded_value = rules.json_value(recorded)
    if received_value is None:
        received_value = rules.json_value(received)
    if is_json(recorded_value) and is_json(received_value):
        try:
            return [Difference("body", format_field_path(path), a, b) for path, a, b in diff_json(recorded_value, received_value)]
        except RecursionError:  # too deep to walk: compared whole, below
            pass
    if is_json(recorded_value) or is_json(received_value):
        if rules.body_key(recorded) == rules.body_key(received):
            return []
        return [Difference("body", None, _body_text(recorded), _body_text(received))]
    return [] if recorded == received else [Difference("body", None, _body_text(recorded), _body_text(received))]


def diff_json(recorded: Any, received: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any, Any]]:
    """(path, recorded, received) for each place two normalised JSON values differ."""
    if isinstance(recorded, dict) and isinstance(received, dict):
        found = []
        for key in list(recorded) + [key for key in received if key not in recorded]:
            found += diff_json(recorded.get(key, ABSENT), received.get(key, ABSENT), (*path, key))
        return found
    if isinstance(recorded, list) and isinstance(received, list):
        found = []
        for position in range(max(len(recorded), len(received))):
            a = recorded[position] if position < len(recorded) else ABSENT
            b = received[position] if position < len(received) else ABSENT
            found += diff_json(a, b, (*path, position))
        return found
    if type(recorded) is type(received) and recorded == received:
        return []
    return [(path, recorded, received)]


def _mapping_differences(part: str, recorded: dict[str, str], received: dict[str, str]) -> list[Difference]:
    return [
        Difference(part, name, recorded.get(name, ABSENT), received.get(name, ABSENT))
        for name in list(recorded) + [name for name in received if name not in recorded]
        if recorded.get(name, ABSENT) != received.get(name, ABSENT)
    ]


def _score(differences: list[Difference]) -> int:
    weights = {"method": 1000, "path": 500, "query": 20, "header": 10, "body": 1}
    return sum(weights[difference.part] for difference in differences)


def _or_absent(value: str | None) -> Any:
    return ABSENT if value is None else value


def _body_text(body: bytes) -> Any:
    if not body:
        return ABSENT
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body


# ---- rendering -------------------------------------------------------------------------------


def render_difference(difference: Difference, width: int = 100) -> str:
    """``messages[1].content: recorded "…", received "…"``, long strings cut around where they
    start to differ so the difference stays visible."""
    recorded, received = difference.recorded, difference.received
    if isinstance(recorded, str) and isinstance(received, str):
        recorded, received = _excerpts(recorded, received, width)
        return f"{difference.where}: recorded {recorded}, received {received}"
    return f"{difference.where}: recorded {_short(recorded, width)}, received {_short(received, width)}"


def _short(value: Any, width: int) -> str:
    if value is ABSENT:
        return "(absent)"
    if isinstance(value, bytes):
        text = f"{len(value)} bytes of binary data"
    else:
        text = orjson.dumps(value).decode() if not isinstance(value, str) else _quote(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _excerpts(a: str, b: str, width: int) -> tuple[str, str]:
    """Both strings quoted, cut to ``width`` around the first character where they differ."""
    start = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    begin = max(0, start - width // 3)

    def cut(text: str) -> str:
        tail = "…" if begin + width < len(text) else ""
        return _quote(("…" if begin else "") + text[begin : begin + width] + tail)

    return cut(a), cut(b)


def _quote(text: str) -> str:
    return orjson.dumps(text).decode()
