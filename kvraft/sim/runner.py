"""One seed, start to finish: ``run_seed(seed) -> SeedResult``.

1. **Plan.** ``SimPlan.from_seed`` derives every parameter; ``header`` is the text printed
   before the run (seed, commit, plan).
2. **Safety phase** (``plan.safety_us`` of simulated time): clients, network faults and the
   nemesis run; the checkers run on every observation. A broken property ends the run.
3. **Liveness phase.** Clients stop issuing; the nemesis heals everything (network healed
   and calm, every member up and resumed). Within ``plan.liveness_ticks`` ticks (see
   docs/testing.md) there must be one leader that every member of its configuration follows
   in its term; a new write (the *probe*) must commit and be applied on all of them; all of
   them must have applied up to the leader's commit index, hold identical logs up to it (where
   not compacted) and identical state-machine digests.
4. **History.** The final value of every key, read from the leader, is appended as a read;
   the client history must be linearizable (per key, ``check_operations``).

A violation (a checker, a non-linearizable or undecidable history, an exception from the
core) outranks a liveness failure. Pure: no I/O, no wall clock.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field

from kvraft.raft.types import StateRole
from kvraft.sim.cluster import Member, SimCluster
from kvraft.sim.nemesis import Nemesis
from kvraft.sim.plan import SimPlan, derive_rng
from kvraft.sim.trace import Trace
from kvraft.sim.workload import Workload
from kvraft.testing import buggify
from kvraft.testing.checkers import Violation
from kvraft.testing.linearizability import KvInput, Operation, Verdict, check_operations

__all__ = ["LIN_MAX_STEPS", "SeedResult", "header", "run_seed"]

LIN_MAX_STEPS = 20_000_000
"""Search budget of the linearizability check per seed (deterministic; ~10 s of CPU)."""


@dataclass
class SeedResult:
    seed: int
    status: str  # "ok", "violation" or "liveness"
    message: str = ""
    sim_us: int = 0
    steps: int = 0
    ops: int = 0
    unknown_ops: int = 0
    liveness_ticks: int | None = None
    lin_steps: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    trace: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def line(self) -> str:
        """The one line the CLI prints for a failing seed."""
        first = self.message.splitlines()[0] if self.message else ""
        return f"seed {self.seed}: {self.status}: {first}"

    def summary(self) -> str:
        faults = ",".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "-"
        return (
            f"seed {self.seed}: {self.status} sim_ms={self.sim_us // 1000} steps={self.steps} "
            f"ops={self.ops} unknown={self.unknown_ops} liveness_ticks={self.liveness_ticks} "
            f"lin_steps={self.lin_steps} faults={faults}"
        )


def header(plan: SimPlan, commit: str = "unknown") -> list[str]:
    return [f"seed {plan.seed} commit {commit}", f"plan {plan.describe()}"]


def run_seed(
    seed: int,
    *,
    trace: bool = False,
    safety_us: int | None = None,
    plan: SimPlan | None = None,
    lin_max_steps: int = LIN_MAX_STEPS,
) -> SeedResult:
    plan = plan or SimPlan.from_seed(seed, safety_us)
    tr = Trace(trace)
    result = SeedResult(seed, "ok")
    with buggify.activated(derive_rng(seed, "buggify")):
        cluster = SimCluster(plan, tr)
        workload = Workload(cluster, derive_rng(seed, "workload"))
        nemesis = Nemesis(cluster, derive_rng(seed, "nemesis"))
        try:
            workload.start()
            nemesis.start()
            cluster.run_until(plan.safety_us)
            tr.emit(cluster.now, "sim", "phase", "liveness: faults off, clients stop")
            nemesis.stop()
            workload.stop()
            nemesis.heal_all()
            ok, ticks, reason = _liveness(cluster, plan)
            result.liveness_ticks = ticks
            if ok:
                lead = cluster.leader()
                assert lead is not None
                for key in workload.keys:
                    value = lead.sm.get(key)
                    workload.history.append(
                        Operation(0, KvInput("get", key), cluster.now, value, cluster.now)
                    )
                tr.emit(
                    cluster.now,
                    "sim",
                    "live",
                    f"after {ticks} ticks leader={lead.id} term={lead.term}",
                )
            else:
                result.status, result.message = "liveness", reason
                tr.emit(cluster.now, "sim", "stuck", reason)
        except Violation as v:
            result.status, result.message = "violation", str(v)
            tr.emit(cluster.now, "sim", "violation", str(v))
        except Exception as e:  # a crash of the core (or of the simulator) is a finding
            tb = traceback.format_exc(limit=-6)
            result.status, result.message = "violation", f"exception {type(e).__name__}: {e}\n{tb}"
            tr.emit(cluster.now, "sim", "exception", f"{type(e).__name__}: {e}")
        history = workload.finish()
        result.ops = len(history)
        result.unknown_ops = sum(1 for op in history if op.ret is None)
        if result.status != "violation":
            check = check_operations(history, max_steps=lin_max_steps)
            result.lin_steps = check.steps
            if check.verdict is not Verdict.OK:
                result.status, result.message = "violation", "history " + check.explain()
                tr.emit(cluster.now, "sim", "history", check.verdict.value)
            else:
                tr.emit(cluster.now, "sim", "history", f"linearizable ops={len(history)}")
    result.sim_us = cluster.now
    result.steps = cluster.steps
    result.faults = dict(nemesis.counts)
    result.trace = tr.lines
    return result


def _conf_members(m: Member) -> set[int]:
    c = m.conf
    return set(c.voters | c.voters_outgoing | c.learners | c.learners_next)


def _liveness(cluster: SimCluster, plan: SimPlan) -> tuple[bool, int, str]:
    """Run tick by tick until the healed cluster has converged; (ok, ticks, why not)."""
    start = cluster.now
    probed: tuple[int, int] | None = None
    reason = "no leader"
    for t in range(1, plan.liveness_ticks + 1):
        cluster.run_until(start + t * plan.tick_us)
        lead = cluster.leader()
        if lead is None:
            reason = "no leader"
            continue
        leaders = [m.id for m in cluster.live() if m.role == StateRole.LEADER]
        group = [cluster.members[i] for i in sorted(_conf_members(lead)) if i in cluster.members]
        if len(leaders) > 1:
            reason = f"several members think they lead: {leaders}"
            continue
        lagging = [m.id for m in group if not m.alive or m.leader != lead.id or m.term != lead.term]
        if lagging:
            reason = f"leader {lead.id} term {lead.term} not followed by {lagging}"
            continue
        if probed != (lead.id, lead.term) and not any(cluster.probe_applied(m) for m in group):
            if cluster.probe():
                probed = (lead.id, lead.term)
            reason = f"probe not accepted by leader {lead.id}"
            continue
        missing = [m.id for m in group if not cluster.probe_applied(m)]
        if missing:
            reason = f"probe not applied on {missing} (leader {lead.id} commit {lead.commit})"
            continue
        behind = [m.id for m in group if m.applied != lead.commit]
        if behind:
            reason = f"members {behind} have not applied up to commit {lead.commit}"
            continue
        _compare_logs(lead, group)
        return True, t, ""
    return False, plan.liveness_ticks, f"not converged within {plan.liveness_ticks} ticks: {reason}"


def _compare_logs(lead: Member, group: list[Member]) -> None:
    """Every member's log equals the leader's up to the commit index (where both still hold
    entries), and all state machines agree. A difference is a safety violation."""
    digest = lead.sm.digest()
    for m in group:
        lo = max(m.disk.first_index(), lead.disk.first_index())
        for i in range(lo, lead.commit + 1):
            a, b = lead.term_at(i), m.term_at(i)
            if a != b:
                raise Violation(
                    "log_matching",
                    f"after healing, member {m.id} holds term {b} at index {i}, leader {lead.id} term {a}",
                )
        if m.sm.digest() != digest:
            raise Violation(
                "apply_safety",
                f"after healing, member {m.id} state {m.sm.data} differs from leader {lead.id} state {lead.sm.data}",
            )
