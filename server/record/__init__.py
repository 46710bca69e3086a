"""Recording: forward requests to the real provider, pass its answer on as it arrives, and write
it into a cassette (upstreams.py: where to; scrub.py: what never reaches disk; forward.py: the
upstream call and its timing; writer.py: cassette files; recorder.py: the one object the app
hands a request to).
"""

from __future__ import annotations

import enum


class RecordMode(enum.Enum):
    """When the server forwards a request to the upstream and records the answer."""

    OFF = "off"  # never: replay only (`serve`)
    MISS = "miss"  # when no recording matches (`serve --record-on-miss`)
    ALL = "all"  # always: nothing is served from cassettes (`record`)
