"""The same seed gives a byte-identical trace, in this process and in another one."""

from __future__ import annotations

import os
import subprocess
import sys

from kvraft.sim.runner import run_seed

SEED = 7


def _trace(seed: int) -> str:
    res = run_seed(seed, trace=True)
    return "".join(line + "\n" for line in res.trace) + res.summary() + "\n"


def test_same_seed_same_trace_bytes() -> None:
    a, b = _trace(SEED), _trace(SEED)
    assert a.encode() == b.encode()
    assert len(a.splitlines()) > 1000  # a real run, not an empty one
    assert _trace(SEED + 1) != a


def test_trace_does_not_depend_on_hash_randomization_or_process() -> None:
    code = (
        "import sys; from kvraft.sim.runner import run_seed; "
        f"r = run_seed({SEED}, trace=True); "
        "sys.stdout.write(''.join(l + '\\n' for l in r.trace) + r.summary() + '\\n')"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, check=True)
    assert out.stdout == _trace(SEED).encode()


def test_tracing_does_not_change_the_run() -> None:
    quiet, loud = run_seed(SEED), run_seed(SEED, trace=True)
    assert quiet.trace == []
    assert quiet.summary() == loud.summary()
