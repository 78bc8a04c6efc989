"""A gang submitted while its nodes come up is bound by the first pass after the last node is
ready, whatever the order of node events, job arrival and passes: the queueing hints must
move it out of the unschedulable queue (the flush after 300 s is only a safety net)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from scheduler.cycle import Scheduler
from scheduler.model import JobAdded, NodeAdded, NodeUpdated
from scheduler.profiles import profile
from scheduler.testing import make_job, make_node

VARIANTS = ("unhealthy", "no-gpus", "cordoned", "fewer-cpu", "no-rack", "ready")


@pytest.mark.parametrize("seed", range(300))
def test_a_gang_submitted_during_start_up_binds_once_its_nodes_are_ready(seed: int) -> None:
    rng = random.Random(seed)
    n_nodes = rng.choice([2, 2, 3, 4])
    gpus = rng.choice([2, 4])
    final = [make_node(f"n{i}").gpus(gpus).rack("rack-0").cpu(2000).memory(4096).obj() for i in range(n_nodes)]
    steps = []
    for node in final:
        seq = []
        for _ in range(rng.randint(0, 3)):
            v = rng.choice(VARIANTS)
            early = {"unhealthy": replace(node, healthy=False), "no-gpus": replace(node, gpus=0, islands=()),
                     "cordoned": replace(node, schedulable=False), "fewer-cpu": replace(node, cpu_milli=200),
                     "no-rack": replace(node, rack=""), "ready": node}[v]
            seq.append(early)
        seq.append(node)
        steps.append(seq)
    job = make_job("j").gang(2, gpus).cpu(500).rack_required().obj()
    order: list[object] = []
    cursors = [0] * n_nodes
    pending = [i for i in range(n_nodes)]
    job_at = rng.randint(0, sum(len(s) for s in steps))
    seen: set[str] = set()
    while pending or job_at >= 0:
        if job_at == 0:
            order.append(JobAdded(job))
        job_at -= 1
        if pending:
            i = rng.choice(pending)
            node = steps[i][cursors[i]]
            order.append(NodeAdded(node) if node.name not in seen else NodeUpdated(node))
            seen.add(node.name)
            cursors[i] += 1
            if cursors[i] == len(steps[i]):
                pending.remove(i)
        if rng.random() < 0.6:
            order.append("pass")
    sched = Scheduler(profile("default"), seed=seed)
    now = 1000.0
    bound = False
    for item in order:
        now += rng.choice([0.0, 0.1, 1.0])
        if item == "pass":
            bound |= any(b.job_id == "j" for b in sched.schedule(now).bindings)
        else:
            sched.handle(item)
    bound |= any(b.job_id == "j" for b in sched.schedule(now + 1.0).bindings)
    assert bound, (seed, [getattr(x, "node", x) for x in order], sched.reasons.get("j"))
