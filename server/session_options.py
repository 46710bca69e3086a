"""Options one session sets for itself on a shared server (its record mode, its speed), and the
requests of that session the server refused (misses above all), kept apart from the journal.

Why: a test runner gives every test its own session on one server, and each test may want its
own record mode or pace (the pytest plugin's ``--cassette-record-mode`` and ``speed=``). And a
test must be failed on its misses even when the bounded journal has forgotten them since, so a
configured session keeps its own count, and the first few errors in full.

The replay handler looks a session up only when any session is configured: a server without
session options pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import HTTPError
from .record import RecordMode
from .replay.pacing import Pacing, parse_speed

KEPT_ERRORS = 20  # errors a session keeps in full; later ones are only counted
FIELDS = ("record", "speed", "replace")


@dataclass(frozen=True)
class Refused:
    """A request of the session that the server answered with an error instead of a recording:
    what the error said, not the error (a miss's near misses can be large; the message is not)."""

    request: str  # method and path as sent (with any /__session/ID and /__cassette/NAME prefixes)
    status: int
    code: str
    message: str


@dataclass(eq=False)  # compared by identity: an object per configuration
class SessionOptions:
    """One session's options (None: the server's own) and what became of its refused requests."""

    record: RecordMode | None = None
    pacing: Pacing | None = None  # from the session's speed, with the server's event interval
    replace: bool = False  # record 'all': a cassette's first interaction recorded here replaces its old ones
    replaced: set[Path] = field(default_factory=set)  # cassette files this session has started afresh
    refused: list[Refused] = field(default_factory=list)  # the first KEPT_ERRORS refusals, in order
    refused_count: int = 0  # every refusal, kept or not

    def note(self, request: str, error: HTTPError) -> None:
        """``request`` of this session was answered with ``error`` (a miss, an unknown cassette, …)."""
        self.refused_count += 1
        if len(self.refused) < KEPT_ERRORS:
            self.refused.append(Refused(request, error.status_code, error.code, error.message))

    def to_json(self, session: str) -> dict[str, Any]:
        return {
            "session": session,
            "record": self.record.value if self.record else None,
            "speed": self.pacing.speed if self.pacing else None,
            "replace": self.replace,
            "refused": self.refused_count,
        }


def parse_options(data: Any) -> dict[str, Any]:
    """Keyword arguments for ``CassetteService.configure_session`` from JSON (the admin API):
    ``{"record": "off"|"miss"|"all", "speed": S, "replace": bool}``, every field optional.
    Raises ValueError naming the field."""
    if not isinstance(data, Mapping):
        raise ValueError(f"session options are a JSON object with any of {', '.join(FIELDS)}")
    unknown = [str(name)[:100] for name in data if name not in FIELDS]
    if unknown:
        raise ValueError(f"{unknown[0]}: not a session option; the options are {', '.join(FIELDS)}")
    options: dict[str, Any] = {}
    record = data.get("record")
    if record is not None:
        modes = [mode.value for mode in RecordMode]
        if record not in modes:
            raise ValueError(f"record: expected one of {', '.join(modes)}, not {record!r}")
        options["record"] = RecordMode(record)
    speed = data.get("speed")
    if speed is not None:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)):
            raise ValueError(f"speed: must be a number, not {speed!r}")
        options["speed"] = speed
    replace = data.get("replace")
    if replace is not None:
        if not isinstance(replace, bool):
            raise ValueError(f"replace: must be true or false, not {replace!r}")
        options["replace"] = replace
    return options


def checked_speed(speed: float) -> float:
    """A session's speed, as --speed takes it. Raises ValueError."""
    try:
        return parse_speed(str(speed))
    except ValueError as error:
        raise ValueError(f"speed: {error}") from None
