"""The launcher behind ``make demo``: a local 3-member kvraft cluster, shown serving.

Starts three members as processes on free 127.0.0.1 ports, writes and reads a few keys
through the etcd v3 JSON API (through different members), prints the member list and the
leader, then stops every member by PID. See ``kvraft.server.local`` for the harness.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvraft.server.local import demo  # noqa: E402

if __name__ == "__main__":
    sys.exit(demo())
