"""SIGKILL a writer child at a chosen moment: the harness of the crash tests.

A child workload script prints ``ready`` once open, then the number of each batch it has
made durable (1, 2, ...), one a line; ``kill_after`` starts it, kills it ``after_s``
seconds after ``ready`` and returns the last batch it acknowledged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def kill_after(script: str | Path, args: list[str], after_s: float) -> int:
    """Run ``script args...`` (with the repository on ``PYTHONPATH``), SIGKILL it ``after_s``
    seconds after it printed ``ready``; the last batch it acknowledged, 0 if none."""
    proc = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(after_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acked = [int(line) for line in proc.stdout.read().split()]
    return acked[-1] if acked else 0
