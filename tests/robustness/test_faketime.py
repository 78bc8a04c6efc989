"""The clock-skew environment of the robustness harness (``cluster.faketime_env``): the
wall clock follows the offset file, the monotonic clock does not, and a timed wait on a
CLOCK_MONOTONIC condition variable (what CPython's GIL hand-over uses) waits until its
deadline. With libfaketime's "monotonic fix" on (its default on this glibc) that wait
returned at once, the GIL hand-over spun, and the skewed member's Raft-log writer thread
waited up to a second per write behind its busy event loop (docs/robustness.md, seed 3025
of ``lease-leader-clock-jump``). This test failed before ``FAKETIME_FORCE_MONOTONIC_FIX=0``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvraft.robustness.cluster import FAKETIME_LIB, faketime_env

pytestmark = pytest.mark.skipif(not os.path.exists(FAKETIME_LIB), reason="libfaketime is not installed")

# pthread_cond_timedwait on a condition variable of CLOCK_MONOTONIC, deadline 50 ms ahead:
# POSIX says it does not time out before the deadline. (Through ctypes, so the call goes
# through the preloaded library as CPython's own calls do.)
PROBE = """
import ctypes, json, time
libc = ctypes.CDLL(None)
class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]
attr, cond, mutex = (ctypes.create_string_buffer(64) for _ in range(3))
assert libc.pthread_condattr_init(attr) == 0
assert libc.pthread_condattr_setclock(attr, time.CLOCK_MONOTONIC) == 0
assert libc.pthread_cond_init(cond, attr) == 0
assert libc.pthread_mutex_init(mutex, None) == 0
assert libc.pthread_mutex_lock(mutex) == 0
start = time.monotonic_ns()
deadline = start + 50_000_000
code = 0
while code == 0:  # 0 is a spurious wakeup (nobody signals): wait again for the same deadline
    code = libc.pthread_cond_timedwait(cond, mutex, ctypes.byref(Timespec(deadline // 10**9, deadline % 10**9)))
waited = time.monotonic_ns() - start
print(json.dumps({"wall": time.time(), "monotonic": time.monotonic(), "code": code, "waited_ns": waited}))
"""


def test_the_skewed_clock_moves_the_wall_clock_only_and_timed_waits_wait(tmp_path: Path) -> None:
    offset = tmp_path / "m0.faketime"
    offset.write_text("+90s\n")
    env = dict(os.environ, **faketime_env(offset))
    before_wall, before_mono = time.time(), time.monotonic()
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    after_wall, after_mono = time.time(), time.monotonic()
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    assert before_wall + 90 - 1 <= seen["wall"] <= after_wall + 90 + 1
    assert before_mono <= seen["monotonic"] <= after_mono  # CLOCK_MONOTONIC is the system's
    assert seen["code"] == 110  # ETIMEDOUT: nobody signals the condition
    assert seen["waited_ns"] >= 50_000_000  # not before its deadline (it returned at once)
