"""The service behind both the replay endpoint and the admin API: loaded cassettes, the index,
lookups and miss explanations. It knows nothing of HTTP frameworks, so it works in-process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .errors import CassetteMiss, UnknownCassette
from .index import Index, Take
from .loader import LoadResult, load_paths
from .matching import MatchRules
from .models import Interaction, ReceivedRequest
from .nearmiss import NearMiss, near_misses, render_difference
from .pacing import Pacing
from .relaxations import RELAXATION_NAMES, RelaxedFind
from .settings import Settings

log = logging.getLogger("cassette_server")

_SHOWN_DIFFERENCES = 8


@dataclass(frozen=True)
class Match:
    """A successful lookup: what to serve, and how it was found."""

    interaction: Interaction
    repeated: bool = False  # served again after its sequence was used up (--exhausted repeat-last)
    relaxation: str | None = None  # the matching relaxation that found it, if the strict match failed


@dataclass(frozen=True)
class Loaded:
    """What one load produced; replaced whole on reload so readers never see half of it."""

    result: LoadResult
    index: Index


class CassetteService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules: MatchRules = settings.match_rules()
        self.pacing = Pacing(settings.speed, settings.event_interval)
        self.loaded = Loaded(LoadResult(), Index((), self.rules, settings.exhausted))
        self.reload()

    @property
    def index(self) -> Index:
        return self.loaded.index

    def reload(self) -> LoadResult:
        """Read the cassette paths again and swap the new index in."""
        result = load_paths(self.settings.paths)
        self.loaded = Loaded(result, Index(result.cassettes, self.rules, self.settings.exhausted))
        log_load(result, self.settings)
        return result

    def lookup(self, request: ReceivedRequest, *, session: str, scope: str | None, index: Index | None = None) -> Match:
        """The interaction to serve; raises CassetteMiss (explained) or UnknownCassette."""
        index = index or self.index
        if scope is not None and scope not in index.by_name:
            raise UnknownCassette(unknown_cassette_message(scope, index))
        key = self.rules.key(request.method, request.path, request.query, request.header, request.body)
        take = index.take(key, session=session, scope=scope)
        if take.interaction is not None:
            return Match(take.interaction, repeated=take.repeated)
        relaxed = None
        if not take.candidates and not self.settings.no_relax:
            relaxed = index.relaxed.find(key, scope)
            if relaxed.recorded is not None:  # served from the recording's own sequence
                take = index.take(relaxed.recorded, session=session, scope=scope)
                if take.interaction is not None:
                    log.debug("%s %s matched %s through the relaxation %s", request.method, request.path,
                              take.interaction.label, relaxed.name)
                    return Match(take.interaction, repeated=take.repeated, relaxation=relaxed.name)
        message = self.explain_miss(request, take, session=session, scope=scope, index=index, relaxed=relaxed)
        log.warning("%s", message)
        raise CassetteMiss(message)

    def explain_miss(
        self, request: ReceivedRequest, take: Take, *, session: str, scope: str | None, index: Index,
        relaxed: RelaxedFind | None = None,
    ) -> str:
        endpoint = f"{request.method} {request.path}" + (f"?{request.query}" if request.query else "")
        if take.candidates:
            labels = ", ".join(interaction.label for interaction in take.candidates)
            through = f" (through the relaxation {relaxed.name})" if relaxed and relaxed.name else ""
            return (
                f"Cassette miss: all {len(take.candidates)} recorded interactions matching {endpoint}{through} were "
                f"already served in session '{session}' ({labels}) and the server runs with --exhausted error. "
                "Rewind with POST /__admin/reset, or give each test its own X-Cassette-Session header."
            )
        pool = index.by_name[scope].interactions if scope else list(index.interactions)
        scope_text = f" in cassette '{scope}'" if scope else ""
        lines = [f"Cassette miss: no recorded interaction{scope_text} matches {endpoint}."]
        closest = near_misses(request, pool, self.rules, limit=1)
        if closest:
            lines += _describe_closest(closest[0])
        elif not index.cassettes:
            lines.append(f"No cassette is loaded (paths: {', '.join(map(str, self.settings.paths))}).")
        if scope is not None:
            elsewhere = self._unscoped_match(request, index)
            if elsewhere:
                lines.append(f"An identical request is recorded in {elsewhere}, but this request is scoped to '{scope}'.")
        if relaxed is not None:
            lines.append(_describe_relaxations(relaxed, index, scope))
        lines.append("Record this request, or change it to match a recording.")
        return "\n".join(lines)

    def _unscoped_match(self, request: ReceivedRequest, index: Index) -> str | None:
        key = self.rules.key(request.method, request.path, request.query, request.header, request.body)
        found = index.peek(key)
        return ", ".join(interaction.label for interaction in found) if found else None


def _describe_closest(near: NearMiss) -> list[str]:
    interaction = near.interaction
    where = f"{interaction.file}:{interaction.line}" if interaction.line else interaction.file
    count = len(near.differences)
    lines = [f"Closest recording: {interaction.label} ({where}), which differs in {count} place{'s' * (count != 1)}:"]
    lines += [f"  {render_difference(difference)}" for difference in near.differences[:_SHOWN_DIFFERENCES]]
    if count > _SHOWN_DIFFERENCES:
        lines.append(f"  … and {count - _SHOWN_DIFFERENCES} more")
    return lines


def _describe_relaxations(relaxed: RelaxedFind, index: Index, scope: str | None) -> str:
    tried = ", ".join(RELAXATION_NAMES)
    if not relaxed.ambiguous:
        return f"Relaxations tried, none matched: {tried}."
    recordings = []
    for key in relaxed.ambiguous:
        found = [i for i in index.peek(key) if scope is None or i.cassette == scope]
        if found:
            recordings.append(f"{found[0].label} ({found[0].request.method} {found[0].request.url})")
    return (
        f"Relaxations tried: {tried}. The relaxation {relaxed.stage} matches {len(relaxed.ambiguous)} different "
        f"recordings, so none is used: {'; '.join(recordings)}. Send the recorded path, or pick a cassette with "
        "X-Cassette or /__cassette/NAME/."
    )


def log_load(result: LoadResult, settings: Settings) -> None:
    """What was loaded, per cassette and per endpoint, and every file that was not, and why."""
    paths = ", ".join(str(path) for path in settings.paths)
    log.info("Loaded %d cassettes (%d interactions) from %s", len(result.cassettes), result.interaction_count, paths)
    endpoints: dict[str, int] = {}
    for cassette in result.cassettes:
        log.info("  %s: %d interactions (%s, %s)", cassette.name, len(cassette.interactions), cassette.format, cassette.file)
        for interaction in cassette.interactions:
            endpoint = f"{interaction.request.method} {interaction.request.path}"
            endpoints[endpoint] = endpoints.get(endpoint, 0) + 1
            for note in interaction.response.notes:
                log.warning("  %s (%s:%s): %s", interaction.label, interaction.file, interaction.line, note)
    for endpoint, count in endpoints.items():
        log.info("Endpoint %s: %d interactions", endpoint, count)
    for error in result.errors:
        log.error("Cannot load %s", error)
    if not result.cassettes and not result.errors:
        log.warning("No cassette files (*.yaml, *.yml, *.json) found in %s: every request will be a miss", paths)


def unknown_cassette_message(name: str, index: Index) -> str:
    names = ", ".join(sorted(index.by_name)) or "none"
    return f"No cassette named '{name}' is loaded (loaded: {names}). Check the X-Cassette header or the /__cassette/NAME/ prefix."
