"""One Settings object, and the only place that reads the environment.

Every option has a command-line flag and an environment variable ``CASSETTE_SERVER_<NAME>``;
the flag wins over the variable, the variable over the default. Each field's ``Option`` (its
dataclass metadata) is the single source for both: cli.py builds its flags from them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .loader import CASSETTE_SUFFIXES
from .matching.index import Exhausted
from .matching.keys import MatchRules
from .matching.sessions import DEFAULT_MAX_SESSIONS
from .record import RecordMode
from .record.scrub import keepable_header
from .record.upstreams import UpstreamRoute, parse_route
from .replay.faults import RuleSpec, load_rules_file, parse_spec
from .replay.pacing import parse_speed
from .storage import name_problem

ENV_PREFIX = "CASSETTE_SERVER_"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass(frozen=True)
class Option:
    """How one Settings field is spelled on the command line and in the environment."""

    flag: str
    help: str
    parse: Callable[[str], Any] = str
    metavar: str | None = None
    repeatable: bool = False  # the flag may be given many times; the variable is comma-separated
    switch: bool = False  # a flag without value; the variable takes 1/0, true/false, yes/no
    const: Any = None  # a flag without value that sets this value; the variable is parsed with ``parse``
    shown: Callable[[Any], str] | None = None  # how --help shows the default (None: as it is)

    def env_name(self, field_name: str) -> str:
        return ENV_PREFIX + field_name.upper()


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:  # its message ("could not convert string to float") says nothing of the option
        value = math.nan
    if not 0 <= value < math.inf:
        raise ValueError(f"must be a finite number of seconds >= 0, not {text!r}")
    return value


def _whole(text: str) -> int | None:
    """``text`` as an integer, None when it is none ("invalid literal for int()" is no message)."""
    try:
        return int(text)
    except ValueError:
        return None


def _port(text: str) -> int:
    value = _whole(text)
    if value is None or not 0 <= value <= 65535:
        raise ValueError(f"port must be a whole number from 0 to 65535, not {text!r}")
    return value


def _at_least(minimum: int) -> Callable[[str], int]:
    def whole_number(text: str) -> int:
        value = _whole(text)
        if value is None or value < minimum:
            raise ValueError(f"must be a whole number >= {minimum}, not {text!r}")
        return value

    return whole_number


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes, as a number with an optional binary unit: ``1048576``, ``512K``, ``64MiB``, ``1G``."""
    match = _SIZE.fullmatch(text.strip())
    value = int(match[1]) * _SIZE_UNITS[match[2].lower()] if match else 0
    if value < 1:
        raise ValueError(f"expected a size in bytes of at least 1, like 1048576, 512K, 64MiB or 1G, not {text!r}")
    return value


def shown_size(value: int) -> str:
    """A size as ``parse_size`` reads it, in the largest unit it is a whole number of (``64M``)."""
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def _token(text: str) -> str:
    token = text.strip()  # a variable read from a file often ends in a newline
    if not token:
        raise ValueError("the admin token is empty, which would leave the admin API open to anyone; set a token, "
                         "or leave the option out to run without one")
    return token


def _one_of(choices: Sequence[str], kind: Callable[[str], Any] = str) -> Callable[[str], Any]:
    """A parser taking one of ``choices`` (any case) and making it a ``kind``."""

    def parse(text: str) -> Any:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, not {text!r}")
        return kind(value)

    return parse


_exhausted = _one_of([policy.value for policy in Exhausted], Exhausted)
_log_level = _one_of(LOG_LEVELS)
_record_mode = _one_of([mode.value for mode in RecordMode], RecordMode)


def _cassette_name(text: str) -> str:
    problem = name_problem(text)
    if problem:
        raise ValueError(f"cassette name {text!r} {problem}; use a relative name without extension, like 'recorded'")
    return text


RECORD_FORMATS = ("go-vcr", "vcrpy")
_record_format = _one_of(RECORD_FORMATS)


def _timeout(text: str) -> float:
    try:
        value = _seconds(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"must be a finite number of seconds > 0, not {text!r}")
    return value


def _switch(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, not {text!r}")


def _option(option: Option, default: Any, *, secret: bool = False) -> Any:
    """A Settings field; a ``secret`` one stays out of ``repr`` (settings end up in logs and tracebacks)."""
    factory = (lambda: default) if isinstance(default, (tuple, list)) else None
    if factory:
        return field(default_factory=factory, repr=not secret, metadata={"option": option})
    return field(default=default, repr=not secret, metadata={"option": option})


@dataclass(frozen=True)
class Settings:
    paths: tuple[Path, ...] = _option(
        Option("paths", "cassette files or directories (searched recursively for *.yaml, *.yml, *.yaml.gz, *.yml.gz and "
               "cassette *.json)", Path, "PATH"),
        (Path("cassettes"),),
    )
    host: str = _option(Option("--host", "interface to listen on", metavar="HOST"), "127.0.0.1")
    port: int = _option(Option("--port", "port to listen on (0: any free port)", _port, "PORT"), 8080)
    speed: float = _option(
        Option("--speed", "timing factor: 1 as recorded, 2 twice as fast, 0 no waiting at all; "
               "a request can override it with the X-Replay-Speed header", parse_speed, "S"),
        1.0,
    )
    event_interval: float = _option(
        Option("--event-interval", "seconds between streamed events (at speed 1) when the cassette "
               "records no per-event offsets", _seconds, "SECONDS"),
        0.02,
    )
    exhausted: Exhausted = _option(
        Option("--exhausted", "when every recording of a request was served: serve the last one "
               "again (repeat-last) or answer a miss (error)", _exhausted, "{repeat-last,error}"),
        Exhausted.REPEAT_LAST,
    )
    ignore_fields: tuple[str, ...] = _option(
        Option("--ignore-field", "JSON body field to leave out of matching, e.g. 'metadata.user_id', "
               "'messages[*].cache_control', '**.id' (repeatable)", metavar="PATH", repeatable=True),
        (),
    )
    match_headers: tuple[str, ...] = _option(
        Option("--match-header", "request header that must match too (repeatable)", metavar="NAME", repeatable=True),
        (),
    )
    exact_body: bool = _option(
        Option("--exact-body", "compare request bodies byte for byte instead of as JSON values", switch=True),
        False,
    )
    strict: bool = _option(Option("--strict", "exit with an error if any cassette fails to load", switch=True), False)
    journal_size: int = _option(
        Option("--journal-size", "how many requests the request journal keeps (newest first; "
               "0 turns the journal off)", _at_least(0), "N"),
        1000,
    )
    journal_max_bytes: int = _option(
        Option("--journal-max-bytes", "memory the request journal may hold, in bytes or with a unit (K, M, G: powers "
               "of 1024), estimated per entry; past it, the oldest entries are forgotten", parse_size, "SIZE",
               shown=shown_size),
        32 * 1024**2,
    )
    max_sessions: int = _option(
        Option("--max-sessions", "how many X-Cassette-Session sessions keep their sequence positions; past "
               "that, the least recently used one is forgotten (and starts afresh)", _at_least(1), "N"),
        DEFAULT_MAX_SESSIONS,
    )
    watch: bool = _option(
        Option("--watch", "reload the cassettes whenever a cassette file changes", switch=True), False
    )
    admin_token: str | None = _option(
        Option("--admin-token", "require 'Authorization: Bearer TOKEN' on every admin call except "
               "/__admin/health and the docs (prefer the variable: flags show up in process lists)", _token, "TOKEN"),
        None,
        secret=True,
    )
    admin_open: bool = _option(
        Option("--admin-open", "let anyone who can reach the server change it through the admin API (PUT, reload, "
               "reset) without a token, also when --host is not a loopback address; only on a trusted network. "
               "Without it, such a server's admin API is read-only unless --admin-token is set", switch=True),
        False,
    )
    max_cassette_size: int = _option(
        Option("--max-cassette-size", "largest cassette: a file loaded (once decompressed), a body PUT "
               "/__admin/cassettes/NAME accepts, a request a recording forwards (413 beyond) or an answer it writes, "
               "in bytes or with a unit (K, M, G: powers of 1024); a bigger file is a load error", parse_size, "SIZE",
               shown=shown_size),
        64 * 1024**2,
    )
    max_body_size: int = _option(
        Option("--max-body-size", "largest request body the replay endpoint reads, in bytes or with a unit (K, M, G: "
               "powers of 1024); a bigger one is refused with 413 before the rest of it is read", parse_size, "SIZE",
               shown=shown_size),
        64 * 1024**2,
    )
    no_relax: bool = _option(
        Option("--no-relax", "match strictly: never fall back to the path and query relaxations "
               "(missing /v1, API versions, provider prefixes, beta and api-version parameters)", switch=True),
        False,
    )
    log_level: str = _option(
        Option("--log-level", "log verbosity", _log_level, "{" + ",".join(LOG_LEVELS) + "}"),
        "info",
    )
    access_log: bool = _option(
        Option("--access-log", "log one line per request (uvicorn's access log); without it, a summary line "
               "every 1,000 requests and at shutdown (the journal keeps each request either way)", switch=True),
        False,
    )
    # Recording (README "Recording"): `serve --record-on-miss` and the `record` command.
    record: RecordMode = _option(
        Option("--record-on-miss", "forward a request that matches no recording to the upstream, pass the answer "
               "on and record it; from then on it is replayed (the variable takes off, miss or all)",
               _record_mode, const=RecordMode.MISS),
        RecordMode.OFF,
    )
    upstream: tuple[UpstreamRoute, ...] = _option(
        Option("--upstream", "where recorded requests go: URL for all of them, or PREFIX=URL for paths under PREFIX "
               "(repeatable); without it, OpenAI, Anthropic or Gemini by the request's path and headers",
               parse_route, "URL|PREFIX=URL", repeatable=True),
        (),
    )
    out: Path | None = _option(
        Option("--out", "directory for new recorded cassettes (default: the first cassette directory, else "
               "./cassettes)", Path, "DIR"),
        None,
    )
    cassette: str = _option(
        Option("--cassette", "cassette that recordings go to when the request names none (X-Cassette, "
               "/__cassette/NAME/)", _cassette_name, "NAME"),
        "recorded",
    )
    format: str = _option(
        Option("--format", "format of new recorded cassettes (a cassette that exists keeps its own)",
               _record_format, "{" + ",".join(RECORD_FORMATS) + "}"),
        "go-vcr",
    )
    keep_headers: tuple[str, ...] = _option(
        Option("--keep-header", "request header to record besides the safe default ones (repeatable)",
               keepable_header, "NAME", repeatable=True),
        (),
    )
    record_errors: bool = _option(
        Option("--record-errors", "record answers that are not 2xx too (they are always passed on)", switch=True),
        False,
    )
    upstream_timeout: float = _option(
        Option("--upstream-timeout", "seconds to wait for the upstream to connect, to answer, and between two "
               "pieces of its answer", _timeout, "SECONDS"),
        600.0,
    )
    # Faults (README "Faults"): rules held from startup.
    faults: tuple[RuleSpec, ...] = _option(
        Option("--fault", "a fault rule held from startup, as 'KIND; name=value; ...', e.g. "
               "'rate_limit; times=1; path=/v1/chat/*' (repeatable; the variable separates rules with commas)",
               parse_spec, "SPEC", repeatable=True),
        (),
    )
    faults_file: Path | None = _option(
        Option("--faults-file", "a JSON or YAML list of fault rules held from startup (after the --fault ones)",
               Path, "FILE"),
        None,
    )

    @property
    def recording(self) -> bool:
        return self.record is not RecordMode.OFF

    def recording_directory(self) -> Path:
        """Where new recorded cassettes go: ``--out``, else the first cassette directory (one that
        does not exist yet counts, unless it is named like a file), else ./cassettes."""
        if self.out is not None:
            return self.out
        directories = (path for path in self.paths
                       if path.is_dir() or (not path.exists() and not path.name.lower().endswith(CASSETTE_SUFFIXES)))
        return next(directories, Path("cassettes"))

    def startup_faults(self) -> tuple[RuleSpec, ...]:
        """The fault rules from --fault, then the faults file (read now). Raises ValueError."""
        from_file = load_rules_file(self.faults_file) if self.faults_file is not None else ()
        return (*self.faults, *from_file)

    def match_rules(self) -> MatchRules:
        return MatchRules.build(
            ignore_fields=self.ignore_fields, match_headers=self.match_headers, exact_body=self.exact_body
        )

    @classmethod
    def resolve(cls, given: Mapping[str, Any], environ: Mapping[str, str] | None = None, *,
                only: Collection[str] | None = None) -> Settings:
        """Settings from command-line values (None or absent: not given), then the environment;
        with ``only``, just those fields (the others keep their defaults, whatever their variables say).

        Raises ValueError naming the variable or flag whose value is bad.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            if only is not None and item.name not in only:
                continue
            option: Option = item.metadata["option"]
            value = given.get(item.name)
            if value is None or value == [] or value is False and option.switch:
                env_name = option.env_name(item.name)
                if env_name not in environ:
                    continue
                value = _from_env(item.name, option, environ[env_name])
            else:
                value = _from_flag(option, value)
            values[item.name] = value
        settings = cls(**values)
        settings.match_rules()  # validates the field paths now, not at the first request
        settings.startup_faults()  # and the faults file
        return settings



def _from_env(name: str, option: Option, raw: str) -> Any:
    env_name = option.env_name(name)
    try:
        if option.switch:
            return _switch(raw)
        if name == "paths":
            return tuple(Path(part) for part in raw.split(os.pathsep) if part)
        if option.repeatable:
            return tuple(option.parse(part.strip()) for part in raw.split(",") if part.strip())
        return option.parse(raw)
    except ValueError as error:
        raise ValueError(f"{env_name}={raw!r}: {error}") from None


def _from_flag(option: Option, value: Any) -> Any:
    if isinstance(value, list):
        return tuple(value)
    if option.switch:
        return bool(value)
    return value

