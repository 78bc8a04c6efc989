"""``kvraft-local`` without installing the package: ``python deploy/kvraft_local.py up|status|
kill-node|down|demo --dir D`` (see ``kvraft.local.cli``; ``make demo`` runs the demo verb)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvraft.local.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
