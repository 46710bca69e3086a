"""The index: match key → the recorded sequences that answer it.

A sequence is one cassette's recordings of one request (one match key), in recorded order. A
request costs one dict lookup and a walk over its key's few sequences: unscoped, the cassettes
that hold the key in load order, taking from the first sequence with something left; scoped, its
cassette's sequence. Positions and usage counts live in ``Sessions``, by cassette name and key, so
a scoped and an unscoped request share one position per recording, and an index built on reload
reads them where the old one left them. A reload swaps a new Index in whole; requests in flight
finish on the one they started with.

An index is built from the previous one when there is one: cassettes carried over unchanged (the
same Cassette object) keep their keys and sequences, and only the others are keyed again, so
swapping in one changed cassette costs that cassette, not all of them.
"""

from __future__ import annotations

import bisect
import difflib
import enum
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

from ..models import Cassette, Interaction
from .keys import BodyKey, MatchKey, MatchRules
from .relaxations import RelaxedIndex
from .sessions import DEFAULT_SESSION, Recording, SequenceRef, Sessions

__all__ = ["DEFAULT_SESSION", "Exhausted", "Index", "Match", "RecordedSequence", "Take", "key_of"]

_NAME_NEIGHBOURS = 25  # names compared in full on each side of a name, sorted forwards and backwards


class Exhausted(enum.Enum):
    """What to do when every interaction recorded for a request has been served."""

    REPEAT_LAST = "repeat-last"  # serve the last one again (go-vcr / vcrpy playback repeats)
    ERROR = "error"  # answer with a miss


@dataclass(slots=True)  # made per request: a frozen __init__ costs ~1.2 µs more
class Match:
    """A successful take (``Index.take``) or lookup: what to serve, how it was found, and what
    was taken to serve it."""

    interaction: Interaction
    repeated: bool = False  # served again after its sequence was used up (--exhausted repeat-last)
    relaxation: str | None = None  # the matching relaxation that found it, if the strict match failed
    session: str = DEFAULT_SESSION
    recording: Recording | None = None  # the position taken: given back if the answer is never committed


@dataclass(slots=True)
class Take:
    """A take that found nothing to serve. ``interaction`` is always None; ``candidates``
    lists the interactions that matched but were all used up (empty for a plain miss)."""

    interaction: None
    candidates: tuple[Interaction, ...] = ()


@dataclass(frozen=True, eq=False)
class RecordedSequence:
    """One cassette's recordings of one request, in recorded order."""

    ref: SequenceRef  # (cassette name, the index's own key object)
    interactions: tuple[Interaction, ...]
    recordings: tuple[Recording, ...]  # (cassette, key, ordinal) of each, made once: sessions share them

    @classmethod
    def of(cls, cassette: str, key: MatchKey, interactions: Sequence[Interaction]) -> RecordedSequence:
        return cls((cassette, key), tuple(interactions), tuple((cassette, key, n) for n in range(len(interactions))))


class Index:
    def __init__(
        self, cassettes: Sequence[Cassette], rules: MatchRules, exhausted: Exhausted, *,
        sessions: Sessions | None = None, previous: Index | None = None, relax: bool = True,
    ) -> None:
        """Index ``cassettes``; with ``previous`` (built with the same rules), cassettes it holds
        as the very same objects are taken over from it rather than keyed again. ``relax``:
        whether to build the relaxed keys (``--no-relax`` never uses them: a tenth of a large
        corpus's load time saved)."""
        self.cassettes = tuple(cassettes)
        self.rules = rules
        self.exhausted = exhausted
        self._repeat_last = exhausted is not Exhausted.ERROR  # read on every take
        self.sessions = sessions if sessions is not None else previous.sessions if previous else Sessions()
        self.by_name = {cassette.name: cassette for cassette in self.cassettes}
        kept = {name for name, cassette in self.by_name.items() if previous and previous.by_name.get(name) is cassette}
        base = previous if previous is not None and kept else None
        # per cassette: its interactions' keys (in order) and its sequences
        self._keys: dict[str, tuple[MatchKey, ...]] = dict(base._keys) if base else {}
        self._by_cassette: dict[str, tuple[RecordedSequence, ...]] = dict(base._by_cassette) if base else {}
        self._sequences: dict[MatchKey, tuple[RecordedSequence, ...]] = dict(base._sequences) if base else {}
        self._scoped: dict[SequenceRef, RecordedSequence] = dict(base._scoped) if base else {}
        # recorded JSON bodies as recorded → their body keys (MatchRules.key): a pure function of
        # the bytes under these rules, so entries of cassettes gone since are still right
        self.known_bodies: dict[bytes, BodyKey] = dict(base.known_bodies) if base else {}
        gone = [name for name in previous.by_name if name not in kept] if previous else []
        fresh = [cassette for cassette in self.cassettes if cassette.name not in kept]
        removed = [sequence for name in gone for sequence in self._remove(name)] if base else []
        added = [sequence for cassette in fresh for sequence in self._add(cassette)]
        # the cassettes whose sequences changed: sessions' state of them is carried over (Sessions.adopt)
        self.changed = frozenset(gone) | {cassette.name for cassette in fresh}
        if base is None:  # the fallback after a strict miss
            self.relaxed = RelaxedIndex(self._scoped if relax else ())
            return
        order = {name: position for position, name in enumerate(self.by_name)}
        touched = {sequence.ref[1] for sequence in added}
        for key in touched:  # sequences of one key in cassette load order
            self._sequences[key] = tuple(sorted(self._sequences[key], key=lambda sequence: order[sequence.ref[0]]))
        self.relaxed = base.relaxed if not relax else base.relaxed.updated(
            added=[sequence.ref for sequence in added if sequence.ref not in base._scoped],
            removed=[sequence.ref for sequence in removed if sequence.ref not in self._scoped],
        )

    def _add(self, cassette: Cassette) -> list[RecordedSequence]:
        keys = tuple(key_of(interaction, self.rules) for interaction in cassette.interactions)
        grouped: dict[MatchKey, list[Interaction]] = {}
        for key, interaction in zip(keys, cassette.interactions):
            grouped.setdefault(key, []).append(interaction)
            body = interaction.request.body
            if key[4] is not body and isinstance(key[4], bytes):  # re-serialised: a JSON body (not a form, not bytes)
                self.known_bodies[body] = key[4]
        sequences = [RecordedSequence.of(cassette.name, key, interactions) for key, interactions in grouped.items()]
        self._keys[cassette.name] = keys
        self._by_cassette[cassette.name] = tuple(sequences)
        for sequence in sequences:
            self._scoped[sequence.ref] = sequence
            key = sequence.ref[1]
            self._sequences[key] = (*self._sequences.get(key, ()), sequence)
        return sequences

    def _remove(self, name: str) -> tuple[RecordedSequence, ...]:
        del self._keys[name]
        sequences = self._by_cassette.pop(name)
        for sequence in sequences:
            del self._scoped[sequence.ref]
            key = sequence.ref[1]
            others = tuple(other for other in self._sequences.pop(key) if other.ref[0] != name)
            if others:  # under another cassette's key object: this cassette's can be freed
                self._sequences[others[0].ref[1]] = others
        return sequences

    @property
    def interactions(self) -> Iterable[Interaction]:
        for cassette in self.cassettes:
            yield from cassette.interactions

    def recorded(self, scope: str | None = None) -> Iterator[tuple[Interaction, MatchKey]]:
        """Every interaction (of cassette ``scope``, or of all) with its match key, in recorded
        order: what near misses compare, without keying anything again."""
        cassettes = (self.by_name[scope],) if scope is not None else self.cassettes
        for cassette in cassettes:
            yield from zip(cassette.interactions, self._keys[cassette.name])

    def take(self, key: MatchKey, *, session: str = DEFAULT_SESSION, scope: str | None = None) -> Match | Take:
        """The next interaction for ``key`` in this session (optionally within one cassette), as
        a Match; Take when there is none."""
        if scope is None:
            sequences = self._sequences.get(key)
        else:
            scoped = self._scoped.get((scope, key))
            sequences = (scoped,) if scoped is not None else None
        if not sequences:
            return Take(None)
        sessions = self.sessions
        with sessions.lock:
            taken = sessions.state(session).take(sequences, self._repeat_last)
        if taken is None:
            return Take(None, tuple(interaction for sequence in sequences for interaction in sequence.interactions))
        sequence, ordinal, repeated = taken
        # positional: faster, on every hit
        return Match(sequence.interactions[ordinal], repeated, None, session, sequence.recordings[ordinal])

    def peek(self, key: MatchKey) -> tuple[Interaction, ...]:
        """Every interaction recorded for ``key``, across cassettes, without taking any."""
        return tuple(interaction for sequence in self._sequences.get(key, ()) for interaction in sequence.interactions)

    def sequence(self, ref: SequenceRef) -> tuple[SequenceRef, int] | None:
        """This index's own ref for a sequence and its length, or None when it has no such one."""
        found = self._scoped.get(ref)
        return (found.ref, len(found.interactions)) if found is not None else None

    def closest_names(self, name: str, count: int) -> list[str]:
        """Up to ``count`` loaded cassette names that look like ``name`` (a typo, a missing part),
        closest first. Only the names next to it in sorted order, forwards and backwards (the
        ones sharing the longest start or end), are compared in full, so thousands cost little."""
        forwards, backwards = self._sorted_names
        at = bisect.bisect_left(forwards, name)
        near = set(forwards[max(0, at - _NAME_NEIGHBOURS) : at + _NAME_NEIGHBOURS])
        at = bisect.bisect_left(backwards, name[::-1])
        near.update(backward[::-1] for backward in backwards[max(0, at - _NAME_NEIGHBOURS) : at + _NAME_NEIGHBOURS])
        return difflib.get_close_matches(name, sorted(near), count)

    @cached_property
    def _sorted_names(self) -> tuple[list[str], list[str]]:
        """The cassette names sorted, and sorted as read backwards (each reversed)."""
        return sorted(self.by_name), sorted(name[::-1] for name in self.by_name)

    def usage(self) -> dict[Interaction, dict[str, int]]:
        """How often each interaction was served, per session (never served: absent). A snapshot
        of the sessions' counts, so it may be called off the event loop."""
        counts: dict[Interaction, dict[str, int]] = {}
        for session, served in self.sessions.served().items():
            for (cassette, key, ordinal), times in served.items():
                sequence = self._scoped.get((cassette, key))
                if sequence is not None and ordinal < len(sequence.interactions):
                    counts.setdefault(sequence.interactions[ordinal], {})[session] = times
        return counts


def key_of(interaction: Interaction, rules: MatchRules) -> MatchKey:
    """The match key of a recorded interaction."""
    request = interaction.request
    return rules.key(request.method, request.path, request.query, request.header, request.body)
