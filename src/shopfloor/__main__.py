"""``python -m shopfloor``: the same entry point as the ``shopfloor`` console script."""

from __future__ import annotations

import sys

from shopfloor.cli import main

sys.exit(main())
