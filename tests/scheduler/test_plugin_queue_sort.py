"""Queue policies: priority-FIFO, Tiresias LAS, shortest-job-first. Table-driven orders."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from scheduler.plugins.las.plugin import LasArgs, LeastAttainedService
from scheduler.plugins.priority.plugin import PrioritySort
from scheduler.plugins.sjf.plugin import ShortestJobFirst, SjfArgs
from scheduler.state import JobInfo, Phase
from scheduler.testing import make_job


def info(job_id: str, *, gpus: int = 1, priority: int = 0, submit: float = 0.0, est: float | None = None,
         attained_gpu_h: float = 0.0, running_since: float | None = None) -> JobInfo:
    builder = make_job(job_id).gpus(gpus).priority(priority).submitted(submit)
    if est is not None:
        builder.estimate(est)
    out = builder.info()
    out.attained_gpu_s = attained_gpu_h * 3600
    if running_since is not None:
        out.phase, out.bound_at_s = Phase.RUNNING, running_since
    return out


@dataclass(frozen=True)
class OrderCase:
    name: str
    policy: object
    jobs: tuple[JobInfo, ...]
    want: tuple[str, ...]
    now_s: float = 0.0


CASES = [
    OrderCase("priority then fifo", PrioritySort(),
              (info("a", submit=3), info("b", submit=1), info("c", priority=5, submit=9)), ("c", "b", "a")),
    OrderCase("las: less service first, fifo inside a queue", LeastAttainedService(LasArgs()),
              (info("old", submit=0, attained_gpu_h=9), info("new", submit=5), info("newer", submit=6)),
              ("new", "newer", "old")),
    OrderCase("las: two thresholds", LeastAttainedService(LasArgs(thresholds_gpu_h=(1.0, 10.0))),
              (info("q2", attained_gpu_h=20), info("q1", attained_gpu_h=5), info("q0", attained_gpu_h=0.5)),
              ("q0", "q1", "q2")),
    OrderCase("las: shortest estimate inside a queue", LeastAttainedService(LasArgs(within="shortest")),
              (info("long", est=7200, submit=0), info("short", est=60, submit=5), info("unknown", submit=1)),
              ("short", "long", "unknown")),
    OrderCase("las: gpu-time estimate counts width", LeastAttainedService(LasArgs(within="shortest")),
              (info("wide", gpus=8, est=600), info("narrow", gpus=1, est=3000)), ("narrow", "wide")),
    OrderCase("las: runtime estimate ignores width", LeastAttainedService(LasArgs(within="shortest_runtime")),
              (info("narrow", gpus=1, est=3000), info("wide", gpus=8, est=600)), ("wide", "narrow")),
    OrderCase("las: aging lifts a long-waiting wide job", LeastAttainedService(LasArgs(within="shortest", aging_s=3600)),
              (info("fresh", est=3600, submit=99_000), info("waited", gpus=8, est=3600, submit=0)),
              ("waited", "fresh"), now_s=100_000),
    OrderCase("sjf: shortest first, unknown last", ShortestJobFirst(SjfArgs()),
              (info("u", submit=0), info("l", est=900, submit=1), info("s", est=100, submit=2)), ("s", "l", "u")),
    OrderCase("sjf: priority beats length", ShortestJobFirst(SjfArgs()),
              (info("s", est=1), info("p", est=1e6, priority=1)), ("p", "s")),
    OrderCase("sjf: remaining work after a preemption", ShortestJobFirst(SjfArgs()),
              (info("fresh", est=3000), info("resumed", est=3600, attained_gpu_h=0.9)), ("resumed", "fresh")),
    OrderCase("sjf by gpu time", ShortestJobFirst(SjfArgs(by="gpu_time")),
              (info("wide", gpus=8, est=100), info("narrow", est=700)), ("narrow", "wide")),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_queue_order(case: OrderCase) -> None:
    policy = case.policy
    ordered = sorted(case.jobs, key=lambda i: policy.sort_key(i, case.now_s))  # type: ignore[attr-defined]
    assert tuple(i.job.job_id for i in ordered) == case.want


def test_las_rank_and_demotion_time() -> None:
    las = LeastAttainedService(LasArgs(thresholds_gpu_h=(8.0,)))
    running = info("r", gpus=4, running_since=1000.0)
    assert las.rank(running, 1000.0) == (0, 0)
    assert las.next_rank_change_s(running, 1000.0) == 1000.0 + 2 * 3600  # 8 GPU-h at 4 GPUs
    assert las.rank(running, 1000.0 + 2 * 3600) == (0, -1)
    assert las.next_rank_change_s(running, 1000.0 + 2 * 3600) is None
    assert las.next_rank_change_s(info("p"), 0.0) is None  # pending jobs do not age


def test_las_time_service_and_starvation() -> None:
    las = LeastAttainedService(LasArgs(thresholds_gpu_h=(1.0,), service="time", starvation_factor=2.0))
    wide = info("w", gpus=8, attained_gpu_h=4)  # half an hour per GPU: still queue 0
    assert las.queue_of(wide, 0.0) == 0
    starving = info("s", gpus=1, attained_gpu_h=2)  # 2 h run, pending since 0
    assert las.queue_of(starving, 3600.0) == 1
    assert las.queue_of(starving, 5 * 3600.0) == 0  # waited more than 2 x its run time


@pytest.mark.parametrize("args", [LasArgs(thresholds_gpu_h=(8.0, 4.0)), LasArgs(within="random"),
                                  LasArgs(service="memory"), LasArgs(aging_s=0.0)])
def test_las_rejects_bad_args(args: LasArgs) -> None:
    with pytest.raises(ValueError):
        LeastAttainedService(args)
