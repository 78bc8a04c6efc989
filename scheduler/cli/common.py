"""What the verbs share: the error type, reading files, and fetching jobs with their status."""

from __future__ import annotations

import json
import sys
from typing import Any

from kvraft.client import Op
from scheduler import keys

__all__ = ["CliError", "NotFound", "job_view", "read_input"]


class CliError(Exception):
    """A user error: printed as ``error: <message>`` on stderr, exit code 1."""


class NotFound(CliError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f'Error from server (NotFound): {kind} "{name}" not found')


def read_input(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        with open(path) as f:
            return f.read(), path
    except OSError as exc:
        raise CliError(f"error: the path \"{path}\" cannot be read: {exc.strerror}") from None


def _load(value: bytes) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return None


def job_view(client: Any, name: str | None = None) -> list[dict[str, Any]]:
    """Jobs as users see them: name, tenant, priority, spec, and ``status`` (phase, reason,
    restarts, placement), read at one revision."""
    if name is not None:
        keys.check_name(name, "job")
        resp = client.txn().then(Op.get(keys.job_key(name)), Op.get(keys.jobstatus_key(name))).commit()
        jobs = list(getattr(resp.responses[0], "kvs", ()))
        statuses = list(getattr(resp.responses[1], "kvs", ()))
    else:
        rev = client.get(keys.JOBS, prefix=True)
        jobs = list(rev.kvs)
        statuses = list(client.get(keys.JOBSTATUS, prefix=True, revision=rev.header.revision).kvs)
    st = {kv.key.decode()[len(keys.JOBSTATUS):]: _load(kv.value) for kv in statuses}
    out = []
    for kv in jobs:
        spec = _load(kv.value)
        if not isinstance(spec, dict):
            continue
        n = spec["name"]
        s = st.get(n) or {}
        status = {"phase": s.get("phase", "Pending"), "reason": s.get("reason", "Queued"),
                  "message": s.get("message", "waiting for the scheduler"), "restarts": int(s.get("restarts", 0)),
                  "preemptions": int(s.get("preemptions", 0)), "placement": list(s.get("placement") or []),
                  "submitted_at": spec.get("submitted_at"), "bound_at": s.get("bound_at"),
                  "finished_at": s.get("finished_at")}
        if s.get("last_placement"):
            status["last_placement"] = s["last_placement"]
        gpus = sum(t["replicas"] * t["resources"]["gpus"] for t in spec["tasks"])
        out.append({"name": n, "tenant": spec.get("tenant"), "priority": spec.get("priority"),
                    "priority_class": spec.get("priority_class"), "gpus": gpus,
                    "tasks": sum(t["replicas"] for t in spec["tasks"]), "spec": spec, "status": status,
                    "revision": kv.mod_revision})
    return out
