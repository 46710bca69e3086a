"""Fault rules: what may go wrong with a replayed answer (a rate limit, an overload, a cut stream,
a stall…), on which requests, how often. The rule model, its parsing and validation (JSON from the
admin API and the faults file; the ``kind; param=value`` text of the X-Replay-Fault header and
``--fault``), and the choice of the fault a request gets. Sending it is replay/send.py's work;
the provider-shaped error bodies are replay/provider_errors.py's.

Rules are checked in the order they were added; the first that applies fires, and a request gets
one fault at most. A rule applies to a request that matched a recording (a miss is answered as a
miss, never hidden behind a fault) and passes the rule's filters; then ``probability`` draws from
the rule's own ``random.Random(seed)``, once per such request, so the same requests in the same
order fire alike on every run. ``times`` counts firings: a spent rule stays listed and never
fires again.
"""

from __future__ import annotations

import enum
import fnmatch
import math
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ..models import BodyKind, Interaction

MAX_RULES = 1000  # rules held at once; more is refused (each request may be checked against all)
MAX_SPEC_LENGTH = 4096  # characters of one header or --fault value
MAX_SECONDS = 3600.0  # the longest stall, delay or Retry-After: longer is a hang, not a test
HEADER_RULE = "header"  # the rule name journaled for a fault asked for by the X-Replay-Fault header


class FaultRuleError(ValueError):
    """A rule (or header, or --fault value) that cannot be used; ``field`` names the culprit."""

    def __init__(self, field: str | None, problem: str) -> None:
        self.field = field
        super().__init__(f"{field}: {problem}" if field else problem)


class TooManyRules(ValueError):
    """Adding one more rule would exceed MAX_RULES."""


class Kind(str, enum.Enum):
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After and the provider's rate-limit headers
    SERVER_ERROR = "server_error"  # 500
    OVERLOADED = "overloaded"  # Anthropic 529 overloaded_error; 503 for OpenAI and Gemini
    STATUS = "status"  # any error status, in the provider's shape
    CUT_STREAM = "cut_stream"  # a stream ends after N events, without its end (a dropped upstream)
    STALL = "stall"  # after the headers (or N events), no bytes for S seconds, then the rest
    DELAY = "delay"  # S more seconds before the headers
    DISCONNECT = "disconnect"  # the connection closes before any response
    TRUNCATE = "truncate"  # a body sent whole is cut after N bytes (fewer than its Content-Length)

    @property
    def answers(self) -> bool:
        """Whether the fault answers instead of the recording (an error in the provider's shape)."""
        return self in _ANSWERING

    @property
    def cuts_short(self) -> bool:
        """Whether the recorded answer never reaches the client whole (an error instead, no
        answer, or a cut), whatever the client does."""
        return self not in (Kind.STALL, Kind.DELAY)


_ANSWERING = frozenset({Kind.RATE_LIMIT, Kind.SERVER_ERROR, Kind.OVERLOADED, Kind.STATUS})

# The parameters each kind takes (others are refused, so a misspelt or misplaced one is noticed).
PARAMETERS: dict[Kind, tuple[str, ...]] = {
    Kind.RATE_LIMIT: ("retry_after",),
    Kind.SERVER_ERROR: ("retry_after",),
    Kind.OVERLOADED: ("retry_after",),
    Kind.STATUS: ("status", "retry_after"),
    Kind.CUT_STREAM: ("after_events",),
    Kind.STALL: ("seconds", "after_events"),
    Kind.DELAY: ("seconds",),
    Kind.DISCONNECT: (),
    Kind.TRUNCATE: ("after_bytes",),
}
REQUIRED: dict[Kind, tuple[str, ...]] = {Kind.STATUS: ("status",), Kind.STALL: ("seconds",), Kind.DELAY: ("seconds",)}
FILTERS = ("session", "cassette", "method", "path", "times", "probability", "seed")
DEFAULT_RETRY_AFTER = 1.0  # rate_limit's Retry-After: what providers send, and short enough for tests


@dataclass(frozen=True)
class Fault:
    """What goes wrong. Parameters a kind does not take keep their defaults."""

    kind: Kind
    status: int | None = None  # kind status: the status answered
    retry_after: float | None = None  # seconds, for Retry-After (rate_limit: DEFAULT_RETRY_AFTER when not given)
    after_events: int = 0  # cut_stream: events sent before the cut; stall: events sent before the stall
    after_bytes: int = 0  # truncate: bytes of the body sent before the cut
    seconds: float = 0.0  # stall: the silence; delay: the extra wait before the headers

    def parameters(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PARAMETERS[self.kind]}

    def applies_to(self, interaction: Interaction) -> bool:
        """Whether this fault can alter ``interaction``'s answer. A cut that would cut nothing
        does not apply (the answer would arrive whole), nor does ``cut_stream`` to a body sent
        whole or ``truncate`` to a stream; a stall must come before the last piece."""
        response = interaction.response
        streamed = response.kind is not BodyKind.WHOLE
        if self.kind is Kind.CUT_STREAM:
            return streamed and self.after_events < len(response.chunks)
        if self.kind is Kind.TRUNCATE:
            return not streamed and self.after_bytes < len(response.body)
        if self.kind is Kind.STALL:
            return self.after_events < len(response.chunks)
        return True


@dataclass(frozen=True)
class Filters:
    """Which requests a rule applies to; None is "any"."""

    session: str | None = None
    cassette: str | None = None
    method: str | None = None  # upper case
    path: str | None = None  # a glob over the request path (without any /__cassette/NAME prefix)
    times: int | None = None  # fire at most this often, then the rule is spent
    probability: float | None = None  # fire on this share of the requests that pass the filters
    seed: int | str | None = None  # seeds the probability draws (one is chosen when not given)


@dataclass(frozen=True)
class RuleSpec:
    """A rule as given: the fault and when it fires."""

    fault: Fault
    filters: Filters = Filters()


@dataclass(frozen=True)
class Fired:
    """A fault chosen for one request, and the rule that chose it (``HEADER_RULE`` for the header)."""

    fault: Fault
    rule: str

    @property
    def kind(self) -> Kind:
        return self.fault.kind

    def to_json(self) -> dict[str, str]:
        return {"kind": self.fault.kind.value, "rule": self.rule}


# --- parsing and validation -------------------------------------------------------------------


def parse_rule(data: Any) -> RuleSpec:
    """A rule from JSON (the admin API, a faults file): ``{"kind": …, params…, filters…}``."""
    if not isinstance(data, Mapping):
        raise FaultRuleError(None, f"a fault rule is a JSON object with a \"kind\", not {_shown(data)}")
    return _build(data, text=False, filters=True)


def parse_spec(text: str, *, filters: bool = True) -> RuleSpec:
    """A rule from ``kind; name=value; …`` (``--fault``; the X-Replay-Fault header, which takes
    no filters: it applies to its own request)."""
    if len(text) > MAX_SPEC_LENGTH:
        raise FaultRuleError(None, f"longer than {MAX_SPEC_LENGTH} characters")
    kind, *pairs = (part.strip() for part in text.split(";"))
    values: dict[str, Any] = {"kind": kind}
    for pair in pairs:
        if not pair:
            continue
        name, equals, value = pair.partition("=")
        name = name.strip()
        if not equals or not name:
            raise FaultRuleError(None, f"expected name=value after the kind, not {pair!r} "
                                 f"(e.g. 'rate_limit; retry_after=2')")
        if name in values:
            raise FaultRuleError(name, "given twice")
        values[name] = value.strip()
    return _build(values, text=True, filters=filters)


def parse_header(text: str) -> Fault:
    """The fault an X-Replay-Fault header asks for."""
    return parse_spec(text, filters=False).fault


def load_rules_file(path: Path) -> tuple[RuleSpec, ...]:
    """The rules of a faults file: a JSON or YAML list of rule objects. Raises ValueError naming
    the file and the rule (counted from 1)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read the faults file {path}: {error}") from None
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # JSON is YAML too
    except yaml.YAMLError as error:
        raise ValueError(f"the faults file {path} is not JSON or YAML: {error}") from None
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ValueError(f"the faults file {path} must hold a list of rules (JSON or YAML), not {_shown(data)}")
    if len(data) > MAX_RULES:
        raise ValueError(f"the faults file {path} holds {len(data)} rules; at most {MAX_RULES} are kept")
    rules = []
    for number, item in enumerate(data, 1):
        try:
            rules.append(parse_rule(item))
        except FaultRuleError as error:
            raise ValueError(f"the faults file {path}, rule {number}: {error}") from None
    return tuple(rules)


def _build(values: Mapping[Any, Any], *, text: bool, filters: bool) -> RuleSpec:
    if "kind" not in values:
        raise FaultRuleError("kind", f"missing; one of {_kinds()}")
    kind = _kind(values["kind"])
    taken = PARAMETERS[kind]
    given: dict[str, Any] = {}
    for name, value in values.items():
        if name == "kind":
            continue
        if not isinstance(name, str) or (name not in _CHECKS):
            raise FaultRuleError(str(name)[:100], f"not a fault rule field; a rule has kind, {_fields()}")
        if name in FILTERS and not filters:
            raise FaultRuleError(name, "a filter, which only a rule takes (POST /__admin/faults, --fault); "
                                 "the X-Replay-Fault header applies to its own request")
        if name not in FILTERS and name not in taken:
            takes = f"takes {', '.join(taken)}" if taken else "takes no parameter"
            raise FaultRuleError(name, f"does not apply to kind {kind.value}, which {takes}")
        if value is None:
            continue  # JSON null: as if not given
        given[name] = _CHECKS[name](name, value, text)
    for name in REQUIRED.get(kind, ()):
        if name not in given:
            raise FaultRuleError(name, f"required by kind {kind.value}")
    if kind is Kind.RATE_LIMIT:
        given.setdefault("retry_after", DEFAULT_RETRY_AFTER)
    if "seed" in given and "probability" not in given:
        raise FaultRuleError("seed", "seeds the probability draws: give a probability too")
    fault = Fault(kind, **{name: value for name, value in given.items() if name not in FILTERS})
    return RuleSpec(fault, Filters(**{name: value for name, value in given.items() if name in FILTERS}))


def _kind(value: Any) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        raise FaultRuleError("kind", f"{_shown(value)} is not a fault kind; one of {_kinds()}") from None


def _kinds() -> str:
    return ", ".join(kind.value for kind in Kind)


def _fields() -> str:
    return ", ".join(_CHECKS)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _read_text(value: Any, text: bool, convert: Callable[[str], Any]) -> Any:
    """A value from text (a header, ``--fault``) converted; else, or when it does not convert, as given."""
    if text and isinstance(value, str):
        try:
            return convert(value)
        except ValueError:
            pass
    return value


def _number(name: str, value: Any, text: bool) -> float:
    value = _read_text(value, text, float)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FaultRuleError(name, f"must be a number, not {_shown(value)}")
    return float(value)


def _whole(name: str, value: Any, text: bool) -> int:
    value = _read_text(value, text, int)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultRuleError(name, f"must be a whole number, not {_shown(value)}")
    return value


def _in_range(check: Any, low: float, high: float, unit: str = "", *, above: bool = False) -> Any:
    def checked(name: str, value: Any, text: bool) -> Any:
        number = check(name, value, text)
        if number < low or number > high or (above and number == low):
            floor = f"more than {low:g}" if above else f"from {low:g}"
            raise FaultRuleError(name, f"must be {floor} to {high:g}{unit}, not {_shown(value)}")
        return number

    return checked


def _text(limit: int) -> Any:
    def checked(name: str, value: Any, text: bool) -> str:
        if not isinstance(value, str) or not value:
            raise FaultRuleError(name, f"must be a non-empty string, not {_shown(value)}")
        if len(value) > limit:
            raise FaultRuleError(name, f"longer than {limit} characters")
        return value

    return checked


_METHOD = re.compile(r"[A-Za-z]{1,20}")


def _method(name: str, value: Any, text: bool) -> str:
    if not isinstance(value, str) or not _METHOD.fullmatch(value):
        raise FaultRuleError(name, f"must be an HTTP method such as POST, not {_shown(value)}")
    return value.upper()


def _seed(name: str, value: Any, text: bool) -> int | str:
    if isinstance(value, str) and text:
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63:
        return value
    if isinstance(value, str) and 0 < len(value) <= 200:
        return value
    raise FaultRuleError(name, f"must be a whole number (or a string of up to 200 characters), not {_shown(value)}")


_CHECKS: dict[str, Any] = {
    "status": _in_range(_whole, 400, 599),
    "retry_after": _in_range(_number, 0, MAX_SECONDS, " seconds"),
    "after_events": _in_range(_whole, 0, 10**9),
    "after_bytes": _in_range(_whole, 0, 10**12),
    "seconds": _in_range(_number, 0, MAX_SECONDS, " seconds", above=True),
    "session": _text(200),
    "cassette": _text(500),
    "method": _method,
    "path": _text(1000),
    "times": _in_range(_whole, 1, 10**9),
    "probability": _in_range(_number, 0, 1, above=True),
    "seed": _seed,
}


# --- the rules held by a server ---------------------------------------------------------------


class FaultRule:
    """A rule held by the server, with its bookkeeping: how often it fired and its draws."""

    def __init__(self, spec: RuleSpec, number: int, *, startup: bool) -> None:
        self.spec = spec
        self.number = number
        self.id = f"f{number}"
        self.startup = startup  # set with --fault / --faults-file: POST /__admin/reset re-arms it
        path = spec.filters.path
        self._path = re.compile(fnmatch.translate(path)) if path is not None else None
        self.seed = spec.filters.seed
        if spec.filters.probability is not None and self.seed is None:
            self.seed = random.SystemRandom().randrange(2**32)  # shown, so a run can be repeated
        self.rearm()

    def rearm(self) -> None:
        """As new: not fired, its draws from the start of its seed's sequence."""
        self.fired = 0
        self._random = random.Random(self.seed) if self.spec.filters.probability is not None else None

    @property
    def remaining(self) -> int | None:
        times = self.spec.filters.times
        return None if times is None else max(0, times - self.fired)

    @property
    def spent(self) -> bool:
        return self.remaining == 0

    def passes(self, session: str, method: str, path: str, interaction: Interaction) -> bool:
        """Whether the request passes the filters (not the probability draw) and the fault can
        alter its answer."""
        when = self.spec.filters
        return (
            (when.session is None or when.session == session)
            and (when.cassette is None or when.cassette == interaction.cassette)
            and (when.method is None or when.method == method.upper())
            and (self._path is None or self._path.match(path) is not None)
            and self.spec.fault.applies_to(interaction)
        )

    def draws(self) -> bool:
        """One draw for a request that passed: True when the rule fires on it."""
        if self._random is None:
            return True
        return self._random.random() < (self.spec.filters.probability or 0.0)

    def to_json(self) -> dict[str, Any]:
        fault, when = self.spec.fault, self.spec.filters
        filters = {item.name: getattr(when, item.name) for item in fields(Filters)}
        filters["seed"] = self.seed
        return {"id": self.id, "kind": fault.kind.value, **fault.parameters(), **filters,
                "fired": self.fired, "remaining": self.remaining, "spent": self.spent,
                "source": "startup" if self.startup else "api"}


class Faults:
    """The rules a server holds, in the order they were added. ``active`` is False when no rule
    can fire, so a request costs one attribute check then."""

    def __init__(self, startup: Sequence[RuleSpec] = (), *, limit: int = MAX_RULES) -> None:
        self.limit = limit
        self._lock = threading.Lock()  # replay picks on the event loop; a test may add rules from its thread
        # ids f1… are the startup rules', always; kept (with any seed chosen for them) to be re-armed
        self._startup = [FaultRule(spec, number, startup=True) for number, spec in enumerate(startup, 1)]
        self._rules: dict[str, FaultRule] = {rule.id: rule for rule in self._startup}
        self._numbers = len(self._startup)
        self.active = False
        self._update()

    def add(self, spec: RuleSpec) -> FaultRule:
        with self._lock:
            if len(self._rules) >= self.limit:
                raise TooManyRules(f"the server holds {self.limit} fault rules already, the most it keeps; "
                                   "remove some (DELETE /__admin/faults/ID, or all with DELETE /__admin/faults)")
            self._numbers += 1
            rule = self._rules[f"f{self._numbers}"] = FaultRule(spec, self._numbers, startup=False)
            self._update()
            return rule

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules.values())

    def remove(self, rule_id: str) -> FaultRule | None:
        with self._lock:
            rule = self._rules.pop(rule_id, None)
            self._update()
            return rule

    def clear(self) -> int:
        """Remove every rule (startup ones too, until a reset); returns how many there were."""
        with self._lock:
            count = len(self._rules)
            self._rules.clear()
            self._update()
            return count

    def reset(self, session: str | None = None) -> None:
        """Back to how the server started: rules added since are removed, startup rules are
        re-armed (not fired, draws from the start). With ``session``, only the rules filtered
        on that session."""
        def concerned(rule: FaultRule) -> bool:
            return session is None or rule.spec.filters.session == session

        with self._lock:
            kept = [rule for rule in self._rules.values() if not concerned(rule)]
            for rule in self._startup:
                if concerned(rule):
                    rule.rearm()
                    kept.append(rule)
            self._rules = {rule.id: rule for rule in sorted(kept, key=lambda rule: rule.number)}
            self._update()

    def pick(self, *, session: str, method: str, path: str, interaction: Interaction,
             header: Fault | None = None) -> Fired | None:
        """The fault this request gets, if any: the header's (when it can alter this answer),
        else the first rule that passes, draws and is not spent. Counts the firing."""
        if header is not None:
            return Fired(header, HEADER_RULE) if header.applies_to(interaction) else None
        with self._lock:
            for rule in self._rules.values():
                if not rule.spent and rule.passes(session, method, path, interaction) and rule.draws():
                    rule.fired += 1
                    if rule.spent:
                        self._update()
                    return Fired(rule.spec.fault, rule.id)
        return None

    def _update(self) -> None:
        self.active = any(not rule.spent for rule in self._rules.values())

