"""Shipped test helpers: fluent builders for nodes, jobs and clusters (like Kubernetes'
``st.MakePod()...Obj()``), and a tiny harness to run one pass.

    node = make_node("n1").gpus(8).rack("r1").islands(4, 4).obj()
    job = make_job("j1").gang(2, 8).priority(5).rack_required().obj()
    sched = cluster(make_nodes(4, gpus=8, racks=2)).scheduler(profile("default"))
"""

from __future__ import annotations

import random
from dataclasses import replace

from scheduler.cycle import CycleResult, Scheduler
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.registry import PluginSpec, Profile
from scheduler.model import (
    Job,
    JobAdded,
    Level,
    Mode,
    Node,
    NodeAdded,
    Placement,
    TaskAssignment,
    Tenant,
    TenantUpdated,
    Topology,
)
from scheduler.state import ClusterState, JobInfo

__all__ = [
    "ClusterBuilder",
    "JobBuilder",
    "NodeBuilder",
    "cluster",
    "cycle_state",
    "make_job",
    "make_node",
    "make_nodes",
    "plugin_of",
    "plugin_profile",
    "run_pass",
]


class NodeBuilder:
    def __init__(self, name: str) -> None:
        self._node = Node(name=name, gpus=8, cpu_milli=64_000, memory_mib=512 * 1024)

    def gpus(self, count: int, gpu_type: str | None = None) -> NodeBuilder:
        self._node = replace(self._node, gpus=count, islands=(),
                             gpu_type=self._node.gpu_type if gpu_type is None else gpu_type)
        return self

    def gpu_type(self, gpu_type: str) -> NodeBuilder:
        self._node = replace(self._node, gpu_type=gpu_type)
        return self

    def cpu(self, milli: int) -> NodeBuilder:
        self._node = replace(self._node, cpu_milli=milli)
        return self

    def memory(self, mib: int) -> NodeBuilder:
        self._node = replace(self._node, memory_mib=mib)
        return self

    def rack(self, rack: str, spine: str = "spine-0") -> NodeBuilder:
        self._node = replace(self._node, rack=rack, spine=spine)
        return self

    def islands(self, *sizes: int) -> NodeBuilder:
        self._node = replace(self._node, islands=tuple(sizes))
        return self

    def label(self, key: str, value: str) -> NodeBuilder:
        self._node = replace(self._node, labels=self._node.labels + ((key, value),))
        return self

    def unhealthy(self) -> NodeBuilder:
        self._node = replace(self._node, healthy=False)
        return self

    def cordoned(self) -> NodeBuilder:
        self._node = replace(self._node, schedulable=False)
        return self

    def obj(self) -> Node:
        return self._node


class JobBuilder:
    def __init__(self, job_id: str) -> None:
        self._job = Job(job_id=job_id)

    def gang(self, tasks: int, gpus_per_task: int = 1) -> JobBuilder:
        self._job = replace(self._job, tasks=tasks, gpus_per_task=gpus_per_task)
        return self

    def gpus(self, count: int) -> JobBuilder:
        """``count`` GPUs as one-GPU tasks (one rank per GPU)."""
        return self.gang(count, 1)

    def cpu(self, milli_per_task: int) -> JobBuilder:
        self._job = replace(self._job, cpu_milli_per_task=milli_per_task)
        return self

    def memory(self, mib_per_task: int) -> JobBuilder:
        self._job = replace(self._job, memory_mib_per_task=mib_per_task)
        return self

    def tenant(self, tenant: str) -> JobBuilder:
        self._job = replace(self._job, tenant=tenant)
        return self

    def priority(self, priority: int) -> JobBuilder:
        self._job = replace(self._job, priority=priority)
        return self

    def gpu_type(self, gpu_type: str) -> JobBuilder:
        self._job = replace(self._job, gpu_type=gpu_type)
        return self

    def topology(self, level: Level, mode: Mode = Mode.REQUIRED, fewest_nodes: bool = False) -> JobBuilder:
        self._job = replace(self._job, topology=Topology(level, mode, fewest_nodes))
        return self

    def node_required(self) -> JobBuilder:
        return self.topology(Level.NODE)

    def rack_required(self) -> JobBuilder:
        return self.topology(Level.RACK)

    def selector(self, key: str, value: str) -> JobBuilder:
        self._job = replace(self._job, node_selector=self._job.node_selector + ((key, value),))
        return self

    def estimate(self, seconds: float) -> JobBuilder:
        self._job = replace(self._job, est_runtime_s=seconds)
        return self

    def submitted(self, at_s: float) -> JobBuilder:
        self._job = replace(self._job, submit_s=at_s)
        return self

    def not_preemptible(self) -> JobBuilder:
        self._job = replace(self._job, preemptible=False)
        return self

    def obj(self) -> Job:
        return self._job

    def info(self) -> JobInfo:
        return JobInfo(job=self._job, pending_since_s=self._job.submit_s)


def make_node(name: str) -> NodeBuilder:
    return NodeBuilder(name)


def make_job(job_id: str) -> JobBuilder:
    return JobBuilder(job_id)


def make_nodes(count: int, *, gpus: int = 8, racks: int = 1, gpu_type: str = "", prefix: str = "n") -> list[Node]:
    """``count`` identical nodes spread over ``racks`` racks in contiguous blocks."""
    per_rack = -(-count // racks)
    return [
        make_node(f"{prefix}{i}").gpus(gpus, gpu_type).rack(f"rack-{i // per_rack}").obj()
        for i in range(count)
    ]


class ClusterBuilder:
    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = list(nodes)
        self.tenants: list[Tenant] = []
        self.jobs: list[JobAdded] = []
        self._used: dict[str, int] = {}

    def running(
        self, job: Job | JobBuilder, on: dict[str, int], bound_at_s: float = 0.0, attained_gpu_s: float = 0.0
    ) -> ClusterBuilder:
        """A gang already running with ``on`` = node -> tasks (lowest free GPU indices)."""
        spec = job.obj() if isinstance(job, JobBuilder) else job
        if sum(on.values()) != spec.tasks:
            spec = replace(spec, tasks=sum(on.values()))
        tasks: list[TaskAssignment] = []
        for name, count in on.items():
            for _ in range(count):
                first = self._used.get(name, 0)
                gpus = tuple(range(first, first + spec.gpus_per_task))
                self._used[name] = first + spec.gpus_per_task
                tasks.append(TaskAssignment(len(tasks), name, gpus))
        self.jobs.append(JobAdded(spec, Placement(tuple(tasks)), bound_at_s, attained_gpu_s))
        return self

    def tenant(self, name: str, nominal_gpus: int, borrow_limit_gpus: int | None = None) -> ClusterBuilder:
        self.tenants.append(Tenant(name, nominal_gpus, borrow_limit_gpus))
        return self

    def state(self) -> ClusterState:
        state = ClusterState()
        for node in self.nodes:
            state.handle(NodeAdded(node))
        for tenant in self.tenants:
            state.handle(TenantUpdated(tenant))
        for added in self.jobs:
            state.handle(added)
        return state

    def scheduler(self, profile: Profile, seed: int = 0, jobs: list[Job] | None = None) -> Scheduler:
        sched = Scheduler(profile, seed=seed)
        sched.handle(*(NodeAdded(n) for n in self.nodes), *(TenantUpdated(t) for t in self.tenants))
        sched.handle(*self.jobs)
        if jobs:
            sched.handle(*(JobAdded(j) for j in jobs))
        return sched


def cluster(nodes: list[Node]) -> ClusterBuilder:
    return ClusterBuilder(nodes)


def cycle_state(state: ClusterState, info: JobInfo, now_s: float = 0.0, seed: int = 0) -> CycleState:
    return CycleState(state, now_s, random.Random(seed), info)


def plugin_profile(*names: str, queue_sort: str = "priority", **args: dict[str, object]) -> Profile:
    """A profile with ``queue_sort``, resources and the named plugins (args by plugin name)."""
    specs = [PluginSpec(queue_sort, args=args.get(queue_sort, {}))]
    for name in names:
        specs.append(PluginSpec(name, args=args.get(name, {})))
    if "resources" not in names:
        specs.append(PluginSpec("resources", args={"scoring": "none"}))
    return Profile("test", tuple(specs))


def run_pass(sched: Scheduler, now_s: float = 0.0) -> CycleResult:
    return sched.schedule(now_s)


def plugin_of(sched: Scheduler, name: str) -> object:
    """The instance of plugin ``name`` in a scheduler's framework."""
    for plugin in sched.framework.plugins:
        if getattr(plugin, "name", None) == name:
            return plugin
    raise KeyError(f"plugin {name!r} is not in profile {sched.profile.name!r}")
