"""The runtime interface every driver implements (modelled on Nomad's DriverPlugin and the
OCI operations), and the values that cross it.

Contract (every method is a coroutine on the agent's event loop unless noted; none may block
the loop for long -- subprocesses and file scans are short, anything slow runs in a thread):

- ``start(run)``: start attempt ``run.attempt`` of task ``run.key``. Persists its state
  (``handle.json``) *before* anything is started, so a crash at any point leaves a trace
  ``observe`` can resolve. Returns when the task runs or has failed to start (that failure is
  then an ``EXITED`` attempt with reason ``StartError``, never an exception). Raises only for
  agent-side bugs or a broken runtime (``RuntimeUnavailable``).
- ``observe()``: every attempt this agent's runtime holds, as ``reconcile.Observed`` values.
  This is also ``RecoverTask``: a task whose supervisor died is killed here and reported
  ``LOST``; an exit recorded while the agent was down is reported ``EXITED`` with its code.
- ``stop(key, attempt, grace_s)``: SIGTERM now, SIGKILL at ``now + grace_s`` (the deadline is
  persisted, so the countdown survives an agent restart). Idempotent; returns at once.
- ``cleanup(key, attempt)``: release the container, cgroups, mounts, bundle; keep logs.
- ``remove(key, attempt)``: cleanup, then delete the attempt's state and logs.
- ``sweep(known)``: kill and delete containers/cgroups in this agent's namespace that belong
  to no attempt directory (orphans from crashes); returns what it removed.
- ``log_files(key, attempt)``: the attempt's log files, oldest first (CRI format).
- ``stats(key, attempt)``, ``exec(key, attempt, argv, timeout_s)``.
- ``ping()``: raise ``RuntimeUnavailable`` when the runtime cannot run tasks now (dockerd
  down, the runc binary gone): kubelet's runtime status check. The agent reports the node
  NotReady meanwhile ("container runtime is down: ...").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.reconcile import Observed
from agent.spec import TaskSpec

__all__ = [
    "Capabilities",
    "DeviceGrant",
    "ExecResult",
    "GpuDevice",
    "Runtime",
    "RuntimeUnavailable",
    "TaskRun",
    "handle_gpus",
]


def handle_gpus(handle: dict[str, Any]) -> tuple[int, ...]:
    """The GPU indices an attempt's ``handle.json`` says it was given (its spec's); () when the
    handle predates the field or does not say."""
    spec = handle.get("spec")
    resources = spec.get("resources") if isinstance(spec, dict) else None
    gpus = resources.get("gpus") if isinstance(resources, dict) else None
    if not isinstance(gpus, list):
        return ()
    return tuple(g for g in gpus if isinstance(g, int) and not isinstance(g, bool))


class RuntimeUnavailable(RuntimeError):
    """The runtime cannot work on this machine (binary missing, daemon down)."""


@dataclass(frozen=True, slots=True)
class GpuDevice:
    index: int
    uuid: str
    path: str  # host device node, e.g. /dev/nvidia0 (a fake inventory may map it to /dev/null)
    major: int
    minor: int


@dataclass(frozen=True, slots=True)
class DeviceGrant:
    """What the node gives one task: its GPUs, the shared control nodes, RDMA devices."""

    gpus: tuple[GpuDevice, ...] = ()
    control: tuple[tuple[str, int, int], ...] = ()  # (path, major, minor): nvidiactl, nvidia-uvm...
    rdma: tuple[tuple[str, int, int], ...] = ()  # /dev/infiniband/uverbsN, rdma_cm

    def env(self) -> dict[str, str]:
        if not self.gpus:
            return {}
        uuids = ",".join(g.uuid for g in self.gpus)
        return {"NVIDIA_VISIBLE_DEVICES": uuids, "CUDA_VISIBLE_DEVICES": uuids}


@dataclass(frozen=True, slots=True)
class TaskRun:
    key: str  # "<job>/<task>"
    attempt: int
    revision: int
    spec: TaskSpec
    devices: DeviceGrant = field(default_factory=DeviceGrant)

    @property
    def job(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def task(self) -> str:
        return self.key.split("/", 1)[1]


@dataclass(frozen=True, slots=True)
class Capabilities:
    isolation: str  # "container" or "none"
    limits: bool  # memory/cpu/pids/cpuset enforced
    devices: bool  # device nodes injected and fenced
    network_namespaces: bool
    oom_detect: bool
    reattach: bool

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


class Runtime(Protocol):
    name: str

    def capabilities(self) -> Capabilities: ...

    async def start(self, run: TaskRun) -> None: ...

    async def observe(self) -> list[Observed]: ...

    async def stop(self, key: str, attempt: int, grace_s: float) -> None: ...

    async def cleanup(self, key: str, attempt: int) -> None: ...

    async def remove(self, key: str, attempt: int) -> None: ...

    async def sweep(self) -> list[str]: ...

    def log_files(self, key: str, attempt: int) -> list[Path]: ...

    async def stats(self, key: str, attempt: int) -> dict[str, Any]: ...

    async def exec(self, key: str, attempt: int, argv: list[str], timeout_s: float) -> ExecResult: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...
