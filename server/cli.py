"""Command line: flags → Settings → app → uvicorn. The only module that prints or exits.

    cassette-server serve [PATH ...] [--host H] [--port P] [--speed S] [--record-on-miss] ...
    cassette-server record [--upstream URL | --upstream PREFIX=URL ...] [--out DIR] ...
                                         forward every request and record the answers
    cassette-server check [PATH ...]     validate cassettes (exit 1 when anything is wrong)
    cassette-server list [PATH ...]      a table of cassettes and their interactions
    cassette-server --version            the installed version

Every flag also has an environment variable (``CASSETTE_SERVER_PORT``, …; see settings.py).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import io
import logging.config
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import MISSING, Field, fields
from types import FrameType
from typing import Any

import uvicorn

from .app import create_app
from .catalog import summarise
from .checks import check_paths
from .loader import load_paths
from .matching.relaxations import RELAXATIONS
from .memory import freeze_startup_objects, tune_allocator
from .protocol import ReplayProtocol
from .record import RecordMode
from .settings import Option, Settings
from .version import VERSION

# The options `check` and `list` take, and the only variables they read (the server's others are
# none of their business): PATH, the largest cassette the server would load, and for `check` the
# options that decide which requests are the same.
COMMAND_SETTINGS = {
    "check": ("paths", "ignore_fields", "match_headers", "exact_body", "max_cassette_size"),
    "list": ("paths", "max_cassette_size"),
}
# The options `record` does not take: it replays nothing, and records every request.
NOT_FOR_RECORD = ("paths", "record", "speed", "event_interval", "exhausted", "no_relax", "watch", "max_sessions")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cassette-server",
        description="Replay recorded LLM API cassettes (go-vcr, vcrpy) as a local HTTP server.",
    )
    parser.add_argument("--version", action="version", version=f"cassette-server {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve cassettes over HTTP",
        description="Serve cassettes over HTTP. Every option can also be set with the environment "
        "variable shown in brackets; a flag wins over the variable.",
        epilog="After a strict miss, these relaxations are tried in order (unless --no-relax); one is used "
        "only when it finds a single recorded request: "
        + "; ".join(f"{relaxation.name}: {relaxation.summary}" for relaxation in RELAXATIONS),
    )
    for item in fields(Settings):
        _add_setting(serve, item)
    record = commands.add_parser(
        "record",
        help="forward every request to the real provider and record the answers into cassettes",
        description="Forward every request to the upstream (OpenAI, Anthropic or Gemini by the request's path, or "
        "--upstream), pass the answer on as it arrives and record it, with its timing, into the cassette named by "
        "X-Cassette or /__cassette/NAME/ (else --cassette) under --out. Nothing is served from existing cassettes; "
        "those under --out are appended to. Every option can also be set with the environment variable shown in "
        "brackets.",
    )
    for item in fields(Settings):
        if item.name not in NOT_FOR_RECORD:
            _add_setting(record, item)
    check = commands.add_parser(
        "check",
        help="validate cassettes without serving them (for pre-commit and CI)",
        description="Validate cassettes without serving them: load errors (file:line), unknown formats and "
        "versions, identical requests recorded with different responses, secrets left in (credential headers, "
        "sk-... keys, key= query parameters). Exit status 1 when anything is wrong, 0 otherwise.",
    )
    for item in fields(Settings):
        if item.name in COMMAND_SETTINGS["check"]:
            _add_setting(check, item)
    check.add_argument(
        "--allow-duplicates", action="store_true",
        help="identical requests with different responses are deliberate sequences (served in recorded "
        "order): report them as warnings, not errors",
    )
    listing = commands.add_parser(
        "list", help="print a table of cassettes and their interactions",
        description="Print a table of cassettes and their interactions. Exit status 1 when a file fails to load.",
    )
    for item in fields(Settings):
        if item.name in COMMAND_SETTINGS["list"]:
            _add_setting(listing, item)
    return parser


def _add_setting(parser: argparse.ArgumentParser, item: Field[Any]) -> None:
    """The flag (or positional PATH) of one Settings field, with its variable in the help."""
    option: Option = item.metadata["option"]
    env = f" [{option.env_name(item.name)}]"
    default = None if item.default is MISSING else item.default  # repeatable options have a factory
    if option.shown is not None and default is not None:
        default = option.shown(default)
    shown = f" (default: {getattr(default, 'value', default)})" if default not in (None, False) else ""
    if item.name == "paths":
        parser.add_argument(
            "paths", nargs="*", type=_checked(option.parse), metavar="PATH",
            help=f"{option.help} (default: ./cassettes){env}; the variable separates paths with ':'",
        )
    elif option.switch:
        parser.add_argument(option.flag, dest=item.name, action="store_true", help=option.help + env)
    elif option.const is not None:
        parser.add_argument(option.flag, dest=item.name, action="store_const", const=option.const, help=option.help + env)
    else:
        parser.add_argument(
            option.flag, dest=item.name, type=_checked(option.parse), metavar=option.metavar,
            action="append" if option.repeatable else "store", help=option.help + shown + env,
        )


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # recorded text may hold what the terminal cannot show
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        settings = resolve_settings(args)
    except ValueError as error:
        parser.error(str(error))
    if args.command == "check":
        return check(settings, allow_duplicates=args.allow_duplicates)
    if args.command == "list":
        return list_cassettes(settings)
    return serve(settings)


def resolve_settings(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings of a parsed command line (and the environment); `record` records everything,
    and loads only the directory it writes to (it takes no PATH: ./cassettes is not loaded beside --out)."""
    given = vars(args)
    if args.command == "record":
        given = {**given, "record": RecordMode.ALL}
    settings = Settings.resolve(given, environ, only=COMMAND_SETTINGS.get(args.command))
    if args.command == "record":
        settings = dataclasses.replace(settings, paths=(settings.recording_directory(),))
    return settings


def serve(settings: Settings) -> int:
    log_config = logging_config(settings.log_level)
    logging.config.dictConfig(log_config)
    tune_allocator()  # process-wide, so only here: big request bodies go back to the system when freed
    try:
        app = create_app(settings)
    except ValueError as error:  # recording into a directory that cannot be written
        print(f"cassette-server: {error}", file=sys.stderr)
        return 2
    failures = app.service.loaded.result.failures
    if settings.strict and failures:
        print(f"cassette-server: {len(failures)} cassette file(s) failed to load and --strict is set", file=sys.stderr)
        return 1
    freeze_startup_objects()  # full garbage collections scan only what comes after: no stalls mid-stream
    with _sigterm_ends_cleanly():
        uvicorn.run(app, host=settings.host, port=settings.port, log_config=log_config,
                    log_level=settings.log_level, access_log=settings.access_log, **UVICORN_OPTIONS)
    return 0


@contextmanager
def _sigterm_ends_cleanly() -> Iterator[None]:
    """SIGTERM (``docker stop``, a CI runner ending a service) is how this server is asked to
    stop: uvicorn then stops accepting, lets replies in flight finish within the grace period,
    and afterwards raises the signal again for the handler it found. With Python's default
    handler that kills the finished process (status 143 / -15) as if it had failed; with this
    one a stop by SIGTERM ends with status 0, also when it comes before uvicorn is listening."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    if threading.current_thread() is not threading.main_thread():  # signals are the main thread's
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check(settings: Settings, *, allow_duplicates: bool = False) -> int:
    """Print every finding (``file:line: severity: message [kind]``) and a summary; 1 on errors."""
    report = check_paths(settings.paths, settings.match_rules(), allow_duplicates=allow_duplicates,
                         max_file_size=settings.max_cassette_size)
    for finding in report.findings:
        print(finding)
    result = report.result
    files = len(result.cassettes) + len(result.failures)
    print(
        f"checked {_count(files, 'file')} ({_count(len(result.cassettes), 'cassette')}, "
        f"{_count(result.interaction_count, 'interaction')}): "
        f"{_count(len(report.errors), 'error')}, {_count(len(report.warnings), 'warning')}"
    )
    return 1 if report.errors else 0


def list_cassettes(settings: Settings) -> int:
    """Print one row per interaction; files that failed to load go to stderr (and exit 1)."""
    result = load_paths(settings.paths, max_file_size=settings.max_cassette_size)
    rows = [("CASSETTE", "ID", "REQUEST", "MODEL", "STREAM", "STATUS", "EVENTS", "DURATION", "LAST USER MESSAGE")]
    for cassette in result.cassettes:
        if not cassette.interactions:
            rows.append((cassette.name, "-", "(no interactions)", "", "", "", "", "", ""))
        for interaction in cassette.interactions:
            summary = summarise(interaction, width=_MESSAGE_COLUMN)
            rows.append((
                summary.cassette,
                str(summary.id),
                f"{summary.method} {_cut_left(summary.path, _REQUEST_COLUMN - len(summary.method) - 1)}",
                summary.model or "-",
                "yes" if summary.stream else "no",
                str(summary.status),
                "-" if summary.events is None else str(summary.events),
                f"{summary.duration:.2f}s",
                summary.last_user_message or "-",
            ))
    print(_table(rows))
    print(f"{_count(len(result.cassettes), 'cassette')}, {_count(result.interaction_count, 'interaction')}")
    for error in result.errors:
        print(f"cannot load {error}", file=sys.stderr)
    return 1 if result.failures else 0


_REQUEST_COLUMN = 60
_MESSAGE_COLUMN = 60


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _cut_left(text: str, width: int) -> str:
    """Keep the end (the informative part of a long URL path)."""
    return text if len(text) <= width else "…" + text[-(width - 1):]


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


UVICORN_OPTIONS: dict[str, Any] = {
    # Replayed headers are the recorded ones: no `server: uvicorn`, no second `date`.
    "server_header": False,
    "date_header": False,
    # A stopping server (SIGTERM, Ctrl-C) does not wait out long recorded delays: replies in
    # flight, streams included, get 5 s to finish, then they are cut.
    "timeout_graceful_shutdown": 5,
    # A request uvicorn cannot parse is refused in the JSON error shape, like every other error;
    # a hit that needs no waiting is answered without a task (protocol.py).
    "http": ReplayProtocol,
    # Nothing reads the client's address from X-Forwarded-For: skip the middleware that would.
    "proxy_headers": False,
}


def logging_config(level: str) -> dict[str, Any]:
    """uvicorn's logging setup, with cassette-server's own logger in the same format."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["cassette_server"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Turn a parser's ValueError into argparse's clean "argument --x: message" error."""

    def parse_argument(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse_argument.__name__ = getattr(parse, "__name__", "value").lstrip("_")
    return parse_argument


if __name__ == "__main__":
    sys.exit(main())
