"""The installed version of cassette-server: pyproject.toml's ``version``, read from the package metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

NOT_INSTALLED = "0+unknown"  # imported from a checkout that pip never installed: `pip install -e .` gives the real one


def installed_version(distribution: str = "cassette-server") -> str:
    """The version pip recorded for ``distribution`` (an editable install's too; reinstall after changing it)."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return NOT_INSTALLED


VERSION = installed_version()
