"""The scheduler daemon is given one member's URL; its client learns the other members
(``--auto-sync-interval-s``, clientv3's AutoSyncInterval), so when that member is gone for
good a job submitted afterwards is still scheduled and runs. Without the sync its client
knew only the dead member and never saw the job."""

from __future__ import annotations

import signal
from pathlib import Path

from harness import Procs, jobctl, phase, wait_for

from kvraft.server.local import LocalCluster

JOB = "name: {name}\ntasks:\n  - {{name: worker, replicas: 1, command: [sleep, '1'], resources: {{gpus: 1, cpu: 1, memory: 1Gi}}}}\n"


def test_a_scheduler_given_one_member_outlives_it(procs: Procs, cluster3: LocalCluster, tmp_path: Path) -> None:
    leader = cluster3.wait_leader(60)
    victim = next(name for name in cluster3.members if name != leader)
    others = [cluster3.url(n) for n in cluster3.members if n != victim]
    procs.agent("agents", "--nodes", "2", "--gpus-per-node", "8", "--racks", "1")
    procs.endpoints = [cluster3.url(victim)]  # the scheduler knows only the victim
    procs.scheduler("sched-a", "--auto-sync-interval-s", "0.5")
    rc, _, err = jobctl(others, "submit", "-f", "-", stdin=JOB.format(name="before"))
    assert rc == 0, err
    wait_for(lambda: phase(others, "before") == "Succeeded", what="the job before the member is lost")
    log = tmp_path / "sched-a.log"
    wait_for(lambda: "auto sync: endpoints" in log.read_text(), what="the scheduler's client to learn the members")
    cluster3.stop_member(victim, signal.SIGKILL)
    try:
        rc, _, err = jobctl(others, "submit", "-f", "-", stdin=JOB.format(name="after"))
        assert rc == 0, err
        wait_for(lambda: phase(others, "after") == "Succeeded", timeout_s=90, what="the job after the member is lost")
    finally:
        cluster3.start_member(victim)
    cluster3.wait_ready(90)
