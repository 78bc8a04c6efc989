"""Quota: per-tenant guaranteed GPUs with borrowing (Kueue cohorts, simplified to one cohort).

A tenant may always use up to its nominal quota. Beyond it, it borrows: allowed when
borrowing is on, the tenant stays within its ``borrow_limit_gpus``, and all tenants together
stay within the sum of nominal quotas (what it borrows is quota others leave unused). A job
refused only because others use the quota is UNSCHEDULABLE (preempting their gangs may help)
when its tenant's usage plus the job fits the sum of nominal quotas, else UNRESOLVABLE. Jobs of
tenants without a record have a nominal quota of ``unknown_tenant_nominal_gpus``. With no
tenants defined at all, quotas are off. Borrowed GPUs can be reclaimed by the preemption
plugin (``reclaim_borrowed``) when a tenant within its nominal quota needs them.

Before any of that, the tenant must admit the job (``scheduler.admission``: its name prefix and
its priority cap); a job it does not admit is UNRESOLVABLE with the reason.

Quota freed by a preemption belongs to its preemptor until it starts (Kubernetes keeps a
nominated pod's node resources from lower-priority pods; this is the same for quota): a job
ranked below a pending preemptor that holds a preemption reservation is UNRESOLVABLE if
admitting it would make the preemptor's quota check fail once the gangs being evicted are
gone. Else a lower-ranked job within its own nominal quota took the GPUs the preemptor was to
borrow, the preemptor evicted it in the next pass, a third job took them again, and so on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.admission import admission_problem
from scheduler.framework.args import decode_args
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import EnqueueExtensions, Handle, PreFilterPlugin
from scheduler.framework.status import SUCCESS, Status
from scheduler.model import Job
from scheduler.state import ClusterEvent, ClusterState, JobInfo

__all__ = ["NAME", "Quota", "QuotaArgs", "new", "nominal_gpus"]

NAME = "quota"


@dataclass(frozen=True)
class QuotaArgs:
    borrowing: bool = True
    unknown_tenant_nominal_gpus: int = 0


def nominal_gpus(state: ClusterState, tenant: str, unknown: int = 0) -> int:
    record = state.tenants.get(tenant)
    return record.nominal_gpus if record is not None else unknown


class Quota:
    name = NAME

    def __init__(self, args: QuotaArgs, handle: Handle | None = None) -> None:
        if args.unknown_tenant_nominal_gpus < 0:
            raise ValueError("quota: unknown_tenant_nominal_gpus must be >= 0")
        self.borrowing = args.borrowing
        self.unknown = args.unknown_tenant_nominal_gpus
        self.handle = handle
        self._nominal_total: tuple[int, int] = (-1, 0)  # (tenants version, sum of nominal quotas)
        self._admission: tuple[int, bool] = (-1, False)  # (tenants version, any tenant has rules)

    def total_nominal(self, state: ClusterState) -> int:
        version, total = self._nominal_total
        if version != state.tenants_version:
            total = sum(t.nominal_gpus for t in state.tenants.values())
            self._nominal_total = (state.tenants_version, total)
        return total

    def _has_admission_rules(self, state: ClusterState) -> bool:
        version, rules = self._admission
        if version != state.tenants_version:
            rules = any(t.job_name_prefix or t.max_priority is not None for t in state.tenants.values())
            self._admission = (state.tenants_version, rules)
        return rules

    def pre_filter(self, cs: CycleState, info: JobInfo) -> Status:
        state = cs.state
        if not state.tenants:
            return SUCCESS
        job = info.job
        if self._has_admission_rules(state):
            problem = admission_problem(job.job_id, job.tenant, job.priority, state.tenants)
            if problem is not None:
                return Status.unresolvable(problem, NAME)
        status = self._check(state, job, state.tenant_gpus.get(job.tenant, 0), state.allocated_gpus,
                             set(state.tenant_gpus))
        if not status.ok or not state.reservations or self.handle is None:
            return status
        return self._nominated(cs, info)

    def _nominated(self, cs: CycleState, info: JobInfo) -> Status:
        """Refuse ``info`` if it would take quota a higher-ranked pending preemptor needs once
        the gangs being evicted (all of them: a reservation does not name its victims) are gone."""
        state, job = cs.state, info.job
        preemptors = [r.job_id for r in state.reservations.values()
                      if r.kind == "preemption" and r.job_id != job.job_id and r.job_id in state.pending]
        if not preemptors:
            return SUCCESS
        assert self.handle is not None
        freed: dict[str, int] = {}
        for victim in state.running.values():
            if victim.evicting:
                freed[victim.job.tenant] = freed.get(victim.job.tenant, 0) + victim.job.gpus
        taken = dict(freed)
        taken[job.tenant] = taken.get(job.tenant, 0) - job.gpus  # a negative release: admit job
        mine = self.handle.rank(info, cs.now_s)
        for job_id in preemptors:
            other = state.pending[job_id]
            if self.handle.rank(other, cs.now_s) <= mine:
                continue
            if self.allows_after(state, other.job, freed) and not self.allows_after(state, other.job, taken):
                return Status.unresolvable(
                    f"tenant {job.tenant} would take quota that {job_id} (ranked higher) preempted gangs for", NAME)
        return SUCCESS

    def allows_after(self, state: ClusterState, job: Job, freed: Mapping[str, int]) -> bool:
        """Would ``job`` pass once the gangs counted in ``freed`` (tenant -> GPUs) are gone?
        Preemption asks before evicting, so that it never evicts for a job quota still blocks."""
        if not state.tenants:
            return True
        usage = state.tenant_gpus.get(job.tenant, 0) - freed.get(job.tenant, 0)
        allocated = state.allocated_gpus - sum(freed.values())
        using = {t for t, g in state.tenant_gpus.items() if g - freed.get(t, 0) > 0}
        return self._check(state, job, usage, allocated, using).ok

    def _check(self, state: ClusterState, job: Job, usage: int, allocated: int, using: set[str]) -> Status:
        tenant = job.tenant
        nominal = nominal_gpus(state, tenant, self.unknown)
        if usage + job.gpus <= nominal:
            return SUCCESS
        record = state.tenants.get(tenant)
        limit = record.borrow_limit_gpus if record is not None else None
        head = f"tenant {tenant} uses {usage} of {nominal} nominal GPUs and needs {job.gpus} more"
        if not self.borrowing or limit == 0:
            return Status.unresolvable(f"{head}; borrowing is off", NAME)
        borrow = usage + job.gpus - nominal
        if limit is not None and borrow > limit:
            return Status.unresolvable(f"{head}; would borrow {borrow}, limit {limit}", NAME)
        total_nominal = self.total_nominal(state)
        if self.unknown:
            unknown_tenants = {t for t in using if t not in state.tenants}
            total_nominal += self.unknown * len(unknown_tenants | ({tenant} - set(state.tenants)))
        unused = total_nominal - allocated
        if job.gpus > unused:
            message = f"{head}; would borrow {borrow} but only {max(unused, 0)} quota GPUs are unused"
            if usage + job.gpus <= total_nominal:
                # Evicting other tenants' gangs frees quota too: preemption may help.
                return Status.unschedulable(message, NAME)
            return Status.unresolvable(message, NAME)
        return SUCCESS

    def events_to_register(self) -> frozenset[ClusterEvent]:
        return frozenset({
            ClusterEvent.RESOURCES_FREED,  # a gang ended: its tenant's usage dropped
            ClusterEvent.TENANT_CHANGED,  # quotas were raised
            ClusterEvent.RESERVATION_CHANGED,  # a preemptor's hold lapsed: its quota is free
        })


def new(args: Mapping[str, Any], handle: Handle) -> Quota:
    return Quota(decode_args(QuotaArgs, args), handle)


_check_pre_filter: PreFilterPlugin = Quota(QuotaArgs())
_check_events: EnqueueExtensions = Quota(QuotaArgs())
