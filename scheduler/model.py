"""Frozen value types of the scheduler: the cluster, jobs, tenants, decisions and events.

Everything here is a value: hashable, immutable, cheap to compare. The mutable view the
scheduler keeps (free GPUs per node, running jobs, reservations) lives in ``state.py`` and is
built only from the events at the bottom of this module, so the daemon can rebuild it from a
kvraft watch and the simulator can drive it from a trace.

The topology tree, tightest level first::

    ISLAND (GPUs joined by NVLink/NVSwitch) -> NODE -> RACK (ToR) -> SPINE -> CLUSTER

A job is a gang of ``tasks`` tasks with ``gpus_per_task`` GPUs each. It is placed whole or not
at all. Its ``topology`` requirement names the widest level the gang may span: ``REQUIRED``
means "never wider", ``PREFERRED`` means "as tight as possible, wider if needed".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum, IntEnum

__all__ = [
    "Binding",
    "BindFailed",
    "Event",
    "Job",
    "JobAdded",
    "JobBound",
    "JobDeleted",
    "JobEvicted",
    "JobFinished",
    "JobUpdated",
    "Level",
    "Mode",
    "Node",
    "NodeAdded",
    "NodeDeleted",
    "NodeUpdated",
    "PendingReason",
    "Placement",
    "Preemption",
    "Resize",
    "TaskAssignment",
    "Tenant",
    "TenantDeleted",
    "TenantUpdated",
    "Topology",
]


class Level(IntEnum):
    """A level of the topology tree; a smaller value is a tighter (faster) domain."""

    ISLAND = 0
    NODE = 1
    RACK = 2
    SPINE = 3
    CLUSTER = 4


class Mode(Enum):
    REQUIRED = "required"
    PREFERRED = "preferred"


@dataclass(frozen=True, slots=True)
class Topology:
    """A job's topology requirement.

    ``level``: the widest domain the whole gang may span (``REQUIRED``) or should span
    (``PREFERRED``). ``fewest_nodes``: the gang must use the fewest nodes its size allows
    (whole nodes, like Slurm ``--exclusive`` packing); off by default because filling the
    holes of partly used nodes in the same rack costs nothing under the slowdown model.
    """

    level: Level
    mode: Mode = Mode.REQUIRED
    fewest_nodes: bool = False


@dataclass(frozen=True, slots=True)
class Node:
    """A machine as its agent reports it.

    ``islands`` lists the sizes of the NVLink islands (GPU indices are assigned to islands in
    order); empty means one island holding every GPU (an NVSwitch box). ``schedulable`` is
    False when cordoned; ``healthy`` is False when the agent's heartbeat lapsed.
    """

    name: str
    gpus: int = 0
    gpu_type: str = ""
    cpu_milli: int = 0
    memory_mib: int = 0
    rack: str = "rack-0"
    spine: str = "spine-0"
    islands: tuple[int, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    healthy: bool = True
    schedulable: bool = True

    def __post_init__(self) -> None:
        if self.gpus < 0 or self.cpu_milli < 0 or self.memory_mib < 0:
            raise ValueError(f"node {self.name}: negative capacity")
        if self.islands and sum(self.islands) != self.gpus:
            raise ValueError(f"node {self.name}: islands {self.islands} do not sum to {self.gpus}")

    def island_masks(self) -> tuple[int, ...]:
        """Bit masks of the GPU indices in each island (bit i = GPU i)."""
        sizes = self.islands or ((self.gpus,) if self.gpus else ())
        masks: list[int] = []
        first = 0
        for size in sizes:
            masks.append(((1 << size) - 1) << first)
            first += size
        return tuple(masks)

    def label(self, key: str) -> str | None:
        for k, v in self.labels:
            if k == key:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Job:
    """A gang of ``tasks`` x ``gpus_per_task`` GPUs, placed all or nothing. An elastic job
    (``min_tasks`` below ``tasks``, Volcano's ``minAvailable``, Slurm's ``--nodes=min-max``)
    starts with as many tasks as fit, at least ``min_tasks``, and keeps that size for the run;
    the ``elastic`` plugin restarts it larger when room frees (``Resize``).

    ``est_runtime_s`` is an estimate (user or history based) used by shortest-job-first and by
    backfill; ``max_runtime_s`` is a hard limit, used as the estimate when no estimate is set.
    ``checkpoint_interval_s`` None means the job checkpoints when it is preempted (suspend and
    resume), so preempting it loses only the restart overhead.
    """

    job_id: str
    tenant: str = "default"
    tasks: int = 1
    gpus_per_task: int = 1
    cpu_milli_per_task: int = 0
    memory_mib_per_task: int = 0
    priority: int = 0
    gpu_type: str | None = None
    topology: Topology | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    est_runtime_s: float | None = None
    max_runtime_s: float | None = None
    preemptible: bool = True
    checkpoint_interval_s: float | None = None
    submit_s: float = 0.0
    min_tasks: int | None = None  # elastic (Volcano's minAvailable < replicas): starts with min_tasks..tasks

    def __post_init__(self) -> None:
        if self.tasks < 1:
            raise ValueError(f"job {self.job_id}: tasks must be >= 1")
        if self.min_tasks is not None and not 1 <= self.min_tasks <= self.tasks:
            raise ValueError(f"job {self.job_id}: min_tasks must be between 1 and tasks")
        if self.gpus_per_task < 0 or self.cpu_milli_per_task < 0 or self.memory_mib_per_task < 0:
            raise ValueError(f"job {self.job_id}: negative request")

    @property
    def gpus(self) -> int:
        return self.tasks * self.gpus_per_task

    @property
    def elastic(self) -> bool:
        return self.min_tasks is not None and self.min_tasks < self.tasks

    def sizes(self, tasks: int) -> bool:
        """Whether a run of ``tasks`` tasks is one of this job's sizes."""
        return tasks == self.tasks or (self.elastic and (self.min_tasks or 1) <= tasks <= self.tasks)

    def sized(self, tasks: int) -> Job:
        """This job as run with ``tasks`` tasks (an elastic job's run below its full size)."""
        return replace(self, tasks=tasks, min_tasks=None)

    @property
    def runtime_hint_s(self) -> float | None:
        """The best guess of the run time: the estimate, else the limit, else None."""
        return self.est_runtime_s if self.est_runtime_s is not None else self.max_runtime_s


@dataclass(frozen=True, slots=True)
class Tenant:
    """A queue with a guaranteed (nominal) number of GPUs.

    ``borrow_limit_gpus``: how far above nominal the tenant may go by borrowing the unused
    nominal quota of other tenants; None means no limit other than what is unused, 0 means no
    borrowing. ``job_name_prefix`` and ``max_priority``: what the tenant admits
    (``scheduler.admission``); None admits any name and any priority. ``run_as``: the
    ``(uid, gid)`` its tasks run as on the nodes (None: root), as a Slurm job runs as its user.
    """

    name: str
    nominal_gpus: int
    borrow_limit_gpus: int | None = None
    job_name_prefix: str | None = None
    max_priority: int | None = None
    run_as: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class TaskAssignment:
    task: int
    node: str
    gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where every task of a gang runs. Always complete: one assignment per task."""

    tasks: tuple[TaskAssignment, ...]

    def nodes(self) -> tuple[str, ...]:
        """Distinct node names in first-use order."""
        return tuple(dict.fromkeys(t.node for t in self.tasks))

    def gpus_by_node(self) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        for t in self.tasks:
            out[t.node] = out.get(t.node, ()) + t.gpus
        return out


@dataclass(frozen=True, slots=True)
class Binding:
    """Decision: bind ``job_id`` to ``placement``. The state already counts it (assumed)."""

    job_id: str
    placement: Placement
    at_s: float


@dataclass(frozen=True, slots=True)
class Preemption:
    """Decision: evict the whole gang ``victim_id`` so that ``preemptor_id`` can run.
    ``migration``: the victim is moved (defragmentation: it holds GPUs elsewhere to restart
    on at once), not pushed back into the queue."""

    victim_id: str
    preemptor_id: str
    gpu_hours_lost: float
    reason: str
    migration: bool = False


@dataclass(frozen=True, slots=True)
class Resize:
    """Decision: restart the running elastic job ``job_id`` with ``to_tasks`` tasks instead of
    ``from_tasks`` (grow on free capacity). The new placement's GPUs are held for it (a
    ``resize`` reservation) while its run stops; handle(JobEvicted) when it has stopped, and the
    next pass binds it at the larger size."""

    job_id: str
    from_tasks: int
    to_tasks: int
    at_s: float


@dataclass(frozen=True, slots=True)
class PendingReason:
    """Why a job waits, for users: ``code`` is a Status code name, ``plugin`` who said so."""

    job_id: str
    code: str
    plugin: str
    message: str


# ---------------------------------------------------------------------------------------------
# Events: the only way state changes. The daemon derives them from kvraft watch events; the
# simulator from the trace. Every event carries a ``stimulus_id`` that flows into decisions.


@dataclass(frozen=True, slots=True)
class NodeAdded:
    node: Node
    stimulus_id: str = ""


@dataclass(frozen=True, slots=True)
class NodeUpdated:
    node: Node
    stimulus_id: str = ""


@dataclass(frozen=True, slots=True)
class NodeDeleted:
    name: str
    stimulus_id: str = ""


@dataclass(frozen=True, slots=True)
class JobAdded:
    """A job appeared. ``placement``/``bound_at_s`` are set when it is already running (a
    restarted scheduler rebuilding its state); ``attained_gpu_s`` is service already received."""

    job: Job
    placement: Placement | None = None
    bound_at_s: float | None = None
    attained_gpu_s: float = 0.0
    stimulus_id: str = ""


@dataclass(frozen=True, slots=True)
class JobUpdated:
    """The spec changed (priority, estimate, ...). Resource shape changes of a running job
    are not allowed and raise."""

    job: Job
    stimulus_id: str = ""


@dataclass(frozen=True, slots=True)
class JobDeleted:
    job_id: str
    stimulus_id: str = ""


@dataclass(frozen=True, slots=True)
class JobBound:
    """The store confirms a binding (ours, or one made elsewhere)."""

    job_id: str
    placement: Placement
    at_s: float
    stimulus_id: str = ""


@dataclass(frozen=True, slots=True)
class BindFailed:
    """Writing our binding failed (revision conflict): forget the assumed placement."""

    job_id: str
    at_s: float
    stimulus_id: str = ""


@dataclass(frozen=True, slots=True)
class JobFinished:
    job_id: str
    at_s: float
    stimulus_id: str = ""


@dataclass(frozen=True, slots=True)
class JobEvicted:
    """The gang stopped after a preemption (or a node failure); it returns to the queue."""

    job_id: str
    at_s: float
    stimulus_id: str = ""


@dataclass(frozen=True, slots=True)
class TenantUpdated:
    tenant: Tenant
    stimulus_id: str = ""


@dataclass(frozen=True, slots=True)
class TenantDeleted:
    name: str
    stimulus_id: str = ""


Event = (
    NodeAdded
    | NodeUpdated
    | NodeDeleted
    | JobAdded
    | JobUpdated
    | JobDeleted
    | JobBound
    | BindFailed
    | JobFinished
    | JobEvicted
    | TenantUpdated
    | TenantDeleted
)

