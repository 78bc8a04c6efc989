"""A whole local cluster (kvraft-local) with short lease TTLs, shared by the tests of a module;
every process is stopped by PID in teardown (``kvraft.local.down``)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.collective.jobrun import sweep_tmpdirs
from kvraft.client import SyncClient
from kvraft.local import LocalSpec, down, up

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def wait_for(cond: Callable[[], Any], timeout_s: float = 120.0, what: str = "condition", every_s: float = 0.25,
             explain: Callable[[], str] | None = None) -> Any:
    """Poll ``cond`` until truthy; on a timeout the assertion carries ``explain()`` (the job's
    ``jobctl describe`` and its ranks' logs), without which a CI failure said only "timed out"."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = ""
            if explain is not None:
                try:
                    detail = "\n" + explain()
                except Exception as exc:  # noqa: BLE001 - the timeout is the failure to report
                    detail = f"\n(could not explain: {exc!r})"
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}{detail}")
        time.sleep(every_s)


class Cluster:
    def __init__(self, directory: Path, doc: dict[str, Any]) -> None:
        self.dir = directory
        self.doc = doc
        self.endpoints: list[str] = doc["endpoints"]
        self.client = SyncClient(self.endpoints, request_timeout_s=15.0)

    def jobctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "scheduler.cli.main", "--endpoints", ",".join(self.endpoints), *args],
                              input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))

    def local(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, "-m", "kvraft.local", *args, "--dir", str(self.dir)], capture_output=True,
                              text=True, timeout=120, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))

    def doc_of(self, key: str) -> dict[str, Any] | None:
        got = self.client.get(key)
        return json.loads(got.kvs[0].value) if got.kvs else None

    def status(self, job: str) -> dict[str, Any]:
        return self.doc_of(f"/registry/jobstatus/{job}") or {}

    def progress(self, job: str) -> dict[str, Any]:
        return self.doc_of(f"/jobs/{job}/progress") or {}

    def task_phases(self, job: str) -> dict[str, str]:
        out = {}
        for kv in self.client.get(f"/registry/tasks/{job}/", prefix=True).kvs:
            doc = json.loads(kv.value)
            out[doc.get("task", kv.key.decode())] = doc.get("phase", "")
        return out

    def succeeded(self, job: str, timeout_s: float = 300.0) -> dict[str, Any]:
        """Wait for ``job`` to end and return its status; it must have Succeeded (else the
        assertion shows ``jobctl describe`` and worker-0's log)."""
        wait_for(lambda: self.status(job).get("phase") in ("Succeeded", "Failed"), timeout_s, f"{job} to finish",
                 explain=lambda: self.describe(job))
        status = self.status(job)
        assert status["phase"] == "Succeeded", self.describe(job)
        return status

    def describe(self, job: str, ranks: int = 2) -> str:
        """``jobctl describe`` and the last lines of the first ``ranks`` workers' logs."""
        r = self.jobctl("describe", "job", job)
        out = r.stdout + r.stderr
        for rank in range(ranks):
            logs = self.jobctl("logs", job, "--task", f"worker-{rank}", "--tail", "40")
            out += f"\n--- worker-{rank} ---\n" + logs.stdout + logs.stderr
        return out


def job_yaml(name: str, *train_args: str, workers: int = 4, gpus: int = 2, backend: str = "auto",
             cpu: str = "500m", **extra: Any) -> str:
    """The digits trainer under ``jobrun`` as ``workers`` ranks. ``cpu`` is each rank's CFS
    quota: 500m lets 4 ranks fill the 2-CPU box; at 100m the busy-polling MPI ranks spend their
    quota spinning and stall each other (docs/jobs.md), and an epoch took 14 s, not 0.03 s."""
    cmd = ["python3", "-m", "agent.collective.jobrun", "--backend", backend, "--", "python3",
           "examples/train_digits.py", *train_args]
    lines = [f"name: {name}", "tasks:",
             f"  - {{name: worker, replicas: {workers}, command: {json.dumps(cmd)}, "
             f"resources: {{gpus: {gpus}, cpu: \"{cpu}\"}}}}",
             "topology: {mode: required, level: rack}", "grace_s: 5"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def processes_with_env(entry: str) -> list[int]:
    """PIDs whose environment holds ``entry`` (``KVRAFT_JOB=name``)."""
    needle = entry.encode() + b"\0"
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in open(f"/proc/{pid}/environ", "rb").read():  # noqa: SIM115
                out.append(int(pid))
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("local")
    spec = LocalSpec(members=3, schedulers=2, agents=4, gpus_per_agent=4, racks=2, lease_ttl_s=3, heartbeat_s=1.0,
                     election_ttl_s=3, node_prefix=f"e2e{os.getpid()}",
                     plugin_args=("elastic.grow_after_s=5",))  # elastic jobs grow within seconds
    try:
        doc = up(directory, spec, timeout_s=180.0, say=lambda m: None)
        c = Cluster(directory, doc)
        try:
            yield c
        finally:
            c.client.close()
    finally:
        down(directory)  # also removes the agents' cgroup parents (kvraft-agent/<node>)
        sweep_tmpdirs()  # the TMPDIRs of the jobruns the tests killed (the next jobrun would)
