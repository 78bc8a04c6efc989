"""The bind txn's assignments: a tenant's ``run_as`` becomes each task's ``spec.user``."""

from __future__ import annotations

import json
from typing import Any

from agent.spec import parse_assignment
from scheduler import keys
from scheduler.binder import Binder
from scheduler.informer_view import ClusterView
from scheduler.jobs import normalize_job
from scheduler.model import Binding, Placement, TaskAssignment

TENANT = {"kind": "Tenant", "name": "nlp", "nominal_gpus": 8}


def _assignments(tenant_doc: dict[str, Any] | None) -> list[dict[str, Any]]:
    view = ClusterView()
    job = normalize_job({"name": "nlp-a", "tenant": "nlp", "tasks": [
        {"name": "worker", "replicas": 2, "command": ["true"], "resources": {"gpus": 1}}]},
        priority=None, submitted_at=0.0)
    view.put_local(keys.job_key("nlp-a"), job, 5, 5)
    if tenant_doc is not None:
        view.put_local(keys.tenant_key("nlp"), tenant_doc, 3, 3)
    placement = Placement((TaskAssignment(0, "n1", (0,)), TaskAssignment(1, "n2", (3,))))
    _, ops, _, _ = Binder(None, view, identity="s")._plan(Binding("nlp-a", placement, 1.0), 1.0)
    return [json.loads(op.body["value"]) for op in ops if op.body["key"].decode().startswith(keys.ASSIGNMENTS)]


def test_a_tenants_run_as_is_every_tasks_user() -> None:
    docs = _assignments(dict(TENANT, run_as_user=1000, run_as_group=100))
    assert [d["spec"]["user"] for d in docs] == [[1000, 100], [1000, 100]]
    for d in docs:  # and the agent reads it so
        assert parse_assignment("nlp-a/" + d["task"], 7, d).spec.user == (1000, 100)  # type: ignore[union-attr]


def test_without_run_as_the_tasks_run_as_root() -> None:
    for tenant_doc in (None, TENANT, dict(TENANT, run_as_user="x", run_as_group=1)):  # no record / no run_as / bad
        assert all("user" not in d["spec"] for d in _assignments(tenant_doc))
