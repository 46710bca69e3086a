"""Why a request missed: the closest recorded interactions and exactly how each differs.

Only runs on a miss (the slow path), off the event loop: it only reads. Recorded bodies come from
their load-time canonical form (in the match key), and a cheap pre-ranking bounds how many are
compared in full (``COMPARED``), so a miss among thousands of recordings stays cheap.
Differences are computed on normalised values, so what it reports is what matching compared:
ignored fields and key order never show up as differences.

What the request journal keeps of a near miss is bounded (``NearMiss.kept``): a 1 MB prompt
that missed must not stay in memory 1000 times over.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from ..models import Interaction, ReceivedRequest, RecordedRequest
from .fieldpath import format_field_path
from .forms import diff_forms
from .keys import CONTENT_TYPE, BodyKey, MatchKey, MatchRules, is_json, normalise_query, parse_json


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()

COMPARED = 50  # recordings compared in full for one miss, the closest-looking ones
KEPT_VALUE_LENGTH = 20_000  # characters of one value a kept difference holds at most
KEPT_NEAR_MISS_LENGTH = 50_000  # characters of differences a kept near miss holds (at least one difference)


@dataclass(frozen=True)
class Cut:
    """What a value shortened for keeping was in full."""

    length: int  # characters (bytes for binary data; JSON text for objects and arrays)
    sha256: str  # the first 12 hex digits of the SHA-256 of its UTF-8 (or JSON) text


@dataclass(frozen=True)
class Difference:
    """One way a request differs from a recording. ``field`` is a JSON path for body fields
    (``messages[2].content``), the header or parameter name for ``header`` / ``query``."""

    part: str  # method | path | query | header | body
    field: str | None
    recorded: Any
    received: Any
    rendered: str | None = None  # the one-line text, made before the values were cut (``kept``)
    recorded_cut: Cut | None = None  # set when ``recorded`` was shortened
    received_cut: Cut | None = None

    @property
    def where(self) -> str:
        if self.part == "body":
            return self.field if self.field is not None else "body"
        return f"{self.part} {self.field}" if self.field else self.part

    @property
    def text(self) -> str:
        return self.rendered if self.rendered is not None else render_difference(self)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"part": self.part, "field": self.field, "where": self.where}
        for side in ("recorded", "received"):
            value = getattr(self, side)
            if value is not ABSENT:
                data[side] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            cut = getattr(self, f"{side}_cut")
            if cut is not None:
                data[f"{side}_length"], data[f"{side}_sha256"] = cut.length, cut.sha256
        return data

    def kept(self, limit: int = KEPT_VALUE_LENGTH) -> Difference:
        """This difference with every value longer than ``limit`` characters cut, the full
        length and a hash noted. Two strings (or byte strings) keep the same stretch around the
        first place they differ, so they stay comparable where it matters; other values keep
        their head and tail (objects and arrays as JSON text). The one-line text is made from
        the full values first."""
        recorded, received = self.recorded, self.received
        if type(recorded) is type(received) and isinstance(recorded, (str, bytes)):
            start = common_prefix_length(recorded, received)
            begin = max(0, start - limit // 3)
            (recorded, recorded_cut), (received, received_cut) = (_window(recorded, begin, limit),
                                                                  _window(received, begin, limit))
        else:
            (recorded, recorded_cut), (received, received_cut) = _ends(recorded, limit), _ends(received, limit)
        return replace(self, recorded=recorded, received=received, rendered=self.text,
                       recorded_cut=recorded_cut, received_cut=received_cut)

    def kept_length(self) -> int:
        """Roughly the characters a kept difference holds (for the near miss's budget)."""
        return len(self.text) + sum(len(_as_text(value)) for value in (self.recorded, self.received) if value is not ABSENT)


@dataclass(frozen=True)
class NearMiss:
    interaction: Interaction
    differences: tuple[Difference, ...]
    score: int
    omitted: int = 0  # differences left out by ``kept``

    def to_json(self) -> dict[str, Any]:
        """Every difference (values cut only where ``kept`` cut them), each also rendered as
        one readable line cut around where the values part."""
        interaction = self.interaction
        return {
            "interaction": interaction.label,
            "cassette": interaction.cassette,
            "id": interaction.id,
            "file": interaction.file,
            "line": interaction.line,
            "score": self.score,
            "differences": [{**d.to_json(), "text": d.text} for d in self.differences],
            "omitted_differences": self.omitted,
        }

    def kept(self) -> NearMiss:
        """What the request journal keeps: each value cut to ``KEPT_VALUE_LENGTH`` characters
        (``Difference.kept``), and differences in order while they fit in
        ``KEPT_NEAR_MISS_LENGTH`` characters (the first always does); the rest are counted."""
        kept: list[Difference] = []
        used = 0
        for difference in self.differences:
            small = difference.kept()
            used += small.kept_length()
            if kept and used > KEPT_NEAR_MISS_LENGTH:
                break
            kept.append(small)
        return replace(self, differences=tuple(kept), omitted=self.omitted + len(self.differences) - len(kept))


def near_misses(
    request: ReceivedRequest, recorded: Iterable[tuple[Interaction, MatchKey]], rules: MatchRules, limit: int = 3, *,
    received_key: MatchKey | None = None, compared: int = COMPARED,
) -> list[NearMiss]:
    """The ``limit`` closest of the ``recorded`` interactions (each with its match key), closest
    first (ties: recorded order).

    Interactions on the same method and path are preferred; the others are considered only
    when none is on the request's endpoint. Of those, at most ``compared`` are compared in
    full: the ones whose bodies look closest by a cheap measure (the longest common start and
    end, then the nearest length). Recorded bodies are read from their match keys (the
    canonical form made at load time), never normalised from their raw bytes again.
    """
    method = request.method.upper()
    if received_key is None:
        received_key = rules.key(method, request.path, request.query, request.header, request.body)
    pool = [(order, interaction, key) for order, (interaction, key) in enumerate(recorded)]
    candidates = [item for item in pool if item[2][0] == method and item[2][1] == request.path] or pool
    if len(candidates) > compared:
        body = _comparable(received_key[4], request.body)
        candidates = sorted(heapq.nsmallest(compared, candidates, key=lambda item: _looks_close(item, body)))
    received_body = rules.json_value(request.body) if not rules.exact_body else None
    ranked = []
    for order, interaction, key in candidates:
        differences = compare(interaction, request, rules, received_body, recorded_key=key)
        score = _score(differences)
        ranked.append((score, order, NearMiss(interaction, tuple(differences), score)))
    ranked.sort(key=lambda item: item[:2])
    return [near for _, _, near in ranked[:limit]]


def _looks_close(item: tuple[int, Interaction, MatchKey], body: bytes) -> tuple[int, int, int]:
    """How close a recording looks to a received body, cheaply (smaller is closer): the bytes
    their canonical bodies share at the start and the end, then how much their lengths differ."""
    order, interaction, key = item
    recorded = _comparable(key[4], interaction.request.body)
    return -shared_ends(recorded, body), abs(len(recorded) - len(body)), order


def _comparable(body_key: BodyKey, body: bytes) -> bytes:
    """The bytes a body is pre-ranked by: its canonical form, or for a form (whose key holds its
    parts) the body as sent."""
    return body_key if isinstance(body_key, bytes) else body


def shared_ends(a: bytes, b: bytes) -> int:
    """How many bytes two byte strings share at their start plus at their end (at most the
    shorter's length)."""
    shared = common_prefix_length(a, b) + common_prefix_length(a, b, from_end=True)
    return min(shared, len(a), len(b))


def compare(
    interaction: Interaction, request: ReceivedRequest, rules: MatchRules, received_body: Any = None, *,
    recorded_key: MatchKey | None = None,
) -> list[Difference]:
    """Every difference that matching saw between a recording and a request. ``recorded_key``
    (the recording's match key) saves normalising the recorded body again."""
    recorded = interaction.request
    differences: list[Difference] = []
    if recorded.method != request.method.upper():
        differences.append(Difference("method", None, recorded.method, request.method.upper()))
    if recorded.path != request.path:
        differences.append(Difference("path", None, recorded.path, request.path))
    differences += _mapping_differences("query", _query_values(recorded.query), _query_values(request.query))
    for name in rules.match_headers:
        if recorded.header(name) != request.header(name):
            differences.append(Difference("header", name, _or_absent(recorded.header(name)), _or_absent(request.header(name))))
    body_key = recorded_key[4] if recorded_key is not None else None
    recorded_value = parse_json(body_key) if isinstance(body_key, bytes) and not rules.exact_body else None
    form = _form_differences(recorded, request, rules)
    differences += form if form is not None else _body_differences(recorded.body, request.body, rules, received_body,
                                                                   recorded_value)
    return differences


def _form_differences(recorded: RecordedRequest, received: ReceivedRequest, rules: MatchRules) -> list[Difference] | None:
    """Part by part (``part file``, ``form model``) when both bodies are forms of one kind; else
    None, and the bodies are compared whole."""
    received_form = rules.form_of(received.body, received.header(CONTENT_TYPE))
    recorded_form = rules.form_of(recorded.body, recorded.header(CONTENT_TYPE)) if received_form is not None else None
    if received_form is None or recorded_form is None or recorded_form.kind != received_form.kind:
        return None
    return [Difference("body", where, _or_absent(a), _or_absent(b)) for where, a, b in diff_forms(recorded_form, received_form)]


def _body_differences(recorded: bytes, received: bytes, rules: MatchRules, received_value: Any, recorded_value: Any) -> list[Difference]:
    if rules.exact_body:
        return [] if recorded == received else [Difference("body", None, recorded, received)]
    if recorded_value is None:
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


def _query_values(query: str) -> dict[str, str | list[str]]:
    """Each parameter's value, or its values (sorted, as matching compares them) when it is
    given several times: a dict of the pairs would keep only the last one."""
    values: dict[str, list[str]] = {}
    for name, value in normalise_query(query):
        values.setdefault(name, []).append(value)
    return {name: found[0] if len(found) == 1 else found for name, found in values.items()}


def _mapping_differences(part: str, recorded: dict[str, Any], received: dict[str, Any]) -> list[Difference]:
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


# ---- keeping ---------------------------------------------------------------------------------


def common_prefix_length(a: Any, b: Any, *, from_end: bool = False) -> int:
    """The length of the common prefix (``from_end``: suffix) of two strings (or byte strings);
    found by comparing halves, not characters, which keeps a megabyte prompt cheap."""
    same, most = 0, min(len(a), len(b))  # the first (last) ``same`` agree; they agree on at most ``most``
    while same < most:
        middle = (same + most + 1) // 2
        if from_end:
            agree = a[len(a) - middle : len(a) - same] == b[len(b) - middle : len(b) - same]
        else:
            agree = a[same:middle] == b[same:middle]
        if agree:
            same = middle
        else:
            most = middle - 1
    return same


def _window(value: Any, begin: int, limit: int) -> tuple[Any, Cut | None]:
    """``value[begin:begin + limit]``, marked with "…" where cut, or ``value`` when it fits."""
    end = begin + limit
    if begin == 0 and len(value) <= end:
        return value, None
    mark = _mark(value)
    return (mark if begin else mark[:0]) + value[begin:end] + (mark if end < len(value) else mark[:0]), _cut(value)


def _ends(value: Any, limit: int) -> tuple[Any, Cut | None]:
    """A value longer than ``limit`` as its head, "…" and its tail (objects and arrays as JSON
    text); shorter ones as they are."""
    if value is ABSENT or isinstance(value, (bool, int, float)) or value is None:
        return value, None
    text = value if isinstance(value, (str, bytes)) else _json_text(value)
    if len(text) <= limit:
        return value, None
    tail = limit // 4
    return text[: limit - tail] + _mark(text) + text[-tail:], _cut(text)


def _mark(value: str | bytes) -> Any:
    """Where a kept value was cut: "…" (in UTF-8 for bytes)."""
    return "…" if isinstance(value, str) else "…".encode()


def _cut(value: str | bytes) -> Cut:
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return Cut(len(value), hashlib.sha256(data).hexdigest()[:12])


def _as_text(value: Any) -> str | bytes:
    return value if isinstance(value, (str, bytes)) else _json_text(value)


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # big integers, nesting beyond 254 levels, lone surrogates: orjson refuses them
        pass
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except RecursionError:
        return "(JSON nested too deeply to show)"


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
        text = _json_text(value) if not isinstance(value, str) else _quote(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _excerpts(a: str, b: str, width: int) -> tuple[str, str]:
    """Both strings quoted, cut to ``width`` around the first character where they differ."""
    begin = max(0, common_prefix_length(a, b) - width // 3)

    def cut(text: str) -> str:
        tail = "…" if begin + width < len(text) else ""
        return _quote(("…" if begin else "") + text[begin : begin + width] + tail)

    return cut(a), cut(b)


def _quote(text: str) -> str:
    return _json_text(text)
