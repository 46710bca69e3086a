"""The index: match key → recorded interactions, and each session's place in those sequences.

Built once from loaded cassettes; a request costs one dict lookup. Identical recorded requests
are served in recorded order (cassette load order, then id). A reload builds a new Index and
swaps it in whole, so requests in flight finish on the one they started with.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..models import Cassette, Interaction
from .keys import MatchKey, MatchRules
from .relaxations import RelaxedIndex

DEFAULT_SESSION = "default"


class Exhausted(enum.Enum):
    """What to do when every interaction recorded for a request has been served."""

    REPEAT_LAST = "repeat-last"  # serve the last one again (go-vcr / vcrpy playback repeats)
    ERROR = "error"  # answer with a miss


@dataclass(frozen=True)
class Take:
    """The outcome of a lookup. ``interaction`` is None on a miss; ``candidates`` then lists
    the interactions that matched but were all used up (empty for a plain miss)."""

    interaction: Interaction | None
    candidates: tuple[Interaction, ...] = ()
    repeated: bool = False  # served again after the sequence was used up


class Index:
    def __init__(self, cassettes: Sequence[Cassette], rules: MatchRules, exhausted: Exhausted) -> None:
        self.cassettes = tuple(cassettes)
        self.rules = rules
        self.exhausted = exhausted
        self.by_name = {cassette.name: cassette for cassette in self.cassettes}
        self._all: dict[MatchKey, list[Interaction]] = {}
        self._scoped: dict[tuple[str, MatchKey], list[Interaction]] = {}
        for cassette in self.cassettes:
            for interaction in cassette.interactions:
                key = key_of(interaction, rules)
                self._all.setdefault(key, []).append(interaction)
                self._scoped.setdefault((cassette.name, key), []).append(interaction)
        self.relaxed = RelaxedIndex(self._all, self._scoped)  # the fallback after a strict miss
        # (session, scope, key) → how many of that sequence were served
        self._positions: dict[tuple[str, str | None, MatchKey], int] = {}
        self.served: Counter[tuple[str, Interaction]] = Counter()

    @property
    def interactions(self) -> Iterable[Interaction]:
        for cassette in self.cassettes:
            yield from cassette.interactions

    def take(self, key: MatchKey, *, session: str = DEFAULT_SESSION, scope: str | None = None) -> Take:
        """The next interaction for ``key`` in this session (optionally within one cassette)."""
        sequence = self._all.get(key) if scope is None else self._scoped.get((scope, key))
        if not sequence:
            return Take(None)
        cursor = (session, scope, key)
        position = self._positions.get(cursor, 0)
        if position < len(sequence):
            self._positions[cursor] = position + 1
            interaction, repeated = sequence[position], False
        elif self.exhausted is Exhausted.REPEAT_LAST:
            interaction, repeated = sequence[-1], True
        else:
            return Take(None, tuple(sequence))
        self.served[(session, interaction)] += 1
        return Take(interaction, repeated=repeated)

    def peek(self, key: MatchKey) -> tuple[Interaction, ...]:
        """Every interaction recorded for ``key``, across cassettes, without taking any."""
        return tuple(self._all.get(key, ()))

    def reset(self, session: str | None = None) -> None:
        """Rewind every sequence (of one session, or of all)."""
        if session is None:
            self._positions.clear()
            self.served.clear()
            return
        self._positions = {cursor: n for cursor, n in self._positions.items() if cursor[0] != session}
        for counted in [counted for counted in self.served if counted[0] == session]:
            del self.served[counted]


def key_of(interaction: Interaction, rules: MatchRules) -> MatchKey:
    """The match key of a recorded interaction."""
    request = interaction.request
    return rules.key(request.method, request.path, request.query, request.header, request.body)
