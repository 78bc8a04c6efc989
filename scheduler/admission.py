"""Tenant admission: which tenant a job may claim and how high its priority may be.

kvraft's auth grants by key prefix, so a tenant's jobs are told apart by a prefix of their
names (``job_name_prefix``, as a Slurm account or a Kubernetes namespace tells them apart):
``deploy/rbac.sh`` gives each tenant's submitters write access to ``/registry/jobs/<prefix>``
only, and the scheduler holds every job to its name:

- a tenant with a prefix admits only jobs whose names start with it;
- a job whose name starts with a tenant's prefix must be that tenant's (the longest matching
  prefix names the owner), so nobody can charge another tenant's quota by naming it;
- a tenant's ``max_priority`` caps the priority its jobs may have (a Slurm QOS limit, or a
  Kubernetes quota scoped to priority classes): a job above it is refused, not demoted.

Pure: the scheduler's quota plugin (PreFilter: the job stays Pending with this reason) and
``jobctl submit`` (refused before anything is written) call the same function.
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduler.model import Tenant

__all__ = ["admission_problem", "owner"]


def owner(job_name: str, tenants: Mapping[str, Tenant]) -> Tenant | None:
    """The tenant whose ``job_name_prefix`` is the longest one ``job_name`` starts with."""
    best: Tenant | None = None
    for t in tenants.values():
        prefix = t.job_name_prefix
        if prefix and job_name.startswith(prefix) and (best is None or len(prefix) > len(best.job_name_prefix or "")):
            best = t
    return best


def admission_problem(job_name: str, tenant: str, priority: int, tenants: Mapping[str, Tenant]) -> str | None:
    """Why tenant ``tenant`` does not admit the job, or None when it does."""
    record = tenants.get(tenant)
    prefix = record.job_name_prefix if record is not None else None
    if prefix and not job_name.startswith(prefix):
        return f'tenant {tenant} admits only jobs whose names start with "{prefix}"; this one is {job_name}'
    claimed = owner(job_name, tenants)
    if claimed is not None and claimed.name != tenant:
        return (f'a job named {job_name} belongs to tenant {claimed.name} (its names start with '
                f'"{claimed.job_name_prefix}"), not to tenant {tenant}')
    if record is not None and record.max_priority is not None and priority > record.max_priority:
        return f"tenant {tenant} allows priority up to {record.max_priority}; this job has {priority}"
    return None
