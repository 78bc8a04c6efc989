"""Fixtures for the kvctl suite (the harness lives in kvctl_harness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from kvctl_harness import etcd_pair  # noqa: E402,F401  (fixture)
