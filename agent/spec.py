"""PURE: the task spec an assignment carries, parsed and validated into frozen values.

An assignment (``/registry/assignments/<node>/<job>/<task>``, docs/keyspace.md) is JSON::

    {"job": "j1", "task": "worker-0", "spec": {
        "image": "host",                     # "host" (read-only host /usr), or a rootfs/OCI dir
        "command": ["python3", "train.py"],  # argv; a string is run with /bin/sh -c
        "env": {"EPOCHS": "3"}, "workdir": "/workdir",
        "resources": {"gpus": [0, 1], "cpu_milli": 2000, "memory_mib": 4096, "pids": 512,
                      "cpuset": "0-3", "rdma": true},
        "restart_policy": "Never" | "OnFailure" | "Always", "max_restarts": 3,
        "grace_s": 30, "network": "host" | "none" | "job" | "<netns path>", "user": [uid, gid]},
     "stopping": {"reason": "preempted", "since": 1796170100.2}}

``stopping`` (written by the scheduler, absent while the task should run) is Kubernetes'
deletionTimestamp: stop the task with its grace period and report how it ended; the scheduler
deletes the assignment once every task of the run has ended (or the grace period is over).

``network``: ``host`` (default), ``none`` (a fresh namespace with only loopback), ``job`` (one
loopback-only namespace shared by the job's tasks on this node; runc), or the path of an
existing namespace (``/run/netns/<name>``).

``parse_assignment`` never raises on user input: a bad spec comes back as ``SpecError`` text
that the reconcile turns into a ``Failed`` status with reason ``InvalidSpec``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RESTART_POLICIES",
    "Assignment",
    "Resources",
    "SpecError",
    "TaskSpec",
    "check_text",
    "parse_assignment",
    "parse_spec",
]

RESTART_POLICIES = ("Never", "OnFailure", "Always")


class SpecError(ValueError):
    """A task spec that cannot run; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Resources:
    gpus: tuple[int, ...] = ()
    cpu_milli: int = 0
    memory_mib: int = 0
    pids: int = 0
    cpuset: str = ""
    rdma: bool = False


@dataclass(frozen=True, slots=True)
class TaskSpec:
    command: tuple[str, ...]
    image: str = "host"
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = ""
    resources: Resources = field(default_factory=Resources)
    restart_policy: str = "Never"
    max_restarts: int | None = None
    grace_s: float = 30.0
    network: str = "host"
    user: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        r = self.resources
        return {
            "command": list(self.command),
            "image": self.image,
            "env": dict(self.env),
            "workdir": self.workdir,
            "resources": {
                "gpus": list(r.gpus),
                "cpu_milli": r.cpu_milli,
                "memory_mib": r.memory_mib,
                "pids": r.pids,
                "cpuset": r.cpuset,
                "rdma": r.rdma,
            },
            "restart_policy": self.restart_policy,
            "max_restarts": self.max_restarts,
            "grace_s": self.grace_s,
            "network": self.network,
            "user": list(self.user) if self.user else None,
        }


@dataclass(frozen=True, slots=True)
class Assignment:
    """One task assigned to this node, as read from kvraft.

    ``revision`` is the assignment key's create_revision: it names this placement. A task
    deleted and assigned again (same job/task name) gets a new revision, hence a new run.
    """

    key: str  # "<job>/<task>"
    revision: int
    spec: TaskSpec | None
    error: str = ""  # set when spec is None
    stopping: str = ""  # why the scheduler asks for the task to stop ("" while it should run)


_MAX_QUANTITY = 1 << 62  # far beyond any machine; cgroup files and the runtimes take int64
_MAX_MEMORY_MIB = (2**63 - 1) >> 20  # the limit is written in bytes, an int64 (the kernel reads more as 0)


def _int(doc: dict[str, Any], name: str, path: str, minimum: int = 0, maximum: int = _MAX_QUANTITY) -> int:
    value = doc.get(name, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{path}.{name}: must be an integer, not {value!r}")
    if value < minimum:
        raise SpecError(f"{path}.{name}: must be >= {minimum}, not {value}")
    if value > maximum:
        raise SpecError(f"{path}.{name}: must be <= {maximum}, not "
                        + (str(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"))
    return value


def _resources(doc: Any) -> Resources:
    if doc is None:
        return Resources()
    if not isinstance(doc, dict):
        raise SpecError("spec.resources: must be a mapping")
    gpus = doc.get("gpus", ()) or ()
    if isinstance(gpus, int) and not isinstance(gpus, bool):
        raise SpecError("spec.resources.gpus: must be the list of GPU indices the scheduler chose")
    if not isinstance(gpus, list | tuple) or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0 for g in gpus):
        raise SpecError(f"spec.resources.gpus: must be a list of GPU indices >= 0, not {gpus!r}")
    if len(set(gpus)) != len(gpus):
        raise SpecError(f"spec.resources.gpus: duplicate GPU index in {list(gpus)}")
    memory_mib = _int(doc, "memory_mib", "spec.resources", maximum=_MAX_MEMORY_MIB)
    if memory_mib and memory_mib < 4:
        raise SpecError(f"spec.resources.memory_mib: {memory_mib} MiB is too small to start a process (>= 4)")
    cpuset = doc.get("cpuset", "") or ""
    if not isinstance(cpuset, str) or (cpuset and not all(_cpu_range(part) for part in cpuset.split(","))):
        raise SpecError(f"spec.resources.cpuset: must look like '0-3,6', not {cpuset!r}")
    return Resources(
        gpus=tuple(gpus),
        cpu_milli=_int(doc, "cpu_milli", "spec.resources"),
        memory_mib=memory_mib,
        pids=_int(doc, "pids", "spec.resources"),
        cpuset=cpuset,
        rdma=bool(doc.get("rdma", False)),
    )


def _cpu_range(part: str) -> bool:
    """One item of a CPU list: ``N`` or ``N-M`` with N <= M (what the kernel's cpuset takes)."""
    m = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", part)
    return m is not None and (m.group(2) is None or int(m.group(1)) <= int(m.group(2)))


def check_text(value: Any, path: str) -> None:
    """No string of a spec may hold a NUL, or a lone surrogate (JSON's ``\\ud800``, which is
    no UTF-8): no argv, environment or path can (exec refuses them)."""
    if isinstance(value, str) and "\0" in value:
        raise SpecError(f"{path}: contains a NUL character")
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise SpecError(f"{path}: is not valid UTF-8 (a lone surrogate)") from None
    if isinstance(value, dict):
        for k, v in value.items():
            check_text(k, f"{path} key")
            check_text(v, f"{path}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            check_text(v, f"{path}[{i}]")


def parse_spec(doc: Any) -> TaskSpec:
    """Validate a spec mapping; raise ``SpecError`` naming the first bad field."""
    if not isinstance(doc, dict):
        raise SpecError("spec: must be a mapping")
    check_text(doc, "spec")
    command = doc.get("command")
    if isinstance(command, str):
        if not command.strip():
            raise SpecError("spec.command: empty")
        command = ["/bin/sh", "-c", command]
    if not isinstance(command, list | tuple) or not command or not all(isinstance(a, str) for a in command):
        raise SpecError(f"spec.command: must be a non-empty list of strings, not {command!r}")
    if not command[0]:
        raise SpecError("spec.command[0]: empty program name")
    image = doc.get("image", "host") or "host"
    if not isinstance(image, str):
        raise SpecError("spec.image: must be a string")
    env = doc.get("env", {}) or {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and k and "=" not in k for k in env):
        raise SpecError("spec.env: must map names (without '=') to values")
    for k, v in env.items():  # a number or a boolean becomes its text, as in a job file
        if not isinstance(v, str | int | float) or (isinstance(v, float) and not math.isfinite(v)):
            raise SpecError(f"spec.env.{k}: must be a string, not {v!r}")
    policy = doc.get("restart_policy", "Never") or "Never"
    if policy not in RESTART_POLICIES:
        raise SpecError(f"spec.restart_policy: must be one of {', '.join(RESTART_POLICIES)}, not {policy!r}")
    max_restarts = doc.get("max_restarts")
    if max_restarts is not None and (isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0):
        raise SpecError(f"spec.max_restarts: must be an integer >= 0, not {max_restarts!r}")
    grace_s = doc.get("grace_s", 30.0)
    if isinstance(grace_s, int) and not isinstance(grace_s, bool) and grace_s > _MAX_QUANTITY:  # no float holds it
        raise SpecError(f"spec.grace_s: must be a finite number >= 0, not an integer of {grace_s.bit_length()} bits")
    if isinstance(grace_s, bool) or not isinstance(grace_s, int | float) or not 0 <= grace_s < math.inf:
        raise SpecError(f"spec.grace_s: must be a finite number >= 0, not {grace_s!r}")
    network = doc.get("network", "host") or "host"
    if not isinstance(network, str):
        raise SpecError("spec.network: must be 'host', 'none', 'job' or a network namespace path")
    user = doc.get("user")
    if user is not None and (
        not isinstance(user, list | tuple) or len(user) != 2
        or not all(isinstance(u, int) and not isinstance(u, bool) and 0 <= u < 1 << 32 for u in user)
    ):
        raise SpecError(f"spec.user: must be [uid, gid], not {user!r}")
    workdir = doc.get("workdir", "") or ""
    if not isinstance(workdir, str):
        raise SpecError("spec.workdir: must be a string")
    if workdir and not workdir.startswith("/"):  # the task's, not the agent's, working directory
        raise SpecError(f"spec.workdir: must be an absolute path, not {workdir!r}")
    return TaskSpec(
        command=tuple(command),
        image=image,
        env=tuple(sorted((k, str(v)) for k, v in env.items())),
        workdir=workdir,
        resources=_resources(doc.get("resources")),
        restart_policy=policy,
        max_restarts=max_restarts,
        grace_s=float(grace_s),
        network=network,
        user=(user[0], user[1]) if user else None,
    )


def parse_assignment(key: str, revision: int, doc: Any) -> Assignment:
    """An ``Assignment`` for ``key``; a bad document gives ``spec=None`` and the reason."""
    try:
        if not isinstance(doc, dict):
            raise SpecError("assignment: must be a JSON object")
        return Assignment(key, revision, parse_spec(doc.get("spec")), stopping=_stopping(doc.get("stopping")))
    except SpecError as exc:
        stopping = _stopping(doc.get("stopping")) if isinstance(doc, dict) else ""
        return Assignment(key, revision, None, str(exc), stopping=stopping)


def _stopping(value: Any) -> str:
    """Why the task is to stop: ``stopping.reason``; any other present value still means stop
    (a stop request is never lost to a malformed field)."""
    if value is None or value is False:
        return ""
    reason = value.get("reason") if isinstance(value, dict) else None
    return reason if isinstance(reason, str) and reason else "stopping"
