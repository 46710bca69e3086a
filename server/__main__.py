"""``python -m server`` is the ``cassette-server`` command."""

import sys

from .cli import main

sys.exit(main())
