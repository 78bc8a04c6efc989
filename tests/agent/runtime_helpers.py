"""What the runtime tests share: the runtimes under test, waits on attempts, task runs."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from agent.reconcile import AttemptState
from agent.runtime.base import DeviceGrant, TaskRun
from agent.runtime.cgroups import CgroupLayout
from agent.runtime.process import ProcessRuntime
from agent.spec import parse_spec

RUNC_MISSING = ""
try:
    from agent.runtime.runc import runc_available

    RUNC_MISSING = runc_available()
except Exception as exc:  # pragma: no cover
    RUNC_MISSING = str(exc)

NO_CGROUPS = "" if CgroupLayout.detect().usable else "no writable cgroup hierarchy (needs root)"


# One node name per worker process: with the tests spread over xdist workers, a teardown that
# removes a node's cgroups must not reach another worker's running tasks.
NODE = f"rt-test-{os.getpid()}"
CG_NODE = f"cg-node-{os.getpid()}"


def make_runtime(kind: str, data_dir: Path, node: str = NODE, **kw):
    if kind == "runc":
        if RUNC_MISSING:
            pytest.skip(f"runc unavailable: {RUNC_MISSING}")
        from agent.runtime.runc import RuncRuntime

        return RuncRuntime(data_dir, node, **kw)
    return ProcessRuntime(data_dir, node, **kw)


async def wait_exit(rt, key: str, attempt: int = 1, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        for o in await rt.observe():
            if o.key == key and o.attempt == attempt and o.state in (AttemptState.EXITED, AttemptState.LOST):
                return o
        assert time.monotonic() < deadline, f"{key}#{attempt} did not end"
        await asyncio.sleep(0.1)


async def wait_running(rt, key: str, attempt: int = 1, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while True:
        for o in await rt.observe():
            if o.key == key and o.attempt == attempt and o.state is AttemptState.RUNNING:
                return o
        assert time.monotonic() < deadline, f"{key}#{attempt} not running"
        await asyncio.sleep(0.05)


def run(key: str, spec: dict, attempt: int = 1, devices: DeviceGrant | None = None) -> TaskRun:
    return TaskRun(key, attempt, 1, parse_spec(spec), devices or DeviceGrant())


IGNORES_TERM = "trap '' TERM; echo trapped; while true; do sleep 1; done"


async def wait_log(rt, key: str, text: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(ln.endswith(text) for ln in log_lines(rt, key)):
        assert time.monotonic() < deadline, f"{key} never logged {text!r}"
        await asyncio.sleep(0.05)


def log_lines(rt, key: str, attempt: int = 1) -> list[str]:
    out: list[str] = []
    for p in rt.log_files(key, attempt):
        out.extend(p.read_text().splitlines())
    return out


PY = "/usr/bin/python3"


