"""Each session's place in the recorded sequences, and how often it was served each recording.

State is keyed by plain values: a sequence by ``(cassette name, match key)``, and a recording
in it by its ordinal (given back, and listed as usage, as ``(cassette name, match key,
ordinal)``). The keys are the index's own key objects, never a copy of a received body. Plain
values make the state independent of any one index: a reload swaps in a new index that reads
the same ``Sessions``, so positions and usage counts survive for every recording that is still
there, and a request still finishing on the old index advances the same positions.

Sessions are bounded: the least recently used one is forgotten (with a log line) when a new one
would exceed the limit. Replay changes the state on the event loop while reloads and admin
listings read it from worker threads, so every access holds one lock, briefly.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol, TypeVar

from .keys import MatchKey

log = logging.getLogger("cassette_server")

DEFAULT_SESSION = "default"
DEFAULT_MAX_SESSIONS = 10_000

SequenceRef = tuple[str, MatchKey]  # (cassette name, match key): one cassette's recordings of one request
Recording = tuple[str, MatchKey, int]  # (cassette name, match key, ordinal in that sequence)
T = TypeVar("T", bound="TakenFrom")


class TakenFrom(Protocol):
    """What a session takes from: a sequence (index.RecordedSequence)."""

    @property
    def ref(self) -> SequenceRef: ...

    @property
    def interactions(self) -> tuple[Any, ...]: ...


class SessionState:
    """One session: for each sequence it used, its next position and how often each of its
    recordings was served (one list, so a take looks the sequence up once), and positions given
    back (a client that left before its answer was committed)."""

    __slots__ = ("counts", "returned")

    def __init__(self) -> None:
        # per sequence: [next position, times recording 0 was served, times recording 1 was, ...]
        self.counts: dict[SequenceRef, list[int]] = {}
        self.returned: dict[SequenceRef, list[int]] = {}  # heaps: the smallest is served first

    def take(self, sequences: Sequence[T], repeat_last: bool) -> tuple[T, int, bool] | None:
        """Take the next recording of the first of ``sequences`` not used up: (that sequence,
        the recording's ordinal, False). A given-back ordinal comes first (smallest first), else
        the next unserved one. When all are used up: the last recording of the last sequence,
        repeated (True), or None unless ``repeat_last``."""
        counts = self.counts
        for sequence in sequences:
            ref = sequence.ref
            length = len(sequence.interactions)
            slot = counts.get(ref)
            if slot is None:
                slot = counts[ref] = [0] * (length + 1)
            elif len(slot) <= length:  # longer than when first used (a reload, or a request on the old index)
                slot.extend([0] * (length + 1 - len(slot)))
            if self.returned and (ordinal := self._given_back(ref, length)) is not None:
                slot[ordinal + 1] += 1
                return sequence, ordinal, False
            position = slot[0]
            if position < length:
                slot[0] = position + 1
                slot[position + 1] += 1
                return sequence, position, False
        if not repeat_last:
            return None
        slot[length] += 1  # the last of the last sequence
        return sequence, length - 1, True

    def _given_back(self, ref: SequenceRef, length: int) -> int | None:
        returned = self.returned.get(ref)
        while returned:
            ordinal = heapq.heappop(returned)
            if ordinal < length:  # a reload may have shortened the sequence since
                if not returned:
                    del self.returned[ref]
                return ordinal
        if returned is not None:
            del self.returned[ref]
        return None

    def served(self) -> dict[Recording, int]:
        """How often each recording was served (never: absent)."""
        return {(*ref, ordinal): times for ref, slot in self.counts.items()
                for ordinal, times in enumerate(slot[1:]) if times}

    def give_back(self, recording: Recording, *, advanced: bool) -> None:
        """Undo one take of ``recording``: it was never delivered. Only a position this state has
        passed is given back (not one from before a reset, or beyond a shortened sequence)."""
        ref, ordinal = (recording[0], recording[1]), recording[2]
        slot = self.counts.get(ref)
        if slot is None:  # reset since
            return
        if ordinal + 1 < len(slot) and slot[ordinal + 1]:
            slot[ordinal + 1] -= 1
        if advanced and ordinal < slot[0]:
            heapq.heappush(self.returned.setdefault(ref, []), ordinal)

    def adopt(self, changed: Collection[str], sequence: Callable[[SequenceRef], tuple[SequenceRef, int] | None]) -> None:
        """Carry the state of cassettes in ``changed`` over to a new index. ``sequence`` gives the
        new index's own ref and length for a ref, None when it holds no such sequence: state of
        sequences that are gone is dropped, positions and counts are cut to the new length, and
        keys become the new index's objects (so the old index's keys can be freed)."""
        for ref in [ref for ref in self.counts if ref[0] in changed]:
            slot = self.counts.pop(ref)
            found = sequence(ref)
            if found is not None:
                new_ref, length = found
                slot[0] = min(slot[0], length)
                del slot[length + 1 :]
                self.counts[new_ref] = slot
        for ref in [ref for ref in self.returned if ref[0] in changed]:
            ordinals = self.returned.pop(ref)
            found = sequence(ref)
            if found is not None and (kept := [n for n in ordinals if n < found[1]]):
                heapq.heapify(kept)
                self.returned[found[0]] = kept


class Sessions:
    """Every session's state, least recently used first, at most ``limit`` sessions."""

    def __init__(self, limit: int = DEFAULT_MAX_SESSIONS) -> None:
        if limit < 1:
            raise ValueError(f"the session limit must be at least 1, not {limit}")
        self.limit = limit
        self._states: OrderedDict[str, SessionState] = OrderedDict()
        self.lock = threading.Lock()  # replay takes on the event loop; reloads and listings read from threads

    def state(self, session: str) -> SessionState:
        """The state of ``session``, created when new, now the most recently used. Call it with
        ``lock`` held, and keep holding it while using the state (a take is one ``with`` block)."""
        state = self._states.get(session)
        if state is None:
            state = self._states[session] = SessionState()
            if len(self._states) > self.limit:
                dropped, _ = self._states.popitem(last=False)
                log.info("Session '%s' forgotten: more than %d sessions (--max-sessions), and it was used least "
                         "recently; it starts its sequences afresh if it comes back", dropped, self.limit)
        else:
            self._states.move_to_end(session)
        return state

    def give_back(self, session: str, recording: Recording, *, advanced: bool) -> None:
        """Return a taken recording (its client left before the answer was committed): it is the
        next one served in that session. Nothing to do when the session was forgotten since."""
        with self.lock:
            state = self._states.get(session)
            if state is not None:
                state.give_back(recording, advanced=advanced)

    def reset(self, session: str | None = None) -> None:
        """Forget one session's state, or every session's."""
        with self.lock:
            if session is None:
                self._states.clear()
            else:
                self._states.pop(session, None)

    def names(self) -> list[str]:
        with self.lock:
            return list(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def served(self) -> dict[str, dict[Recording, int]]:
        """A copy of every session's usage counts. Copied one session at a time, so a replay
        waiting for the lock waits for one session's copy at most."""
        copies: dict[str, dict[Recording, int]] = {}
        for session in self.names():
            with self.lock:
                state = self._states.get(session)
                if state is not None and (served := state.served()):
                    copies[session] = served
        return copies

    def adopt(self, changed: Collection[str], sequence: Callable[[SequenceRef], tuple[SequenceRef, int] | None]) -> None:
        """Carry every session's state of the cassettes in ``changed`` (replaced, added or
        removed) over to a new index (see ``SessionState.adopt``), one session at a time."""
        if not changed:
            return
        for session in self.names():
            with self.lock:
                state = self._states.get(session)
                if state is not None:
                    state.adopt(changed, sequence)
