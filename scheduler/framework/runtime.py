"""``Framework``: runs a profile's plugins to place one job (one gang) at a time.

``attempt(info, now_s)`` runs PreFilter, the placement search, Permit and (on failure)
PostFilter, and returns an ``Attempt`` value. It never mutates the cluster state: the caller
(``scheduler.cycle.Scheduler``) assumes the binding, records preemptions and reservations.

Placement search, for each level the topology plugin allows (tightest first):

- NODE (or ISLAND): the whole gang on one node. Candidates come from the free index,
  tightest first, so a profile may stop after ``nodes_to_score`` feasible nodes; the best
  total Score wins (ties broken by the seeded RNG).
- RACK / SPINE / CLUSTER: domains whose upper-bound capacity (rack histograms) holds the gang
  are ranked by ScoreDomain; in that order, the first domain whose nodes pass Filter and
  Capacity with enough room gets the gang, its tasks given out by Score.

Failures are cached per pass by (job shape, cycle-state signature, state epoch): capacity only
shrinks inside an epoch, so an identical job that failed fails again.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import (
    CapacityPlugin,
    Domain,
    EnqueueExtensions,
    FilterPlugin,
    FinishPlugin,
    ForgetPlugin,
    PassPlugin,
    PermitPlugin,
    PostFilterPlugin,
    PostFilterResult,
    PreemptGuardPlugin,
    PreFilterPlugin,
    QueueingHintPlugin,
    QueueSortPlugin,
    ResizePlugin,
    ScoreDomainPlugin,
    ScorePlugin,
)
from scheduler.framework.placement import assign_fewest_nodes, assign_greedy, build_placement
from scheduler.framework.registry import Profile, Registry
from scheduler.framework.status import SUCCESS, Code, Status
from scheduler.model import Level, Placement
from scheduler.state import ClusterEvent, ClusterState, JobInfo, NodeInfo, RackInfo

__all__ = ["Attempt", "Framework"]

ALL_EVENTS = frozenset(ClusterEvent)
_CAPACITY_EVENTS = frozenset({ClusterEvent.RESOURCES_FREED, ClusterEvent.NODE_ADDED})


@dataclass(frozen=True, slots=True)
class Attempt:
    status: Status
    placement: Placement | None = None
    post: PostFilterResult | None = None
    # The PostFilter plugins ran and none could help (preemption found no victims): the job
    # also waits for their registered events (``Framework.post_hints``).
    post_failed: bool = False


class Framework:
    def __init__(self, profile: Profile, registry: Registry, state: ClusterState, rng: random.Random):
        self.profile = profile
        self.state = state
        self.rng = rng
        self.plugins: list[object] = []
        self.pre_filters: list[PreFilterPlugin] = []
        self.filters: list[FilterPlugin] = []
        self.capacities: list[CapacityPlugin] = []
        self.post_filters: list[PostFilterPlugin] = []
        self.scores: list[tuple[ScorePlugin, int]] = []
        self.domain_scores: list[tuple[ScoreDomainPlugin, int]] = []
        self.permits: list[PermitPlugin] = []
        self.pass_plugins: list[PassPlugin] = []
        self.finish_plugins: list[FinishPlugin] = []
        self.forget_plugins: list[ForgetPlugin] = []
        self.resizers: list[ResizePlugin] = []
        self.hints: dict[str, frozenset[ClusterEvent]] = {}
        self.queueing_hints: dict[str, QueueingHintPlugin] = {}
        sorters: list[QueueSortPlugin] = []
        for spec in profile.plugins:
            plugin = registry.new(spec.name, spec.args, self)
            self.plugins.append(plugin)
            if isinstance(plugin, QueueSortPlugin):
                sorters.append(plugin)
            if isinstance(plugin, PreFilterPlugin):
                self.pre_filters.append(plugin)
            if isinstance(plugin, FilterPlugin):
                self.filters.append(plugin)
            if isinstance(plugin, CapacityPlugin):
                self.capacities.append(plugin)
            if isinstance(plugin, PostFilterPlugin):
                self.post_filters.append(plugin)
            if isinstance(plugin, ScorePlugin):
                self.scores.append((plugin, spec.weight))
            if isinstance(plugin, ScoreDomainPlugin):
                self.domain_scores.append((plugin, spec.weight))
            if isinstance(plugin, PermitPlugin):
                self.permits.append(plugin)
            if isinstance(plugin, PassPlugin):
                self.pass_plugins.append(plugin)
            if isinstance(plugin, FinishPlugin):
                self.finish_plugins.append(plugin)
            if isinstance(plugin, ForgetPlugin):
                self.forget_plugins.append(plugin)
            if isinstance(plugin, ResizePlugin):
                self.resizers.append(plugin)
            if isinstance(plugin, EnqueueExtensions):
                self.hints[plugin.name] = plugin.events_to_register()
            if isinstance(plugin, QueueingHintPlugin):
                self.queueing_hints[plugin.name] = plugin
        if len(sorters) != 1:
            raise ValueError(f"profile {profile.name}: need exactly one QueueSort plugin, got {len(sorters)}")
        if not self.capacities:
            raise ValueError(f"profile {profile.name}: need a Capacity plugin (resources)")
        writers = [i for i, p in enumerate(self.pre_filters) if getattr(p, "writes_levels", False)]
        if writers and writers[0] != 0 and self.post_filters:
            # PreFilter stops at the first rejection, and PostFilters read the levels: a plugin
            # rejecting before the levels are written would make preemption search wrong domains.
            raise ValueError(
                f"profile {profile.name}: {self.pre_filters[writers[0]].name} writes the placement "
                "levels and must be the first PreFilter plugin when PostFilter plugins run")
        self.queue_sort = sorters[0]
        self._guard = self.queue_sort if isinstance(self.queue_sort, PreemptGuardPlugin) else None
        # Events that may let a failed PostFilter succeed (preemption: a running gang's rank
        # fell below the waiting job's): a job whose PostFilters failed waits for these too.
        self.post_hints: frozenset[ClusterEvent] = frozenset().union(
            *(self.hints.get(p.name, frozenset()) for p in self.post_filters))
        self._failures: dict[tuple[object, ...], tuple[int, Status]] = {}
        self._domains: dict[Level, list[Domain]] = {}
        self._domains_key: tuple[int, int] = (-1, -1)
        self._reasons: Counter[str] = Counter()

    # --- Handle -----------------------------------------------------------------------------

    def rank(self, info: JobInfo, now_s: float) -> tuple[float, ...]:
        return self.queue_sort.rank(info, now_s)

    def may_evict(self, preemptor: JobInfo, victim: JobInfo, now_s: float) -> bool:
        return self._guard is None or self._guard.may_evict(preemptor, victim, now_s)

    def plugin(self, name: str) -> object | None:
        for plugin in self.plugins:
            if getattr(plugin, "name", None) == name:
                return plugin
        return None

    def domains(self, level: Level) -> list[Domain]:
        key = (len(self.state.racks), len(self.state.nodes))
        if key != self._domains_key:
            self._domains.clear()
            self._domains_key = key
        cached = self._domains.get(level)
        if cached is not None:
            return cached
        racks = sorted(self.state.racks.values(), key=lambda r: r.name)
        if level <= Level.RACK:
            out = [Domain(Level.RACK, r.name, (r,)) for r in racks]
        elif level == Level.SPINE:
            spines: dict[str, list[RackInfo]] = {}
            for r in racks:
                spines.setdefault(r.spine, []).append(r)
            out = [Domain(Level.SPINE, s, tuple(rs)) for s, rs in sorted(spines.items())]
        else:
            out = [Domain(Level.CLUSTER, "cluster", tuple(racks))]
        self._domains[level] = out
        return out

    def fit_nodes(self, cs: CycleState, info: JobInfo, nodes: Sequence[NodeInfo]) -> list[tuple[NodeInfo, int]]:
        feasible: list[tuple[NodeInfo, int]] = []
        for node in nodes:
            cap = self._fit(cs, info, node)
            if cap > 0:
                feasible.append((node, cap))
        return feasible

    def assign(self, cs: CycleState, info: JobInfo, feasible: Sequence[tuple[NodeInfo, int]]) -> dict[str, int] | None:
        job = info.job
        scores = self.scores

        def score(node: NodeInfo, here: int) -> float:
            return sum(w * p.score(cs, info, node, here) for p, w in scores)

        if cs.fewest_nodes:
            largest = max(self.state.largest_node_gpus(job.gpu_type), 1)
            max_nodes = -(-job.gpus // largest) if job.gpus_per_task else 1
            return assign_fewest_nodes(job.tasks, max_nodes, feasible, score)
        ties = [cs.rng.random() for _ in feasible]
        return assign_greedy(job.tasks, feasible, score, ties)

    # --- one job ----------------------------------------------------------------------------

    def queueing_hint(self, info: JobInfo, plugin: str, events: set[ClusterEvent]) -> bool:
        """May ``events`` let ``info``, rejected by ``plugin``, pass now? Events the rejecting
        plugin registered are its to judge; the rest came from the PostFilter plugins'
        registrations (the job waits for them when its preemption failed), each judged by
        the PostFilter plugin that registered it."""
        own = self.hints.get(plugin)
        if own is None or events & own:
            return self._plugin_hint(info, plugin, events)
        for post in self.post_filters:
            theirs = events & self.hints.get(post.name, frozenset())
            if theirs and self._plugin_hint(info, post.name, set(theirs)):
                return True
        return False

    def _plugin_hint(self, info: JobInfo, plugin: str, events: set[ClusterEvent]) -> bool:
        hinter = self.queueing_hints.get(plugin)
        if hinter is not None:
            return hinter.queueing_hint(self.state, info, events)
        if plugin == "framework" and not events - _CAPACITY_EVENTS:
            # The placement search failed: freed GPUs help only once enough are free in total.
            job = info.job
            return not job.gpus_per_task or self.state.free_gpus(job.gpu_type) >= job.gpus
        return True

    def job_finished(self, info: JobInfo, at_s: float) -> None:
        """A job finished: tell the plugins that learn from finished jobs (before the state
        drops its record)."""
        for plugin in self.finish_plugins:
            plugin.job_finished(info, at_s)

    def job_deleted(self, info: JobInfo) -> None:
        """A job was deleted unfinished: the plugins that keep per-job state drop it."""
        for plugin in self.forget_plugins:
            plugin.job_deleted(info)

    def begin_pass(self, now_s: float) -> None:
        self._failures.clear()
        for plugin in self.pass_plugins:
            plugin.begin_pass(self.state, now_s)

    def attempt(self, info: JobInfo, now_s: float, *, post: bool = True) -> Attempt:
        """Try to place ``info``'s job; on failure run the PostFilter plugins (preemption,
        reservations) unless ``post`` is False (an elastic job's larger sizes: only its
        smallest may preempt or reserve)."""
        cs = CycleState(self.state, now_s, self.rng, info, post)
        for i, plugin in enumerate(self.pre_filters):
            status = plugin.pre_filter(cs, info)
            if not status.ok:
                return self._post_filter(cs, info, self._strongest(cs, info, status, i + 1))
        job = info.job
        key = (
            job.tasks, job.gpus_per_task, job.cpu_milli_per_task, job.memory_mib_per_task,
            job.gpu_type, job.node_selector, cs.levels, cs.fewest_nodes, tuple(cs.signature),
            cs.ignore_holds, job.job_id in self.state.reservations and job.job_id,
        )
        cached = self._failures.get(key)
        if cached is not None and cached[0] == self.state.epoch:
            return self._post_filter(cs, info, cached[1])
        placement, status = self._place(cs, info)
        if placement is None:
            self._failures[key] = (self.state.epoch, status)
            return self._post_filter(cs, info, status)
        for permit in self.permits:
            status = permit.permit(cs, info, placement)
            if not status.ok:
                return self._post_filter(cs, info, status)
        return Attempt(SUCCESS, placement)

    def _strongest(self, cs: CycleState, info: JobInfo, status: Status, rest: int) -> Status:
        """A rejection that preemption may help is final only if no later PreFilter says
        preemption cannot help: evicting gangs for a job its quota blocks anyway would leave
        their GPUs held for a job that cannot start."""
        if not status.preemption_may_help:
            return status
        for plugin in self.pre_filters[rest:]:
            other = plugin.pre_filter(cs, info)
            if not other.ok and not other.preemption_may_help:
                return other
        return status

    def _post_filter(self, cs: CycleState, info: JobInfo, status: Status) -> Attempt:
        if status.code in (Code.INFEASIBLE, Code.WAIT) or not cs.post:
            return Attempt(status)
        for plugin in self.post_filters:
            result = plugin.post_filter(cs, info, status)
            if result.status.ok:
                return Attempt(status, post=result)
        return Attempt(status, post_failed=bool(self.post_filters))

    # --- placement --------------------------------------------------------------------------

    def _fit(self, cs: CycleState, info: JobInfo, node: NodeInfo) -> int:
        for plugin in self.filters:
            status = plugin.filter(cs, info, node)
            if not status.ok:
                self._reasons[status.message] += 1
                return 0
        cap = 1 << 30
        if node.held_gpus:
            # GPUs held for reservations (backfill, preemption nominations) are not free for
            # others, unless the job may backfill into them. Enforced here, like Kubernetes
            # accounting for nominated pods, so holds work whatever plugins a profile runs.
            # A job may use its own holds and those that wait for it to end (its victims'
            # return holds: they start when it ends).
            job_id, ignore, reservations = info.job.job_id, cs.ignore_holds, self.state.reservations
            held = sum(g for owner, g in node.holds.items()
                       if owner != job_id and owner not in ignore
                       and getattr(reservations.get(owner), "after_job", None) != job_id)
            if held and info.job.gpus_per_task:
                cap = (node.free_gpus - min(held, node.free_gpus)) // info.job.gpus_per_task
                if cap <= 0:
                    self._reasons["GPUs held for a reservation"] += 1
                    return 0
        for capacity in self.capacities:
            c = capacity.capacity(cs, info, node)
            if c < cap:
                cap = c
                if cap <= 0:
                    self._reasons["no room for a task"] += 1
                    return 0
        return cap

    def _place(self, cs: CycleState, info: JobInfo) -> tuple[Placement | None, Status]:
        self._reasons.clear()
        job = info.job
        checked = 0
        for level in cs.levels:
            if level <= Level.NODE:
                placement, n = self._place_in_one_node(cs, info)
                checked += n
                if placement is not None:
                    return placement, SUCCESS
                continue
            gpus_per_task, gpu_type = job.gpus_per_task, job.gpu_type
            ranked: list[tuple[float, float, Domain]] = []
            for domain in self.domains(level):
                fit = domain.task_capacity(gpus_per_task, gpu_type)
                if fit < job.tasks:
                    continue
                total = sum(w * p.score_domain(cs, info, domain, fit) for p, w in self.domain_scores)
                ranked.append((-total, cs.rng.random(), domain))
            ranked.sort(key=lambda t: (t[0], t[1]))
            for _, _, domain in ranked:
                nodes = domain.nodes()
                checked += len(nodes)
                feasible = self.fit_nodes(cs, info, nodes)
                plan = self.assign(cs, info, feasible)
                if plan is not None:
                    return build_placement(info, plan, self.state.nodes), SUCCESS
        where = {Level.ISLAND: "one NVLink island", Level.NODE: "one node", Level.RACK: "one rack",
                 Level.SPINE: "one spine", Level.CLUSTER: "the cluster"}[max(cs.levels)]
        detail = ", ".join(f"{n} {m}" for m, n in self._reasons.most_common(3)) or "no candidate node"
        shape = f"{job.tasks}x{job.gpus_per_task} GPUs" if job.tasks > 1 else f"{job.gpus} GPUs"
        return None, Status.unschedulable(
            f"no room for {shape} in {where} ({checked} nodes checked: {detail})", "framework"
        )

    def _place_in_one_node(self, cs: CycleState, info: JobInfo) -> tuple[Placement | None, int]:
        job = info.job
        limit = self.profile.nodes_to_score
        best: NodeInfo | None = None
        best_key = (-1.0, 0.0)
        found = 0
        checked = 0
        scores = self.scores
        for node in self.state.index.candidates(job.gpus, job.gpu_type):
            checked += 1
            if self._fit(cs, info, node) < job.tasks:
                continue
            found += 1
            total = 0.0
            for plugin, weight in scores:
                total += weight * plugin.score(cs, info, node, job.tasks)
            key = (total, cs.rng.random())
            if key > best_key:
                best, best_key = node, key
            if limit and found >= limit:
                break
        if best is None:
            return None, checked
        return build_placement(info, {best.name: job.tasks}, self.state.nodes), checked
