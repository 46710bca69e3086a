"""Cassette formats: parsed document → Cassette, and (for recording) Exchange → document data.

Each format is one module exposing ``NAME``, ``sniff(data) -> bool``, ``describe(data)`` and
``parse_interaction(raw, position) -> (id, RecordedRequest, RecordedResponse)`` to read, and
``new_document()``, ``next_id(interactions)`` and ``dump_interaction(exchange, id) -> dict`` to
write. The format is
chosen from the content, never from the file name (go-vcr and vcrpy both say ``version: 1``;
go-vcr requests have a ``url``, vcrpy requests a ``uri``).
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


def detect(data: Any) -> ModuleType | None:
    """The format module that reads ``data``, or None."""
    return next((fmt for fmt in FORMATS if fmt.sniff(data)), None)


def parse_cassette(document: Document, *, name: str, file: str) -> Cassette:
    """Build a Cassette; raise CassetteLoadError, or InvalidCassette with every bad interaction."""
    data = document.data
    if _is_pre_1_vcrpy(data):
        raise CassetteLoadError(
            "a vcrpy cassette from before vcrpy 1.0 (a bare list of interactions): convert it with "
            "`python -m vcr.migration FILE`", file=file, line=1
        )
    if not isinstance(data, dict) or "interactions" not in data:
        raise CassetteLoadError(
            "not a cassette: expected a mapping with `version` and `interactions`", file=file, line=1
        )
    fmt = detect(data)
    if fmt is None:
        version = data.get("version")
        raise UnknownFormat(
            f"unknown cassette format (version: {version!r}); expected go-vcr (version 1 or 2) or vcrpy (version 1)",
            file=file,
            line=document.line_of_key("version") or 1,
        )
    raw_interactions = data["interactions"]
    if raw_interactions is None:  # `interactions:` with nothing under it
        raw_interactions = []
    if not isinstance(raw_interactions, list):
        raise CassetteLoadError(
            "`interactions` must be a list", file=file, line=document.line_of_key("interactions")
        )

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
    interactions.sort(key=lambda interaction: interaction.id)  # stable: file order breaks ties
    syntax = " (JSON)" if document.syntax == "json" else ""
    return Cassette(name=name, file=file, format=fmt.describe(data) + syntax, interactions=tuple(interactions))


def _is_pre_1_vcrpy(data: Any) -> bool:
    first = data[0] if isinstance(data, list) and data else None
    return isinstance(first, dict) and "request" in first and "response" in first

