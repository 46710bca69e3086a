"""cassette-server: replay recorded LLM API cassettes over HTTP, byte-exact, with the recorded timing."""

from .app import CassetteServerApp, create_app
from .settings import Settings
from .version import VERSION

__all__ = ["CassetteServerApp", "Settings", "create_app"]
__version__ = VERSION
