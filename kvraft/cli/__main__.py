"""``python -m kvraft.cli``."""

from __future__ import annotations

import sys

from kvraft.cli.main import main

__all__: list[str] = []

sys.exit(main())
