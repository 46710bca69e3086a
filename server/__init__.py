"""cassette-server: replay recorded LLM API cassettes over HTTP, byte-exact, with the recorded timing.

The names below are imported on first use, not with the package: the pytest plugin
(``server.pytest_plugin``) is loaded by every pytest run in an environment where the package is
installed, and importing the package must not cost those runs FastAPI and uvicorn.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import CassetteServerApp, create_app
    from .library import CassetteServer
    from .settings import Settings

__all__ = ["CassetteServer", "CassetteServerApp", "Settings", "create_app"]

# name → (module, its attribute); __version__ too: reading the package metadata takes milliseconds
_HOMES = {
    "CassetteServer": (".library", "CassetteServer"),
    "CassetteServerApp": (".app", "CassetteServerApp"),
    "Settings": (".settings", "Settings"),
    "create_app": (".app", "create_app"),
    "__version__": (".version", "VERSION"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = home
    value = getattr(import_module(module, __name__), attribute)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
