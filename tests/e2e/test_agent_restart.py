"""An agent that crashes alone (SIGKILL of the agent process only; its tasks keep running
under their supervisors) is started again (``kvraft-local start-node``) within the lease TTL:
it re-attaches, and the MPI job goes on and succeeds without a restart."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from kvraft.local import LocalSpec, down, up
from kvraft.local.procs import pid_alive
from tests.e2e.conftest import Cluster, job_yaml, processes_with_env, wait_for


def test_agent_killed_alone_reattaches_and_the_job_goes_on(tmp_path: Path) -> None:
    spec = LocalSpec(members=1, schedulers=1, agents=2, gpus_per_agent=4, racks=1, lease_ttl_s=20, heartbeat_s=2.0,
                     election_ttl_s=3, node_prefix=f"ra{os.getpid()}", dashboard=False)
    try:
        doc = up(tmp_path, spec, timeout_s=180.0, say=lambda m: None)
        c = Cluster(tmp_path, doc)
        try:
            name = "e2e-reattach"
            r = c.jobctl("submit", "-f", "-", "-o", "name", stdin=job_yaml(
                name, "--epochs", "8", "--epoch-pause-s", "1.5", workers=2, gpus=4,
                restart_policy="OnFailure", max_restarts=2))
            assert r.returncode == 0, r.stderr
            wait_for(lambda: (c.progress(name).get("epoch") or 0) >= 1 and not c.progress(name).get("started"),
                     240, "the first epoch", explain=lambda: c.describe(name))
            tasks_before = set(processes_with_env(f"KVRAFT_JOB={name}"))
            node = c.status(name)["placement"][0]["node"]
            agent = next(p for p in doc["processes"] if p["name"] == node)
            os.kill(agent["pid"], signal.SIGKILL)
            wait_for(lambda: not pid_alive(agent["pid"]), 30, "the agent gone")
            assert all(pid_alive(p) for p in tasks_before), "the tasks died with their agent"
            r = c.local("start-node", node)
            assert r.returncode == 0, r.stderr
            status = c.succeeded(name, 300)
            assert status["restarts"] == 0, status
            assert c.progress(name)["restarts"] == 0
        finally:
            c.client.close()
    finally:
        down(tmp_path)
