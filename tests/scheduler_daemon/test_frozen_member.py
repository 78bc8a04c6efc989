"""The member the scheduler daemon and the agents talk to freezes (SIGSTOP: connections stay
up, nothing answers). Their clients' keepalive moves their requests, watches and lease
keepalives to the other members, so a job submitted after the freeze still runs to the end.
Without keepalive their watches stalled on the frozen member: the job was never seen."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from harness import Procs, jobctl, phase, wait_for

from kvraft.server.local import LocalCluster

JOB = "name: {name}\ntasks:\n  - {{name: worker, replicas: 1, command: [sleep, '1'], resources: {{gpus: 1, cpu: 1, memory: 1Gi}}}}\n"


def test_a_job_submitted_after_the_daemons_member_froze_runs(procs: Procs, cluster3: LocalCluster, tmp_path: Path) -> None:
    leader = cluster3.wait_leader(60)
    victim = next(name for name in cluster3.members if name != leader)
    others = [cluster3.url(n) for n in cluster3.members if n != victim]
    procs.endpoints = [cluster3.url(victim), *others]  # every daemon pinned on the victim
    procs.agent("agents", "--nodes", "2", "--gpus-per-node", "8", "--racks", "1")
    procs.scheduler("sched-a")
    rc, _, err = jobctl(others, "submit", "-f", "-", stdin=JOB.format(name="before"))
    assert rc == 0, err
    wait_for(lambda: phase(others, "before") == "Succeeded", what="the job before the freeze")
    pid = cluster3.members[victim].pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        rc, _, err = jobctl(others, "submit", "-f", "-", stdin=JOB.format(name="after"))
        assert rc == 0, err
        wait_for(lambda: phase(others, "after") == "Succeeded", timeout_s=90, what="the job after the freeze")
    finally:
        os.kill(pid, signal.SIGCONT)
    cluster3.wait_ready(90)
