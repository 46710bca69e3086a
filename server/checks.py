"""``cassette-server check``: what is wrong with cassette files, found without serving them.

- load errors (with file:line) and unknown formats or versions;
- identical requests (as the server matches them) recorded with different responses, unless
  the recorder marked the later ones as recorded again in the same run (a deliberate sequence);
- secrets left in: credential headers, ``sk-…`` keys anywhere in the file, ``key=`` style
  query parameters (in files that fail to load, headers and parameters are looked for in the
  text). Findings show only the first characters of a secret, so CI logs do not
  leak it again;
- load-time notes (e.g. a Content-Encoding header dropped), as warnings.

Returns findings; printing and the exit status are the command line's business.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote

from .credentials import CREDENTIAL_HEADERS, CREDENTIAL_PARAMETERS
from .errors import CassetteLoadError, UnknownFormat
from .loader import DEFAULT_MAX_FILE_SIZE, LoadResult, cassette_text, load_paths
from .matching.index import key_of
from .matching.keys import MatchKey, MatchRules
from .models import Interaction

ERROR = "error"
WARNING = "warning"

SECRET_HEADERS = CREDENTIAL_HEADERS
SECRET_PARAMETERS = tuple(sorted(CREDENTIAL_PARAMETERS))
# OpenAI / Anthropic style keys: sk-…, sk-proj-…, sk-ant-api03-…
_SK_KEY = re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,}")
# Values that are clearly not a real credential: redaction markers and placeholders.
_PLACEHOLDER = re.compile(
    r"^[\W_xX]*$|redact|filter|remov|scrub|mask|hidden|placeholder|dummy|fake|example|unused"
    r"|^(test|none|null|key|token)$|^your[-_ ]?(api[-_ ]?)?key|^<.*>$|^\$\{?\w+\}?$",
    re.IGNORECASE,
)
_AUTH_SCHEME = re.compile(r"^(bearer|basic|token|key)\s+", re.IGNORECASE)
# In the text of a file that did not load: a credential header as YAML or JSON writes it
# (``Authorization: …``, ``"x-api-key": [...]``, also inside a flow or one-line JSON), its
# value after it or on the next line, and a credential query parameter in a URL.
_HEADER_NAME = re.compile(r"""(?:^|(?<=[\s{,]))["']?(%s)["']?\s*:""" % "|".join(map(re.escape, SECRET_HEADERS)),
                          re.IGNORECASE)
_HEADER_VALUE = re.compile(r"""\s*\[?\s*(?:"([^"]*)"|'([^']*)'|([^\s,\]}][^,\]}]*))?""")
_QUERY_PARAMETER = re.compile(r"""[?&](%s)=([^&#\s"'\\]*)""" % "|".join(map(re.escape, SECRET_PARAMETERS)), re.IGNORECASE)
_SECRET_ADVICE = "replace it with REDACTED (or drop it) and rotate the credential if it was real"


@dataclass(frozen=True)
class Finding:
    """One problem, where it is, and what to do about it."""

    kind: str  # load-error | unknown-version | duplicate | secret | note
    severity: str  # error | warning
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity}: {self.message} [{self.kind}]"


@dataclass(frozen=True)
class CheckReport:
    result: LoadResult
    findings: tuple[Finding, ...] = field(default=())

    @property
    def errors(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == WARNING]


def check_paths(
    paths: Sequence[Path], rules: MatchRules, *, allow_duplicates: bool = False, max_file_size: int = DEFAULT_MAX_FILE_SIZE,
) -> CheckReport:
    """Check every cassette under ``paths`` (files, or directories searched recursively)."""
    result = load_paths(paths, max_file_size=max_file_size)
    findings = _load_findings(result)
    findings += [Finding("note", WARNING, c.file, 1, f"{c.name}: {note}") for c in result.cassettes for note in c.notes]
    interactions = [i for cassette in result.cassettes for i in cassette.interactions]
    findings += [Finding("note", WARNING, i.file, i.line, f"{i.label}: {note}") for i in interactions for note in i.response.notes]
    findings += duplicate_findings(interactions, rules, allow_duplicates)
    files = [cassette.file for cassette in result.cassettes] + [f.file for f in result.failures if Path(f.file).is_file()]
    by_file = {cassette.file: cassette.interactions for cassette in result.cassettes}
    for file in files:
        findings += secret_findings(file, by_file.get(file), max_size=max_file_size)  # None: the file did not load
    if not result.cassettes and not result.failures:
        where = ", ".join(map(str, paths))
        nothing = 'no cassette files (*.yaml, *.yml, *.yaml.gz, *.yml.gz, or *.json with "interactions") found; check the paths'
        findings.append(Finding("load-error", ERROR, where, None, nothing))
    findings.sort(key=lambda finding: (finding.file, finding.line or 0))
    return CheckReport(result, tuple(findings))


def _load_findings(result: LoadResult) -> list[Finding]:
    found = []
    for error in result.errors:
        kind = "unknown-version" if isinstance(error, UnknownFormat) else "load-error"
        found.append(Finding(kind, ERROR, error.file or "?", error.line, f"{error.reason}; the server will not load this file"))
    return found


def duplicate_findings(interactions: Sequence[Interaction], rules: MatchRules, allowed: bool) -> list[Finding]:
    """One finding per request recorded more than once with different responses."""
    groups: dict[MatchKey, list[Interaction]] = {}
    for interaction in interactions:
        groups.setdefault(key_of(interaction, rules), []).append(interaction)
    found = []
    for group in groups.values():
        if all(interaction.deliberate_repeat for interaction in group[1:]):
            continue  # one recording run recorded the request again on purpose: a sequence
        first = _response_of(group[0])
        # reported where the first different response is: the recording most likely to be stale
        later = next((i for i in group if _response_of(i) != first), None)
        if later is None:
            continue
        places = ", ".join(f"{i.label} ({i.file}:{i.line})" if i.line else f"{i.label} ({i.file})" for i in group)
        if len({i.cassette for i in group}) == 1:
            advice = "if that is a deliberate sequence (a retry, polling), pass --allow-duplicates; else delete the stale one"
        else:
            advice = ("scope each test to its cassette (X-Cassette header or /__cassette/NAME/ prefix) and pass "
                      "--allow-duplicates, or delete one")
        message = (f"the same request is recorded {len(group)} times with different responses: {places}; "
                   f"clients get them in that order, one per request; {advice}")
        found.append(Finding("duplicate", WARNING if allowed else ERROR, later.file, later.line, message))
    return found


def _response_of(interaction: Interaction) -> tuple[int, bytes]:
    """What counts when comparing responses (headers such as dates and request ids always differ)."""
    return interaction.response.status, interaction.response.body


def secret_findings(
    file: str, interactions: Sequence[Interaction] | None, *, max_size: int = DEFAULT_MAX_FILE_SIZE,
) -> list[Finding]:
    """Credentials in one file: headers and query parameters of its requests, ``sk-`` keys
    anywhere in its text (decompressed, for ``*.gz``). For a file that failed to load
    (``interactions`` None), headers and query parameters are looked for in its text; a file too
    large to load is not read at all."""
    try:
        lines = cassette_text(Path(file), max_size).decode("utf-8", errors="replace").splitlines()
    except CassetteLoadError:
        return []  # already a load error
    found = []
    reported: list[str] = []  # secret values found in headers or the URL, not to report twice
    if interactions is None:
        found += _text_secret_findings(file, lines, reported)
    for interaction in interactions or ():
        start = interaction.line or 1
        for name, value in interaction.request.headers:
            if name in SECRET_HEADERS and not is_placeholder(value):
                reported.append(value)
                line = _line_of(lines, start, name + ":")
                found.append(Finding("secret", ERROR, file, line,
                                     f"{interaction.label}: request header {name} holds a credential "
                                     f"({preview(value)}); {_SECRET_ADVICE}"))
        for name, value in parse_qsl(interaction.request.query, keep_blank_values=True):
            if name.lower() in SECRET_PARAMETERS and not is_placeholder(value):
                reported.append(value)
                line = _line_of(lines, start, f"{name}=")
                found.append(Finding("secret", ERROR, file, line,
                                     f"{interaction.label}: query parameter {name}= in the URL holds a credential "
                                     f"({preview(value)}); {_SECRET_ADVICE}"))
    for number, text in enumerate(lines, start=1):
        for match in _SK_KEY.finditer(text):
            key = match.group()
            if _looks_random(key[3:]) and not is_placeholder(key[3:]) and not any(key in value for value in reported):
                message = f"an API key ({preview(key)}) is written in the file; {_SECRET_ADVICE}"
                found.append(Finding("secret", ERROR, file, number, message))
                break
    return found


def _text_secret_findings(file: str, lines: Sequence[str], reported: list[str]) -> list[Finding]:
    """Credential headers and query parameters in the lines of a file that did not load, so
    they can only be told from how cassettes write them; adds each value to ``reported``."""
    found = []
    unloaded = "(in the text of a file that did not load)"
    for number, text in enumerate(lines, start=1):
        for header in _HEADER_NAME.finditer(text):
            value = _header_value(text[header.end():], lines[number:number + 1])
            if not is_placeholder(value):
                reported.append(value)
                found.append(Finding("secret", ERROR, file, number,
                                     f"request header {header[1].lower()} {unloaded} holds a credential "
                                     f"({preview(value)}); {_SECRET_ADVICE}"))
        for name, value in _QUERY_PARAMETER.findall(text):
            if not is_placeholder(unquote(value)):
                reported.append(value)
                found.append(Finding("secret", ERROR, file, number,
                                     f"query parameter {name}= in a URL {unloaded} holds a credential "
                                     f"({preview(value)}); {_SECRET_ADVICE}"))
    return found


def _header_value(rest: str, following: Sequence[str]) -> str:
    """A header's value from what follows its name (``Bearer x``, ``[Bearer x]``, ``["Bearer
    x"],``), or, when nothing (or only ``[``) does, the first list item on the next line
    (``- Bearer x``, ``"Bearer x"``)."""
    if rest.strip() in ("", "[") and following:
        rest = following[0].strip().removeprefix("- ")
    match = _HEADER_VALUE.match(rest)
    return next((group for group in match.groups() if group is not None), "").strip() if match else ""


def is_placeholder(value: str) -> bool:
    """True for values that are no credential: empty, redaction markers, obvious placeholders."""
    return bool(_PLACEHOLDER.search(_AUTH_SCHEME.sub("", value.strip()).strip()))


def preview(secret: str) -> str:
    """Enough of a secret to find it, not enough to use it."""
    scheme = _AUTH_SCHEME.match(secret)
    prefix = scheme.group() if scheme else ""
    rest = secret[len(prefix):]
    return f"'{prefix}{rest[:min(7, len(rest) // 3)]}…'"


def _looks_random(text: str) -> bool:
    """Real keys mix letters and digits; prose like ``sk-learn-compatible-estimators`` does not."""
    return any(char.isdigit() for char in text) and any(char.isalpha() for char in text)


def _line_of(lines: Sequence[str], start: int, needle: str) -> int:
    """The first line at or after ``start`` (1-based) that contains ``needle`` (any case)."""
    lowered = needle.lower()
    for number in range(start, len(lines) + 1):
        if lowered in lines[number - 1].lower():
            return number
    return start
