"""Command line: flags → Settings → app → uvicorn. The only module that prints or exits.

    cassette-server serve [PATH ...] [--host H] [--port P] [--speed S] ...

Every flag also has an environment variable (``CASSETTE_SERVER_PORT``, …; see settings.py).
"""

from __future__ import annotations

import argparse
import copy
import logging.config
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import uvicorn

from .app import create_app
from .settings import Option, Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cassette-server",
        description="Replay recorded LLM API cassettes (go-vcr, vcrpy) as a local HTTP server.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve cassettes over HTTP",
        description="Serve cassettes over HTTP. Every option can also be set with the environment "
        "variable shown in brackets; a flag wins over the variable.",
    )
    for item in fields(Settings):
        option: Option = item.metadata["option"]
        env = f" [{option.env_name(item.name)}]"
        default = item.default if not isinstance(item.default, (tuple, list)) else None
        shown = f" (default: {getattr(default, 'value', default)})" if default not in (None, False) else ""
        if item.name == "paths":
            serve.add_argument(
                "paths", nargs="*", type=_checked(option.parse), metavar="PATH",
                help=f"{option.help} (default: ./cassettes){env}; the variable separates paths with ':'",
            )
        elif option.switch:
            serve.add_argument(option.flag, dest=item.name, action="store_true", help=option.help + env)
        else:
            serve.add_argument(
                option.flag, dest=item.name, type=_checked(option.parse), metavar=option.metavar,
                action="append" if option.repeatable else "store", help=option.help + shown + env,
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        settings = Settings.resolve(vars(args))
    except ValueError as error:
        parser.error(str(error))
    return serve(settings)


def serve(settings: Settings) -> int:
    log_config = logging_config(settings.log_level)
    logging.config.dictConfig(log_config)
    app = create_app(settings)
    failures = app.service.loaded.result.failures
    if settings.strict and failures:
        print(f"cassette-server: {len(failures)} cassette file(s) failed to load and --strict is set", file=sys.stderr)
        return 1
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=log_config, log_level=settings.log_level)
    return 0


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
