"""Matching relaxations: named rewrites of a request's path and query that let a client whose
base URL or SDK differs from the recording's still find its recorded answer.

They are a fallback: tried only after the strict lookup misses, and used only when they point
at one recorded request. Each relaxation rewrites the path and query of a match key (method,
headers and body stay as they are). They are tried as cumulative stages, in the order of
``RELAXATIONS``: stage k applies relaxations 1..k to both the received key and every recorded
key, so each stage is coarser than the one before. The first stage at which the received key
meets a recording decides:

- it meets one recorded request (recorded once, or many times as a sequence): that is the
  match, served from that request's own sequence, so a relaxed request and a strict one for
  the same recording advance the same position;
- it meets several different recorded requests: ambiguous, no match (a later, coarser stage
  could only be more ambiguous).

Recorded keys are relaxed once, at load time (``RelaxedIndex``; on a reload, only the keys of the
cassettes that changed); a request pays for the relaxations only when its strict lookup has missed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .keys import MatchKey
from .sessions import SequenceRef

Query = tuple[tuple[str, str], ...]
Rewrite = Callable[[str, Query], tuple[str, Query]]


@dataclass(frozen=True)
class Relaxation:
    """One named rewrite; ``summary`` says what it does (``cassette-server serve --help`` shows it)."""

    name: str
    summary: str
    rewrite: Rewrite


def _without_parameter(name: str) -> Rewrite:
    def rewrite(path: str, query: Query) -> tuple[str, Query]:
        return path, tuple(pair for pair in query if pair[0] != name)

    return rewrite


_GOOGLE_VERSION = re.compile(r"v1(?:alpha|beta)\d*")


def _google_api_version(path: str, query: Query) -> tuple[str, Query]:
    if "/v1" not in path:
        return path, query
    segments = ["v1" if _GOOGLE_VERSION.fullmatch(segment) else segment for segment in path.split("/")]
    return "/".join(segments), query


def _missing_v1(path: str, query: Query) -> tuple[str, Query]:
    if path == "/v1" or path.startswith("/v1/"):
        return path[3:] or "/", query
    return path, query


# The first path segment of an OpenAI-compatible endpoint (and Anthropic's /messages): what
# comes before it is the provider's prefix (/v1, /openai/v1, /api/v1, /v1beta/openai, …).
ENDPOINT_ROOTS = frozenset(
    {
        "chat", "completions", "responses", "embeddings", "messages", "models", "moderations",
        "images", "audio", "files", "uploads", "batches", "rerank", "conversations",
        "assistants", "threads", "vector_stores", "fine_tuning", "realtime",
    }
)


def _endpoint_tail(path: str, query: Query) -> tuple[str, Query]:
    segments = path.split("/")
    start = None
    if "deployments" in segments:  # Azure: /openai/deployments/{deployment}/chat/completions
        position = segments.index("deployments")
        start = position + 2 if position + 2 < len(segments) else None
    if start is None:
        start = next((i for i, segment in enumerate(segments) if segment in ENDPOINT_ROOTS), None)
    if start is None:
        return path, query
    return "/" + "/".join(segments[start:]), query


RELAXATIONS: tuple[Relaxation, ...] = (
    Relaxation(
        "anthropic-beta",
        "the query parameter `beta` is ignored (Anthropic SDKs add `?beta=true` for beta features; "
        "a Go-recorded `/v1/messages?beta=true` matches today's Python SDK's `/v1/messages`)",
        _without_parameter("beta"),
    ),
    Relaxation(
        "azure-api-version",
        "the query parameter `api-version` is ignored (Azure OpenAI puts it on every request)",
        _without_parameter("api-version"),
    ),
    Relaxation(
        "google-api-version",
        "path segments `v1beta`, `v1alpha`, `v1beta1`, … equal `v1` (google-genai asks "
        "`/v1/models/…` where recordings say `/v1beta/models/…`)",
        _google_api_version,
    ),
    Relaxation(
        "missing-v1",
        "a leading `/v1` is optional (the Vercel AI SDK's Anthropic provider, given a base URL "
        "without `/v1`, asks `/messages` where the cassette says `/v1/messages`)",
        _missing_v1,
    ),
    Relaxation(
        "openai-compatible-prefix",
        "only the endpoint part of the path is compared, from `chat/completions`, `responses`, "
        "`embeddings`, `messages`, `models`, … on (`/openai/v1/…` and "
        "`/openai/deployments/{deployment}/…` for Azure OpenAI, `/api/v1/…` for OpenRouter, any "
        "other OpenAI-compatible prefix)",
        _endpoint_tail,
    ),
)

RELAXATION_NAMES: tuple[str, ...] = tuple(relaxation.name for relaxation in RELAXATIONS)


@dataclass(frozen=True)
class RelaxedFind:
    """What the relaxations found for a request that missed strictly.

    ``recorded`` is the one recorded key to serve (None when nothing or several were found);
    ``name`` names the relaxations that made the difference (``missing-v1+anthropic-beta``);
    ``ambiguous`` lists the recorded keys when one stage met several.
    """

    recorded: MatchKey | None = None
    name: str | None = None
    stage: str | None = None
    ambiguous: tuple[MatchKey, ...] = ()


def relax(key: MatchKey, stage: int) -> MatchKey:
    """``key`` with relaxations 0..stage applied to its path and query."""
    path, query = _rewritten(key, RELAXATIONS[: stage + 1])
    return (key[0], path, query, key[3], key[4])


def relaxed_forms(key: MatchKey) -> list[MatchKey]:
    """``relax(key, stage)`` for every stage, in one pass (each stage rewrites the one before).
    A stage that changes nothing gives the very same tuple as the one before (``key`` itself when
    no stage changes it): an index keeps one per stage and recording, and most stages change
    nothing."""
    method, path, query, headers, body = key
    forms = []
    current = key
    for new_path, new_query in _rewrites(path, query):
        if new_path != current[1] or new_query != current[2]:
            current = (method, new_path, new_query, headers, body)
        forms.append(current)
    return forms


@functools.lru_cache(maxsize=4096)
def _rewrites(path: str, query: Query) -> tuple[tuple[str, Query], ...]:
    """(path, query) after each cumulative stage. Cached: recordings share a few endpoints, so a
    corpus of thousands is relaxed in a handful of rewrites (the cache holds no body)."""
    forms = []
    for relaxation in RELAXATIONS:
        path, query = relaxation.rewrite(path, query)
        forms.append((path, query))
    return tuple(forms)


class RelaxedIndex:
    """The recorded requests under each cumulative stage of relaxations, computed at load time:
    per stage, relaxed key → the recordings (``SequenceRef``: cassette name and recorded key,
    the index's own objects) that relax to it. A lookup scoped to one cassette keeps that
    cassette's; an unscoped one, every distinct recorded key.

    A new index for a few changed cassettes is made from the previous one with ``updated``,
    which relaxes only the recordings that came or went (entries are tuples, shared, never
    changed).
    """

    def __init__(self, refs: Iterable[SequenceRef] = ()) -> None:
        self._tables: list[dict[MatchKey, tuple[SequenceRef, ...]]] = [{} for _ in RELAXATIONS]
        self._add(refs)

    def updated(self, *, added: Iterable[SequenceRef] = (), removed: Iterable[SequenceRef] = ()) -> RelaxedIndex:
        """A copy with recordings added and removed; this one is left as it is, for the requests
        still using it."""
        new = RelaxedIndex()
        new._tables = [dict(table) for table in self._tables]
        for ref in removed:
            for table, relaxed in zip(new._tables, relaxed_forms(ref[1])):
                kept = tuple(other for other in table.get(relaxed, ()) if other != ref)
                if kept:
                    table[relaxed] = kept
                else:
                    table.pop(relaxed, None)
        new._add(added)
        return new

    def _add(self, refs: Iterable[SequenceRef]) -> None:
        for ref in refs:
            for table, relaxed in zip(self._tables, relaxed_forms(ref[1])):
                there = table.get(relaxed)
                if there is None:
                    table[relaxed] = (ref,)
                elif ref not in there:
                    table[relaxed] = (*there, ref)

    def find(self, key: MatchKey, scope: str | None = None) -> RelaxedFind:
        """The recorded key that ``key`` (a strict miss) relaxes to, if one stage meets exactly one."""
        for stage, relaxed in enumerate(relaxed_forms(key)):
            refs = self._tables[stage].get(relaxed, ())
            found = tuple(dict.fromkeys(recorded for cassette, recorded in refs if scope is None or cassette == scope))
            if not found:
                continue
            name = RELAXATIONS[stage].name
            if len(found) > 1:
                return RelaxedFind(stage=name, ambiguous=found)
            return RelaxedFind(recorded=found[0], name=_names_used(key, found[0], stage), stage=name)
        return RelaxedFind()


def _names_used(received: MatchKey, recorded: MatchKey, stage: int) -> str:
    """The relaxations the match needed: those up to ``stage``, less each one without which
    the two keys still meet (so ``missing-v1`` is not named when the endpoint prefix
    relaxation alone explains the match)."""
    needed = list(RELAXATIONS[: stage + 1])
    for relaxation in list(needed):
        fewer = [other for other in needed if other is not relaxation]
        if _rewritten(received, fewer) == _rewritten(recorded, fewer):
            needed = fewer
    return "+".join(relaxation.name for relaxation in needed)


def _rewritten(key: MatchKey, relaxations: Iterable[Relaxation]) -> tuple[str, Query]:
    path, query = key[1], key[2]
    for relaxation in relaxations:
        path, query = relaxation.rewrite(path, query)
    return path, query
