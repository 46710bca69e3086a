"""The request journal: a bounded record of every request the replay endpoint answered (served,
missed or refused), newest first, for the admin API to explain what a test saw.

Recording costs one small record per request. A miss brings its near misses along (computed
once, for the miss message, and kept as JSON text: no objects for the garbage collector to
scan), so hits pay nothing for them; what they keep is bounded (long values cut around where
they differ, see ``nearmiss.NearMiss.kept``).
The journal is bounded twice: by entries (``--journal-size``) and by the bytes they hold
(``--journal-max-bytes``), each entry's size estimated once, when it is added, from sizes
known already (no serialising), so a storm of long misses cannot hold more than the bound.

A hit written whole (most requests of a test suite) is kept as a plain list of what varies, and
made a ``JournalEntry`` only when read: building the entry and estimating its size were half of
the journal's cost on that path (``Journal.add_hit``).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .errors import CassetteMiss, HTTPError
from .models import Interaction, Recorded
from .strict_json import json_value

if TYPE_CHECKING:
    from .replay.faults import Fired


class Outcome(str, enum.Enum):
    """What became of a served request's reply."""

    COMPLETE = "complete"  # every piece was sent
    CLIENT_LEFT_BEFORE_HEADERS = "client_left_before_headers"  # nothing sent (status 499); the recording was given back
    CLIENT_LEFT_MID_STREAM = "client_left_mid_stream"  # the recorded status went out, not every piece
    INTERRUPTED = "interrupted"  # the server stopped sending (shutting down, or an error in the log)
    REPLACED_BY_FAULT = "replaced_by_fault"  # a fault answered (or closed) instead; the recording was given back
    CUT_BY_FAULT = "cut_by_fault"  # a fault closed the connection mid-answer; the recording was given back


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~1 µs more on every request
class JournalEntry:
    """One answered request, never changed once added (but for ``Journal.forget_bodies``).
    ``interaction`` is None when it was not served from a cassette."""

    time: float  # wall clock (seconds since the epoch) when the request arrived
    session: str
    method: str
    path: str  # as the client sent it, with any /__cassette/NAME prefix
    query: str
    status: int
    duration: float  # seconds from arrival until the reply was finished (streams: the last event)
    interaction: Interaction | None = None
    repeated: bool = False  # served again after its sequence was used up
    relaxation: str | None = None  # the matching relaxation that found it, if any
    error: HTTPError | None = None  # why it was not served (a miss, an unknown cassette, …)
    outcome: Outcome | None = None  # for a served request: what became of its reply
    pieces_sent: int | None = None  # body pieces (events, frames, or the whole body) sent
    pieces_total: int | None = None  # body pieces recorded
    recorded: Recorded | None = None  # forwarded upstream (record modes): what was recorded, or why not
    fault: Fired | None = None  # the fault that fired on this request, and its rule

    @property
    def matched(self) -> bool:
        """Answered with a cassette's interaction: served from it, or recorded into it."""
        return self.interaction is not None

    @property
    def near_misses_json(self) -> bytes:
        """For a miss, the closest recordings, closest first, each with its differences as kept:
        a JSON array (``CassetteMiss.near_misses_json``)."""
        return self.error.near_misses_json if isinstance(self.error, CassetteMiss) else b"[]"

    def to_json(self, *, near_misses: bool = False) -> dict[str, Any]:
        interaction = self.interaction
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(self.time, timezone.utc).isoformat(timespec="milliseconds"),
            "session": self.session,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "matched": self.matched,
            "interaction": interaction.label if interaction else None,
            "cassette": interaction.cassette if interaction else None,
            "id": interaction.id if interaction else None,
            "repeated": self.repeated,
            "relaxation": self.relaxation,
            "status": self.status,
            "duration": round(self.duration, 6),
            "error": {"code": self.error.code, "message": self.error.message} if self.error else None,
            "outcome": self.outcome.value if self.outcome else None,
            "pieces_sent": self.pieces_sent,
            "pieces_total": self.pieces_total,
            "recorded": self.recorded.to_json() if self.recorded else None,
            "fault": self.fault.to_json() if self.fault else None,
        }
        if near_misses:
            data["near_misses"] = json_value(self.near_misses_json)
        return data


DEFAULT_MAX_BYTES = 32 * 1024**2
RELEASE_NOTICE_BYTES = 4 * 1024**2  # forgotten entries holding this much are worth giving back (``on_release``)
# An entry without near misses: the record, its numbers and small strings (measured with
# tracemalloc: ~400 bytes for a hit; misses add their message and near misses, counted apart).
ENTRY_BYTES = 512


# A hit kept by ``add_hit``: the list, its numbers, and the strings it shares with the request.
HIT_BYTES = 400
STR_BYTES = 80  # a str object's own header, at most (sys.getsizeof("") is 49 to 76)


def text_bytes(text: str | bytes) -> int:
    """The bytes ``text`` holds, at most: up to 4 per character (``sys.getsizeof`` exactly, but
    ~0.2 µs a call on every request, against ~0.05 µs for this)."""
    return STR_BYTES + (len(text) if text.isascii() else 4 * len(text))


def entry_bytes(entry: JournalEntry) -> int:
    """What an entry holds, roughly, from sizes known without serialising anything: the fixed
    part, the strings the client chose (path, query), and for an error its message and the
    near misses' JSON text as kept (compressed)."""
    size = ENTRY_BYTES + text_bytes(entry.path) + text_bytes(entry.query)
    error = entry.error
    if error is not None:
        size += text_bytes(error.message)
        if isinstance(error, CassetteMiss):  # its near misses, as kept (compressed)
            size += STR_BYTES + len(error.near_misses_packed)  # bytes: one byte each, ASCII or not
    return size


class Journal:
    """The newest entries, at most ``size`` of them holding at most ``max_bytes`` together;
    older ones fall off (the newest is always kept). Size 0 keeps nothing. ``on_release`` is
    called whenever the entries forgotten since its last call held ``RELEASE_NOTICE_BYTES``
    (memory.Trimmer gives it back to the system)."""

    def __init__(self, size: int, max_bytes: int = DEFAULT_MAX_BYTES, *,
                 on_release: Callable[[], None] | None = None) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.on_release = on_release
        # newest first, each with its size; the oldest falls off as one more goes in. An item is
        # a JournalEntry, or a hit's fields (``add_hit``: a list, placed as _ARRIVED… below) until read.
        self._entries: deque[tuple[JournalEntry | list[Any], int]] = deque(maxlen=size)
        self._bytes = 0
        self._released = 0  # bytes forgotten since on_release was last called

    @property
    def enabled(self) -> bool:
        return self.size > 0

    @property
    def held_bytes(self) -> int:
        """The estimated bytes the entries hold."""
        return self._bytes

    def add(self, entry: JournalEntry) -> None:
        if self.size:
            self._push(entry, entry_bytes(entry))

    def add_hit(self, arrived: float, took: float, session: str, method: str, path: str, query: bytes,
                interaction: Interaction, repeated: bool, relaxation: str | None, pieces: int) -> None:
        """A hit written whole, in one go (``pieces``: all its recorded pieces), ``arrived`` on the
        monotonic clock, ``took`` seconds after, ``query`` as received. Kept as a list (its size
        bounded from lengths alone: a str holds at most 4 bytes a character) and read as
        ``JournalEntry(outcome=COMPLETE)``."""
        if self.size:
            self._push([arrived, took, session, method, path, query, interaction, repeated, relaxation, pieces],
                       HIT_BYTES + 4 * len(path) + len(query))

    def _push(self, item: JournalEntry | list[Any], size: int) -> None:
        entries = self._entries
        forgotten = entries[-1][1] if len(entries) == self.size else 0  # once full, on every request: kept cheap
        entries.appendleft((item, size))
        self._bytes += size
        while self._bytes - forgotten > self.max_bytes and len(entries) > 1:
            forgotten += entries.pop()[1]
        if forgotten:
            self._forgotten(forgotten)

    def _forgotten(self, size: int) -> None:
        self._bytes -= size
        self._released += size
        if self._released >= RELEASE_NOTICE_BYTES and self.on_release is not None:
            self._released = 0
            self.on_release()

    def forget_bodies(self, cassettes: Collection[str], still_served: Callable[[Interaction], bool]) -> None:
        """Keep only who served (``Interaction.identity``) in the entries served from or
        recorded into an interaction of ``cassettes`` (just reloaded or removed) that is no
        longer ``still_served`` (near misses are JSON text: they hold no interaction). Else the
        journal would keep old interactions, bodies and all, alive after the index let go of
        them; entries are bounded in number and in their own bytes, not in those."""
        if not cassettes or not self._entries:
            return

        def gone(interaction: Interaction | None) -> bool:
            return interaction is not None and interaction.cassette in cassettes and not still_served(interaction)

        for entry, _ in list(self._entries):  # a copy made at once: reloads run in threads, the loop adds entries
            if isinstance(entry, list):  # a hit not read yet
                if gone(entry[_INTERACTION]):
                    entry[_INTERACTION] = entry[_INTERACTION].identity()
                continue
            if gone(entry.interaction):
                entry.interaction = entry.interaction.identity()  # type: ignore[union-attr]
            recorded = entry.recorded
            if recorded is not None and gone(recorded.interaction):
                entry.recorded = replace(recorded, interaction=recorded.interaction.identity())  # type: ignore[union-attr]

    def entries(self, *, session: str | None = None, matched: bool | None = None, limit: int | None = None) -> list[JournalEntry]:
        """Newest first, optionally only one session's and only hits (True) or the rest (False)."""
        found = []
        clocks = time.time() - time.monotonic()  # a hit's arrival is kept on the monotonic clock
        for item, _ in list(self._entries):
            entry = _hit_entry(item, clocks) if isinstance(item, list) else item
            if (session is None or entry.session == session) and (matched is None or entry.matched == matched):
                found.append(entry)
                if limit is not None and len(found) >= limit:
                    break
        return found

    def clear(self, session: str | None = None) -> None:
        """Forget every entry, or one session's."""
        kept = [] if session is None else [item for item in self._entries if _session(item[0]) != session]
        self._entries.clear()
        self._entries.extend(kept)
        self._forgotten(self._bytes - sum(size for _, size in kept))

    def __len__(self) -> int:
        return len(self._entries)


# The place of each field in a hit's list (``Journal.add_hit``).
_ARRIVED, _TOOK, _SESSION, _METHOD, _PATH, _QUERY, _INTERACTION, _REPEATED, _RELAXATION, _PIECES = range(10)


def _session(item: JournalEntry | list[Any]) -> str:
    return item[_SESSION] if isinstance(item, list) else item.session


def _hit_entry(hit: list[Any], clocks: float) -> JournalEntry:
    """The entry for a hit kept by ``add_hit``; ``clocks``: wall clock minus monotonic clock."""
    interaction: Interaction = hit[_INTERACTION]  # or its identity (forget_bodies): the status is kept
    return JournalEntry(
        time=clocks + hit[_ARRIVED],
        session=hit[_SESSION],
        method=hit[_METHOD],
        path=hit[_PATH],
        query=hit[_QUERY].decode("latin-1"),
        status=interaction.response.status,
        duration=hit[_TOOK],
        interaction=interaction,
        repeated=hit[_REPEATED],
        relaxation=hit[_RELAXATION],
        outcome=Outcome.COMPLETE,
        pieces_sent=hit[_PIECES],
        pieces_total=hit[_PIECES],  # written whole: every piece went
    )
