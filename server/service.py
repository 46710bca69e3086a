"""The service behind both the replay endpoint and the admin API: loaded cassettes, the index,
the sessions' positions, lookups and miss explanations, and the one swap through which a reload,
a PUT or the file watcher puts a new index in place. It knows nothing of HTTP frameworks, so it
works in-process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .errors import (
    BadRequest,
    CassetteLoadError,
    CassetteMiss,
    Conflict,
    HTTPError,
    InvalidCassette,
    UnknownCassette,
)
from .journal import Journal
from .loader import COMPRESSED_SUFFIXES, LoadResult, load_bytes, load_paths
from .matching.index import Index, Match, Take, key_of
from .matching.keys import MatchKey, MatchRules
from .matching.nearmiss import NearMiss, near_misses, render_difference
from .matching.relaxations import RELAXATION_NAMES, RelaxedFind
from .matching.sessions import Sessions
from .memory import Trimmer
from .models import Cassette, Interaction, ReceivedRequest
from .record import RecordMode
from .replay.faults import Faults
from .replay.pacing import Pacing
from .session_options import SessionOptions, checked_speed
from .settings import Settings
from .storage import cassette_file, write_whole
from .strict_json import json_bytes

log = logging.getLogger("cassette_server")

_SHOWN_DIFFERENCES = 8
JOURNALED_NEAR_MISSES = 3  # closest recordings a miss carries (the message shows the first)
CLOSE_NAMES = 3  # loaded cassette names an unknown_cassette error suggests
# A miss message's last line (the library and the pytest plugin give their own advice instead)
RECORD_ADVICE = ("Record it with `cassette-server serve --record-on-miss` (or `cassette-server record`), or change "
                 "the request to match a recording.")


@dataclass(frozen=True)
class Unmatched:
    """A lookup that found nothing to serve, with what explaining it reads. Explaining only
    reads (an index never changes once built), so it can run off the event loop."""

    request: ReceivedRequest
    session: str
    scope: str | None
    index: Index
    key: MatchKey | None = None  # None: the scope names no loaded cassette
    take: Take = field(default_factory=lambda: Take(None))
    relaxed: RelaxedFind | None = None


@dataclass(frozen=True)
class Loaded:
    """What one load produced; replaced whole on reload so readers never see half of it."""

    result: LoadResult
    index: Index
    resolved: Mapping[str, Path] = field(default_factory=dict)  # every file read (loaded or not) → resolved

    @classmethod
    def of(cls, result: LoadResult, index: Index, resolved_before: Mapping[str, Path]) -> Loaded:
        """Resolving a path is a system call: files read before keep the path resolved then."""
        read = [cassette.file for cassette in result.cassettes] + [failure.file for failure in result.failures]
        return cls(result, index, {file: resolved_before.get(file) or Path(file).resolve() for file in read})

    @cached_property
    def files(self) -> frozenset[Path]:
        """Every file this load read, loaded or not, resolved (for the file watcher)."""
        return frozenset(self.resolved.values())

    def unchanged(self, changed: Collection[Path]) -> dict[str, Cassette]:
        """The cassettes loaded from files that are not among the ``changed`` (resolved) paths, by file."""
        changed = set(changed)
        return {cassette.file: cassette for cassette in self.result.cassettes if self.resolved[cassette.file] not in changed}


class CassetteService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules: MatchRules = settings.match_rules()
        self.pacing = Pacing(settings.speed, settings.event_interval)
        self.sessions = Sessions(settings.max_sessions)  # outlives every index: positions survive reloads
        self.loaded = Loaded(LoadResult(), Index((), self.rules, settings.exhausted, sessions=self.sessions))
        self.trimmer = Trimmer()  # gives what the journal forgets back to the system
        self.journal = Journal(settings.journal_size, settings.journal_max_bytes, on_release=self.trimmer.soon)
        self.faults = Faults(settings.startup_faults())  # fault rules: POST /__admin/faults, --fault
        # options sessions set for themselves (PUT /__admin/sessions/ID, the pytest plugin); empty: replay never looks
        self.session_options: dict[str, SessionOptions] = {}
        self._reload_lock = threading.Lock()  # admin calls and the file watcher may reload at once
        self._put_files: dict[Path, int] = {}  # file written by PUT or recording → its mtime (ns) right after
        self.reload()

    @property
    def index(self) -> Index:
        return self.loaded.index

    def reload(self, changed: Collection[Path] | None = None) -> LoadResult:
        """Read the cassette paths again and swap the new index in (``_swap``): every file, or
        when the ``changed`` files (resolved paths) are known, only those; the other cassettes are
        carried over as they are. Files that fail to load are reported in the result; the others
        are served."""
        with self._reload_lock:  # one at a time, so the last swap holds the latest files
            reuse = self.loaded.unchanged(changed) if changed is not None else {}
            result = load_paths(self.settings.paths, reuse=reuse, max_file_size=self.settings.max_cassette_size)
            self._swap(result)
        log_load(result, self.settings, reused=reuse)
        return result

    def swap_in(self, cassette: Cassette, *, served: tuple[str, str | None] | None = None) -> LoadResult:
        """Serve ``cassette`` in place of the loaded cassette of its name (or beside the others
        when the name is new), reading no file: only it is keyed again, and sessions keep their
        place in its recordings that were there before. For recording, which adds interactions
        as they are recorded: ``cassette`` is its file as just written (so --watch need not read
        it again), and ``served`` is the (session, scope) of the request its last interaction
        answered, which counts as served there (with repeat-last, the next identical request of
        that session replays it)."""
        with self._reload_lock:
            result = self.loaded.result.replacing(cassette)
            self._swap(result)
            if served is not None and cassette.interactions:
                session, scope = served
                self.index.take(key_of(cassette.interactions[-1], self.rules), session=session, scope=scope)
            self._note_written(Path(cassette.file))
        log.info("Cassette '%s' swapped in: %d interactions", cassette.name, len(cassette.interactions))
        return result

    def _swap(self, result: LoadResult) -> None:
        """The one place a new index takes over (reload, PUT, --watch, swap_in); called with the
        reload lock held. The new index is built from the current one, keying again only the
        cassettes that are not the very same objects, and swapped in whole: requests in flight
        finish on the old one. Then every session's positions and usage counts of the changed
        cassettes are carried over: kept for each recording still there (positions clamped to
        its sequence's new length), dropped for the others. The state of unchanged cassettes
        needs nothing: it is keyed by plain values, which the new index shares."""
        previous = self.loaded
        index = Index(result.cassettes, self.rules, self.settings.exhausted, sessions=self.sessions, previous=previous.index,
                      relax=not self.settings.no_relax)
        self.loaded = Loaded.of(result, index, previous.resolved)
        self.sessions.adopt(index.changed, index.sequence)
        self.journal.forget_bodies(index.changed, _served_by(index))  # old interactions of changed cassettes can go

    def reset(self, session: str | None = None) -> None:
        """Rewind sequence positions and usage counts, forget journal entries, session options
        and fault rules added since startup (re-arming the startup ones), of every session or of one."""
        self.sessions.reset(session)
        self.journal.clear(session)
        self.faults.reset(session)
        if session is None:
            self.session_options.clear()
        else:
            self.session_options.pop(session, None)

    def configure_session(self, session: str, *, record: RecordMode | None = None, speed: float | None = None,
                          replace: bool = False) -> SessionOptions:
        """Set ``session``'s own options, in place of any it had: its record mode (None: the
        server's; a mode that forwards needs a server started in a record mode, which has the
        upstream client), its speed (None: --speed), and ``replace`` (record 'all' only: the first
        interaction the session records into a cassette replaces that cassette's old ones, so a
        session that records nothing leaves the file as it was). From then on the session's
        refused requests are kept (``SessionOptions.refused``). Raises BadRequest or Conflict."""
        if record not in (None, RecordMode.OFF) and not self.settings.recording:
            raise Conflict(f"session '{session}' cannot record: this server was started without recording, so it has "
                           "no upstream to forward to; start it with --record-on-miss (or CASSETTE_SERVER_RECORD=miss)")
        if replace and record is not RecordMode.ALL:
            raise BadRequest("replace: only a session that records everything (record 'all') replaces its cassettes")
        try:
            pacing = None if speed is None else Pacing(checked_speed(speed), self.settings.event_interval)
        except ValueError as error:
            raise BadRequest(str(error)) from None
        if session not in self.session_options and len(self.session_options) >= self.settings.max_sessions:
            raise Conflict(f"{len(self.session_options)} sessions have options already, the most this server keeps "
                           "(--max-sessions); remove some with DELETE /__admin/sessions/ID or POST /__admin/reset")
        options = self.session_options[session] = SessionOptions(record, pacing, replace)
        return options

    def remove_session_options(self, session: str) -> SessionOptions | None:
        """The session follows the server's options again; returns the options it had."""
        return self.session_options.pop(session, None)

    def note_refused(self, session: str, request: str, error: HTTPError) -> None:
        """``request`` of ``session`` was refused with ``error``: kept when the session has options."""
        options = self.session_options.get(session)
        if options is not None:
            options.note(request, error)

    def put_cassette(self, name: str, text: bytes) -> tuple[Cassette, bool, LoadResult]:
        """Validate cassette text, write it as cassette ``name`` under the first cassette
        directory and reload that file. Returns the loaded cassette, whether its file is new, and
        the reload's result. Nothing is written when the text does not load."""
        directory = self.cassette_directory()
        target = cassette_file(directory, name, text)
        loaded = self.index.by_name.get(name)
        if loaded is not None and Path(loaded.file).resolve() != target.resolve():
            if loaded.file.lower().endswith(COMPRESSED_SUFFIXES):
                where = "a compressed file, which a PUT does not rewrite"
            elif Path(loaded.file).resolve().is_relative_to(directory.resolve()):
                where = "a file named by its own path, not by its place in the directory"
            else:
                where = f"outside {directory}"
            raise Conflict(
                f"a cassette named '{name}' is already loaded from {loaded.file}, {where}; written to {target}, "
                f"two files would claim the name. Rename or remove that file, or PUT under another name"
            )
        try:
            load_bytes(text, name=name, file="request body")
        except CassetteLoadError as error:
            raise BadRequest(_not_saved(name, [error])) from None
        except InvalidCassette as error:
            raise BadRequest(_not_saved(name, error.problems)) from None
        created = not target.exists()
        write_whole(target, text)
        written = target.resolve()
        self._note_written(target)
        log.info("Cassette '%s' %s by the admin API: %s", name, "added" if created else "replaced", target)
        result = self.reload(changed={written})
        cassette = self.index.by_name.get(name)
        if cassette is None:  # only when another writer changed the file between write and reload
            problems = [str(error) for failure in result.failures if failure.name == name for error in failure.errors]
            why = "; ".join(problems) or "it was removed"
            raise Conflict(f"cassette '{name}' was written to {target} but did not load: {why}; PUT it again")
        return cassette, created, result

    def _note_written(self, path: Path) -> None:
        """Remember a file this server wrote and serves as written (PUT, recording)."""
        try:
            self._put_files[path.resolve()] = path.stat().st_mtime_ns
        except OSError:
            pass  # gone already: the watcher will reload, as it should

    def loaded_already(self, changed: set[Path]) -> bool:
        """True when every changed file is one PUT or recording wrote (and serves) and has not
        changed since: the file watcher then need not reload it."""
        if not changed:
            return False
        for path in changed:
            try:
                mtime = path.stat().st_mtime_ns
            except OSError:
                return False
            if self._put_files.get(path) != mtime:
                return False
        for path in changed:
            del self._put_files[path]
        return True

    def cassette_directory(self) -> Path:
        """The first of the cassette paths that is a directory: where new cassettes are written."""
        directory = next((path for path in self.settings.paths if path.is_dir()), None)
        if directory is None:
            paths = ", ".join(map(str, self.settings.paths)) or "none"
            raise Conflict(f"no cassette directory to write to (cassette paths: {paths}); serve a directory to add cassettes")
        return directory

    def match(self, request: ReceivedRequest, *, session: str, scope: str | None, index: Index | None = None) -> Match | Unmatched:
        """The interaction to serve (its position taken in ``session``), or what explaining why
        there is none needs (``explain``). Cheap: one key, one or two dict lookups."""
        index = index if index is not None else self.index
        if scope is not None and scope not in index.by_name:
            return Unmatched(request, session, scope, index)
        key = self.rules.key(request.method, request.path, request.query, request.header, request.body,
                             index.known_bodies)
        take = index.take(key, session=session, scope=scope)
        if isinstance(take, Match):
            return take
        relaxed = None
        if not take.candidates and not self.settings.no_relax:
            relaxed = index.relaxed.find(key, scope)
            if relaxed.recorded is not None:  # served from the recording's own sequence
                take = index.take(relaxed.recorded, session=session, scope=scope)
                if isinstance(take, Match):
                    log.debug("%s %s matched %s through the relaxation %s", request.method, request.path,
                              take.interaction.label, relaxed.name)
                    take.relaxation = relaxed.name
                    return take
        return Unmatched(request, session, scope, index, key, take, relaxed)

    def explain(self, unmatched: Unmatched) -> UnknownCassette | CassetteMiss:
        """Why nothing was served, as the error to answer (a miss is logged too). It only reads,
        and may compare many recordings: replay calls it off the event loop."""
        key, scope = unmatched.key, unmatched.scope
        if key is None:  # the scope names no loaded cassette
            return UnknownCassette(unknown_cassette_message(str(scope), unmatched.index))
        miss = self.explain_miss(unmatched.request, key, unmatched.take, session=unmatched.session, scope=scope,
                                 index=unmatched.index, relaxed=unmatched.relaxed)
        # a session with options reports its own misses (the pytest plugin fails the test with them)
        log.log(logging.INFO if unmatched.session in self.session_options else logging.WARNING, "%s", miss.message)
        return miss

    def lookup(self, request: ReceivedRequest, *, session: str, scope: str | None, index: Index | None = None) -> Match:
        """``match``, then ``explain`` on the spot: the interaction to serve; raises CassetteMiss
        (explained) or UnknownCassette. For in-process callers."""
        found = self.match(request, session=session, scope=scope, index=index)
        if isinstance(found, Unmatched):
            raise self.explain(found)
        return found

    def give_back(self, match: Match) -> None:
        """The client left before ``match``'s answer was committed (nothing was sent): its
        recording is the next one served in its session, and it does not count as served."""
        if match.recording is not None:
            self.sessions.give_back(match.session, match.recording, advanced=not match.repeated)

    def explain_miss(
        self, request: ReceivedRequest, key: MatchKey, take: Take, *, session: str, scope: str | None, index: Index,
        relaxed: RelaxedFind | None = None,
    ) -> CassetteMiss:
        """The miss error: its message, and the closest recordings ranked (for the journal)."""
        endpoint = f"{request.method} {request.path}" + (f"?{request.query}" if request.query else "")
        if take.candidates:
            labels = ", ".join(interaction.label for interaction in take.candidates)
            through = f" (through the relaxation {relaxed.name})" if relaxed and relaxed.name else ""
            count = len(take.candidates)
            every = "the one recorded interaction" if count == 1 else f"all {count} recorded interactions"
            return CassetteMiss(
                f"Cassette miss: {every} matching {endpoint}{through} {'was' if count == 1 else 'were'} "
                f"already served in session '{session}' ({labels}) and the server runs with --exhausted error. "
                "Rewind with POST /__admin/reset, or give each test its own X-Cassette-Session header."
            )
        scope_text = f" in cassette '{scope}'" if scope else ""
        lines = [f"Cassette miss: no recorded interaction{scope_text} matches {endpoint}."]
        closest = tuple(near_misses(request, index.recorded(scope), self.rules, JOURNALED_NEAR_MISSES, received_key=key))
        if closest:
            lines += _describe_closest(closest[0])
        elif not index.cassettes:
            lines.append(f"No cassette is loaded (paths: {', '.join(map(str, self.settings.paths))}).")
        elsewhere = index.peek(key) if scope is not None else ()
        if elsewhere:
            labels = ", ".join(interaction.label for interaction in elsewhere)
            lines.append(f"An identical request is recorded in {labels}, but this request is scoped to '{scope}'.")
        if relaxed is not None:
            lines.append(_describe_relaxations(relaxed, index, scope))
        lines.append(RECORD_ADVICE)
        # the journal keeps the error: only a bounded part of each difference (nearmiss.NearMiss.kept)
        return CassetteMiss("\n".join(lines), near_misses_json=json_bytes([near.kept().to_json() for near in closest]))



def _served_by(index: Index) -> Callable[[Interaction], bool]:
    """Whether ``index`` serves an interaction (that very object), each cassette's set made once."""
    served: dict[str, frozenset[Interaction]] = {}

    def serves(interaction: Interaction) -> bool:
        name = interaction.cassette
        if name not in served:
            cassette = index.by_name.get(name)
            served[name] = frozenset(cassette.interactions) if cassette is not None else frozenset()
        return interaction in served[name]

    return serves


def _not_saved(name: str, problems: list[CassetteLoadError]) -> str:
    lines = "\n".join(f"  {problem}" for problem in problems)
    return (f"Cassette '{name}' not saved: the request body is not a cassette we can load:\n{lines}\n"
            "Fix it and PUT again; nothing was written.")


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


def log_load(result: LoadResult, settings: Settings, *, reused: Mapping[str, Cassette] | None = None) -> None:
    """What was loaded, per cassette and per endpoint, and every file that was not, and why.
    After a reload of the files that changed (``reused``: the cassettes carried over, by file),
    only the cassettes read again are named."""
    paths = ", ".join(str(path) for path in settings.paths)
    log.info("Loaded %d cassettes (%d interactions) from %s", len(result.cassettes), result.interaction_count, paths)
    reused = reused or {}
    endpoints: dict[str, int] = {}
    for cassette in result.cassettes:
        if reused.get(cassette.file) is cassette:
            continue
        log.info("  %s: %d interactions (%s, %s)", cassette.name, len(cassette.interactions), cassette.format, cassette.file)
        for note in cassette.notes:
            log.warning("  %s (%s): %s", cassette.name, cassette.file, note)
        for interaction in cassette.interactions:
            endpoint = f"{interaction.request.method} {interaction.request.path}"
            endpoints[endpoint] = endpoints.get(endpoint, 0) + 1
            for note in interaction.response.notes:
                log.warning("  %s (%s:%s): %s", interaction.label, interaction.file, interaction.line, note)
    if not reused:
        for endpoint, count in endpoints.items():
            log.info("Endpoint %s: %d interactions", endpoint, count)
    for error in result.errors:
        log.error("Cannot load %s", error)
    if not result.cassettes and not result.errors:
        log.warning("No cassette files (*.yaml, *.yml, *.json) found in %s: every request will be a miss", paths)


def unknown_cassette_message(
    name: str, index: Index, advice: str = "Check the X-Cassette header or the /__cassette/NAME/ prefix."
) -> str:
    """Says how many cassettes are loaded and the few with the closest names, never all of them
    (the message is answered, logged and journaled; there may be thousands)."""
    count = len(index.by_name)
    if not count:
        return f"No cassette named '{name}' is loaded: no cassette is loaded at all. {advice}"
    close = index.closest_names(name, CLOSE_NAMES)
    closest = f"; the closest names: {', '.join(close)}" if close else "; none has a name close to it"
    return (f"No cassette named '{name}' is loaded ({count} cassette{'s' * (count != 1)} loaded{closest}). {advice} "
            "GET /__admin/cassettes lists them all.")
