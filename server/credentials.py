"""What counts as a credential in a request, in one place: ``check`` looks for these, recording
keeps them off the disk, and matching ignores the value of a credential query parameter (so a
request recorded with ``key=REDACTED`` still matches one sent with a real key).
"""

from __future__ import annotations

# The value written in place of a credential.
REDACTED = "REDACTED"

# Request headers that carry credentials (lower case).
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key")

# Query parameters that carry credentials (lower case): Gemini's `key=` and its cousins.
CREDENTIAL_PARAMETERS = frozenset({"key", "api_key", "apikey", "api-key", "access_token", "token", "x-goog-api-key"})


def is_credential_parameter(name: str) -> bool:
    """Whether a query parameter (any case) carries a credential."""
    return name.lower() in CREDENTIAL_PARAMETERS
