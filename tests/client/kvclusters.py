"""Cluster runtimes for the client and kvctl suites: one behavioural suite, two runtimes.

``etcd``: real etcd 3.4 members (Debian ``etcd-server``); ``kvraft``: kvraft members
(``python -m kvraft.server.main``). Both come from ``kvraft.server.local.LocalCluster``:
127.0.0.1, free ports, data under the test's tmp dir, every process stopped by PID.

``KVRAFT_MISSING`` names the features kvraft's server does not serve yet; tests that need
one are marked xfail(strict=True) for the kvraft runtime only, so the mark must be removed
the day the feature lands (an XPASS fails the run).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvraft.server.local import LocalCluster

__all__ = ["FAST_FLAGS", "KVRAFT_MISSING", "RUNTIMES", "Runtime", "etcdctl_path", "require", "started"]

FAST_FLAGS = ["--heartbeat-interval", "50", "--election-timeout", "500"]
RUNTIMES = ["etcd", "kvraft"]

KVRAFT_MISSING: dict[str, str] = {
    # feature -> reason. Empty since kvraft's server grew watch, leases, auth, lock and
    # election (commits 332f9ef..0c8df88); add an entry when a test needs a missing route.
}


def etcdctl_path() -> str | None:
    return shutil.which("etcdctl")


@dataclass
class Runtime:
    name: str
    cluster: LocalCluster

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.cluster.members.values()]

    def kill(self, member: str) -> None:
        self.cluster.stop_member(member, sig=signal.SIGKILL)

    def restart(self, member: str) -> None:
        self.cluster.start_member(member)  # existing data dir: both recover their state

    def leader(self, timeout_s: float = 60.0) -> str:
        return self.cluster.wait_leader(timeout_s)

    def stop(self) -> None:
        self.cluster.stop()


def start_runtime(name: str, base: Path, size: int = 1) -> Runtime:
    if name == "etcd" and shutil.which("etcd") is None:
        pytest.skip("etcd binary not installed (apt-get install etcd-server etcd-client; .ci/run does)")
    cluster = LocalCluster(size, base / name, binary=name, extra_args=FAST_FLAGS)
    try:
        cluster.start(timeout_s=90)
    except BaseException:
        cluster.stop()
        raise
    return Runtime(name, cluster)


@contextlib.contextmanager
def started(*specs: tuple[str, Path]) -> Iterator[list[Runtime]]:
    """One runtime per ``(name, base)``, started in order (those already up are stopped if
    a later one fails to start); all stopped, in order, on exit."""
    runtimes: list[Runtime] = []
    try:
        for name, base in specs:
            runtimes.append(start_runtime(name, base))
        yield runtimes
    finally:
        for runtime in runtimes:
            runtime.stop()


def require(request: pytest.FixtureRequest, runtime: Runtime, feature: str) -> None:
    """Mark the running test xfail(strict) on kvraft when kvraft lacks ``feature``."""
    if runtime.name == "kvraft" and feature in KVRAFT_MISSING:
        request.applymarker(pytest.mark.xfail(strict=True, reason=KVRAFT_MISSING[feature]))
