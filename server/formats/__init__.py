"""Cassette formats: parsed document → Cassette, and (for recording) Exchange → document data.

Each format is one module exposing ``NAME``, ``sniff(data) -> bool``, ``looks_like(interaction)
-> bool``, ``describe(data)`` and ``parse_interaction(raw, position) -> (id, RecordedRequest,
RecordedResponse)`` to read, and ``new_document()``, ``next_id(interactions)`` and
``dump_interaction(exchange, id) -> dict`` to write. The format is chosen from the content, never
from the file name (go-vcr and vcrpy both say ``version: 1``; go-vcr requests have a ``url``,
vcrpy requests a ``uri``).

vcrpy never reads ``version``, so tools that write vcrpy cassettes their own way may leave it
out: such a document is read by the shape of its interactions, with a note saying so.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..documents import Document
from ..errors import CassetteLoadError, InvalidCassette, UnknownFormat
from ..models import Cassette, Interaction
from . import govcr, vcrpy
from .common import DELIBERATE_REPEAT_FIELD

FORMATS: tuple[ModuleType, ...] = (govcr, vcrpy)
FORMATS_BY_NAME: dict[str, ModuleType] = {fmt.NAME: fmt for fmt in FORMATS}


def detect(data: dict[str, Any]) -> ModuleType | None:
    """The format module that reads ``data``, or None."""
    return identify(data)[0]


def identify(data: dict[str, Any]) -> tuple[ModuleType | None, str | None]:
    """The format module that reads ``data`` (or None), and a note when it was told from the
    interactions alone, because the document has no ``version``."""
    first = _first_interaction(data)
    if "version" in data:  # both may claim a `version: 1`: the one its interactions look like wins
        sniffed = [fmt for fmt in FORMATS if fmt.sniff(data)]
        liked = [fmt for fmt in sniffed if first is not None and fmt.looks_like(first)]
        return (liked or sniffed or [None])[0], None
    for fmt in (vcrpy, govcr):  # vcrpy first: only vcrpy reads documents without a version
        if first is not None and fmt.looks_like(first):
            return fmt, (f"no `version` key: read as {fmt.NAME}, which its interactions look like "
                         f"(add `version: {fmt.VERSION_WRITTEN}` to say so)")
    if first is None:
        return vcrpy, "no `version` key and no interactions: read as an empty vcrpy cassette"
    return None, None


def parse_cassette(document: Document, *, name: str, file: str) -> Cassette:
    """Build a Cassette; raise CassetteLoadError, or InvalidCassette with every bad interaction."""
    data = document.data
    if _is_pre_1_vcrpy(data):
        raise CassetteLoadError(
            "a vcrpy cassette from before vcrpy 1.0 (a bare list of interactions): convert it with "
            "`python -m vcr.migration FILE`", file=file, line=1
        )
    notes: list[str] = []
    if isinstance(data, dict) and "interactions" not in data and vcrpy.is_request_response_lists(data):
        try:
            data = vcrpy.as_interactions(data)
        except CassetteLoadError as error:
            raise CassetteLoadError(error.reason, file=file, line=document.line_of_key("responses")) from None
        notes.append("`requests` and `responses` lists (vcrpy's in-memory cassette, as LangChain's persister "
                     "writes it): read as vcrpy interactions, paired in order")
    if not isinstance(data, dict) or "interactions" not in data:
        raise CassetteLoadError(_not_a_cassette(data), file=file, line=1)
    fmt, note = identify(data)
    if fmt is None:
        raise UnknownFormat(_unknown_format(data), file=file, line=document.line_of_key("version") or 1)
    notes += [note] if note else []
    raw_interactions = data["interactions"]
    if raw_interactions is None:  # `interactions:` with nothing under it
        raw_interactions = []
    if not isinstance(raw_interactions, list):
        raise CassetteLoadError(
            "`interactions` must be a list", file=file, line=document.line_of_key("interactions")
        )
    _refuse_hybrid(fmt, data, file=file, line=document.line_of_key("version"))

    interactions: list[Interaction] = []
    problems: list[CassetteLoadError] = []
    for position, raw in enumerate(raw_interactions):
        line = document.line_of_interaction(position)
        try:
            interaction_id, request, response = fmt.parse_interaction(raw, position)
        except CassetteLoadError as error:
            problems.append(CassetteLoadError(f"interaction {position}: {error.reason}", file=file, line=line))
            continue
        except RecursionError:
            problems.append(CassetteLoadError(f"interaction {position}: nested too deeply", file=file, line=line))
            continue
        deliberate = isinstance(raw, dict) and raw.get(DELIBERATE_REPEAT_FIELD) is True
        interactions.append(Interaction(name, interaction_id, request, response, file, line, deliberate))
    if problems:
        raise InvalidCassette(problems)
    notes += _repeated_ids(interactions)
    interactions.sort(key=lambda interaction: interaction.id)  # stable: file order breaks ties
    syntax = " (JSON)" if document.syntax == "json" else ""
    return Cassette(name=name, file=file, format=fmt.describe(data) + syntax, interactions=tuple(interactions),
                    notes=tuple(notes))


def _repeated_ids(interactions: list[Interaction]) -> list[str]:
    """A note per id used more than once (go-vcr ids are written, not positions): go-vcr replays
    such a file, and so do we, in file order, but ``name#id`` then names several interactions."""
    lines: dict[int, list[str]] = {}
    for interaction in interactions:
        lines.setdefault(interaction.id, []).append(str(interaction.line))
    return [f"id {number} is used by {len(where)} interactions (lines {', '.join(where)}): they are served in file "
            f"order, but {interactions[0].cassette}#{number} names each of them in the journal and listings; "
            "number them apart" for number, where in lines.items() if len(where) > 1]


def _first_interaction(data: dict[str, Any]) -> dict[str, Any] | None:
    interactions = data.get("interactions")
    first = interactions[0] if isinstance(interactions, list) and interactions else None
    return first if isinstance(first, dict) else None


def _refuse_hybrid(fmt: ModuleType, data: dict[str, Any], *, file: str, line: int | None) -> None:
    """A document whose version names one format while its interactions are the other's (a
    go-vcr ``version: 2`` over vcrpy interactions): one clear error instead of one per interaction."""
    first = _first_interaction(data)
    other = vcrpy if fmt is govcr else govcr
    if first is None or "version" not in data or fmt.looks_like(first) or not other.looks_like(first):
        return
    raise UnknownFormat(
        f"`version: {data['version']!r}` is {fmt.NAME}'s, but the interactions are written as {other.NAME} "
        f"writes them ({other.SHAPE}); a {other.NAME} cassette says `version: {other.VERSION_WRITTEN}`: fix the "
        f"version, or rewrite the interactions as {fmt.NAME}'s", file=file, line=line or 1)


def _not_a_cassette(data: Any) -> str:
    if isinstance(data, dict) and ("http_interactions" in data):
        return ("not a cassette we read: `http_interactions` is the layout of Ruby's VCR and of betamax; "
                "cassette-server reads go-vcr and vcrpy cassettes (`interactions`)")
    found = f"a mapping with keys {sorted(map(str, data))[:8]}" if isinstance(data, dict) else (
        "an empty document" if data is None else f"a {type(data).__name__}")
    return f"not a cassette: expected a mapping with `version` and `interactions`, found {found}"


def _unknown_format(data: dict[str, Any]) -> str:
    version = data.get("version")
    first = _first_interaction(data)
    shape = next((f"; its interactions look like {fmt.NAME}'s: if {fmt.NAME} wrote it, set `version: "
                  f"{fmt.VERSION_WRITTEN}`" for fmt in (vcrpy, govcr) if first is not None and fmt.looks_like(first)), "")
    return (f"unknown cassette format (version: {version!r}); expected go-vcr (version 1 or 2) or vcrpy "
            f"(version 1){shape}")


def _is_pre_1_vcrpy(data: Any) -> bool:
    first = data[0] if isinstance(data, list) and data else None
    return isinstance(first, dict) and "request" in first and "response" in first
