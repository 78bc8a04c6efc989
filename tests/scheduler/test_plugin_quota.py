"""Quota with borrowing, and tenant admission (scheduler/admission.py): table-driven PreFilter cases."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from scheduler.framework.status import Code
from scheduler.model import Tenant, TenantUpdated
from scheduler.plugins.quota.plugin import Quota, QuotaArgs
from scheduler.testing import cluster, cycle_state, make_job, make_nodes


@dataclass(frozen=True)
class QuotaCase:
    name: str
    tenants: tuple[Tenant, ...]
    usage: dict[str, int]  # tenant -> GPUs running
    tenant: str
    gpus: int
    want_code: Code
    want_message: str = ""
    args: QuotaArgs = field(default_factory=QuotaArgs)
    job: str = "j"
    priority: int = 0


T = (Tenant("a", 16), Tenant("b", 16))
CASES = [
    QuotaCase("within nominal", T, {"a": 8}, "a", 8, Code.SUCCESS),
    QuotaCase("borrows unused quota", T, {"a": 16}, "a", 8, Code.SUCCESS),
    QuotaCase("nothing left to borrow: preemption may free some", T, {"a": 20, "b": 12}, "a", 1, Code.UNSCHEDULABLE,
              "tenant a uses 20 of 16 nominal GPUs and needs 1 more; would borrow 5 but only 0 quota GPUs are unused"),
    QuotaCase("more than all quotas together", T, {"a": 20, "b": 12}, "a", 13, Code.UNRESOLVABLE,
              "tenant a uses 20 of 16 nominal GPUs and needs 13 more; would borrow 17 but only 0 quota GPUs are unused"),
    QuotaCase("borrow limit", (Tenant("a", 16, 4), Tenant("b", 16)), {"a": 16}, "a", 8, Code.UNRESOLVABLE,
              "tenant a uses 16 of 16 nominal GPUs and needs 8 more; would borrow 8, limit 4"),
    QuotaCase("borrowing off", T, {"a": 16}, "a", 1, Code.UNRESOLVABLE,
              "tenant a uses 16 of 16 nominal GPUs and needs 1 more; borrowing is off", QuotaArgs(borrowing=False)),
    QuotaCase("no borrowing for this tenant", (Tenant("a", 16, 0), Tenant("b", 16)), {}, "a", 17,
              Code.UNRESOLVABLE, "tenant a uses 0 of 16 nominal GPUs and needs 17 more; borrowing is off"),
    QuotaCase("unknown tenant borrows", T, {"a": 8}, "x", 8, Code.SUCCESS),
    QuotaCase("no tenants: quotas off", (), {"a": 64}, "a", 64, Code.SUCCESS),
]

P = (Tenant("a", 16, job_name_prefix="a-", max_priority=10), Tenant("ab", 16, job_name_prefix="a-b-"), Tenant("b", 16))
ADMISSION = [
    QuotaCase("its own prefix", P, {}, "a", 8, Code.SUCCESS, job="a-1"),
    QuotaCase("a name without the tenant's prefix", P, {}, "a", 8, Code.UNRESOLVABLE,
              'tenant a admits only jobs whose names start with "a-"; this one is j'),
    QuotaCase("a name with another tenant's prefix", P, {}, "b", 8, Code.UNRESOLVABLE,
              'a job named a-x belongs to tenant a (its names start with "a-"), not to tenant b', job="a-x"),
    QuotaCase("charged to a tenant without a record", P, {}, "nobody", 8, Code.UNRESOLVABLE,
              'a job named a-x belongs to tenant a (its names start with "a-"), not to tenant nobody', job="a-x"),
    QuotaCase("the longest prefix owns the name", P, {}, "a", 8, Code.UNRESOLVABLE,
              'a job named a-b-1 belongs to tenant ab (its names start with "a-b-"), not to tenant a', job="a-b-1"),
    QuotaCase("the longer prefix's own job", P, {}, "ab", 8, Code.SUCCESS, job="a-b-1"),
    QuotaCase("a tenant without a prefix takes other names", P, {}, "b", 8, Code.SUCCESS, job="j"),
    QuotaCase("priority at the cap", P, {}, "a", 8, Code.SUCCESS, job="a-1", priority=10),
    QuotaCase("priority over the cap", P, {}, "a", 8, Code.UNRESOLVABLE,
              "tenant a allows priority up to 10; this job has 11", job="a-1", priority=11),
    QuotaCase("admitted, then held to its quota", P, {"a": 16}, "a", 1, Code.UNRESOLVABLE,
              "tenant a uses 16 of 16 nominal GPUs and needs 1 more; borrowing is off", QuotaArgs(borrowing=False),
              job="a-1"),
]


@pytest.mark.parametrize("case", CASES + ADMISSION, ids=lambda c: c.name)
def test_quota(case: QuotaCase) -> None:
    builder = cluster(make_nodes(16))
    node = 0
    for tenant, gpus in case.usage.items():
        on: dict[str, int] = {}
        left = gpus
        while left:
            take = min(8, left)
            on[f"n{node}"] = take
            node += 1
            left -= take
        builder.running(make_job(f"run-{tenant}").gpus(gpus).tenant(tenant), on)
    state = builder.state()
    for tenant in case.tenants:
        state.handle(TenantUpdated(tenant))
    info = make_job(case.job).gpus(case.gpus).tenant(case.tenant).priority(case.priority).info()
    status = Quota(case.args).pre_filter(cycle_state(state, info), info)
    assert (status.code, status.message) == (case.want_code, case.want_message)
