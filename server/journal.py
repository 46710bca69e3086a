"""The request journal: a bounded record of every request the replay endpoint answered (served,
missed or refused), newest first, for the admin API to explain what a test saw.

Recording costs one small record per request. A miss brings its near misses along (computed
once, for the miss message), so hits pay nothing for them; what they keep is bounded (long
values cut around where they differ, see ``nearmiss.NearMiss.kept``), so the journal's memory is
bounded by its size, whatever the requests' bodies.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .errors import CassetteMiss, HTTPError
from .matching.nearmiss import NearMiss
from .models import Interaction, Recorded

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
    """One answered request, never changed once added. ``interaction`` is None when it was not
    served from a cassette."""

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
    def near_misses(self) -> tuple[NearMiss, ...]:
        """For a miss, the closest recordings, closest first, each with its differences as kept."""
        return self.error.near_misses if isinstance(self.error, CassetteMiss) else ()

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
            data["near_misses"] = [near.to_json() for near in self.near_misses]
        return data


class Journal:
    """The newest ``size`` entries; older ones fall off. Size 0 keeps nothing."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: deque[JournalEntry] = deque(maxlen=size)

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def add(self, entry: JournalEntry) -> None:
        self._entries.appendleft(entry)

    def entries(self, *, session: str | None = None, matched: bool | None = None, limit: int | None = None) -> list[JournalEntry]:
        """Newest first, optionally only one session's and only hits (True) or the rest (False)."""
        found = []
        for entry in list(self._entries):
            if (session is None or entry.session == session) and (matched is None or entry.matched == matched):
                found.append(entry)
                if limit is not None and len(found) >= limit:
                    break
        return found

    def clear(self, session: str | None = None) -> None:
        """Forget every entry, or one session's."""
        if session is None:
            self._entries.clear()
            return
        kept = [entry for entry in self._entries if entry.session != session]
        self._entries.clear()
        self._entries.extend(kept)

    def __len__(self) -> int:
        return len(self._entries)
