"""PURE: job dependencies, Slurm's ``--dependency=afterok:JOB`` and ``afterany:JOB``.

A job may name up to 16 jobs it runs after (``depends_on``, docs/jobs.md)::

    depends_on: [{job: prep}, {job: tokenize, condition: finished}]

- ``succeeded`` (the default; Slurm's ``afterok``): met when the job ends ``Succeeded``; it
  can never be met once that job ends ``Failed`` or ``Cancelled``;
- ``finished`` (``afterany``): met when the job ends, whichever way.

``decide`` gives one job's ``Verdict``: ``met`` (the core may place it), ``waiting`` (it stays
Pending, reason ``Dependency``, and the core is not told of it: it holds no GPUs, no
reservation and no backfill slot, and is no queue head) or ``never`` (it ends ``Failed``,
reason ``DependencyNeverSatisfied``, Slurm's name; its own dependents then fail the same way,
one pass per link of the chain).

A dependency's outcome is *recorded* in the dependent's status (``status.dependencies``,
``{prep: "Succeeded"}``) when the daemon sees it met: in the pending pass that observes it and
in the bind txn. A recorded outcome is final, whatever happens to that job's keys later: its
finished-job TTL may delete them (``scheduler.job_gc``), or a new job may take its name. A job
whose key is gone with no outcome recorded is ``never`` ("job prep not found"). So that the
TTL cannot delete a dependency before its dependents have recorded it, the daemon does not
collect a finished job while a dependent that is not finished lacks its record
(``collect_hold``): the hold lasts the one pass that records it.

Example: ``train`` depends on ``prep``. prep Running -> train ``waiting`` ("waiting for job
prep to succeed (Running)"). prep Succeeded -> train ``met``, ``{prep: Succeeded}`` recorded,
train bound; prep collected an hour later changes nothing. Had prep Failed -> train ``never``
("job prep ended Failed"), and a job ``eval`` depending on train ``never`` in the next pass
("job train ended Failed").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CONDITIONS", "Dependency", "Verdict", "collect_hold", "cycle", "cycle_through", "decide", "parse",
           "recorded", "state", "submit_order", "status_update"]

CONDITIONS = ("succeeded", "finished")
TERMINAL = ("Succeeded", "Failed", "Cancelled")
MET, WAITING, NEVER = "met", "waiting", "never"


@dataclass(frozen=True, slots=True)
class Dependency:
    job: str
    condition: str = "succeeded"  # CONDITIONS


@dataclass(frozen=True, slots=True)
class Verdict:
    """``state``: met, waiting or never; ``message``: the pending reason ("waiting for job prep
    to succeed (Running)") or why it is never ("job prep ended Failed"); ``record``: the
    outcomes to keep in the status, recorded ones and those met now (dependency -> phase)."""

    state: str
    message: str
    record: dict[str, str] = field(default_factory=dict)


def parse(spec: Mapping[str, Any]) -> tuple[Dependency, ...]:
    """The dependencies of a stored job (``jobs.check_stored_job`` has checked their form)."""
    return tuple(Dependency(d["job"], d["condition"]) for d in spec.get("depends_on") or ())


def recorded(status: Mapping[str, Any] | None) -> dict[str, str]:
    """The outcomes recorded in a job's status (``decode.job_status`` has checked the form)."""
    got = (status or {}).get("dependencies")
    return dict(got) if isinstance(got, dict) else {}


def _met(condition: str, phase: str) -> bool:
    return phase == "Succeeded" or (condition == "finished" and phase in TERMINAL)


def state(dep: Dependency, record: Mapping[str, str], phase: str | None) -> tuple[str, str]:
    """One dependency: ``(met|waiting|never, what to say)``. ``phase`` is the job's phase now,
    None when its key does not exist; a recorded outcome wins over it."""
    done = record.get(dep.job)
    if done is not None and _met(dep.condition, done):
        return MET, f"job {dep.job} {done}"
    if phase is None:
        return NEVER, f"job {dep.job} not found"
    if _met(dep.condition, phase):
        return MET, f"job {dep.job} {phase}"
    if phase in TERMINAL:
        return NEVER, f"job {dep.job} ended {phase}"
    verb = "succeed" if dep.condition == "succeeded" else "finish"
    return WAITING, f"job {dep.job} to {verb} ({phase})"


def decide(deps: Sequence[Dependency], record: Mapping[str, str], phase_of: Callable[[str], str | None]) -> Verdict:
    """The verdict for a job with dependencies ``deps`` and recorded outcomes ``record``;
    ``phase_of(job)``: that job's phase, None when it does not exist. The first dependency that
    can never be met decides; else every unmet one is named, in the spec's order."""
    out = dict(record)
    waiting: list[str] = []
    for dep in deps:
        done = record.get(dep.job)
        phase = done if done is not None and _met(dep.condition, done) else phase_of(dep.job)
        verdict, said = state(dep, record, phase)
        if verdict == NEVER:
            return Verdict(NEVER, said, out)
        if verdict == MET:
            out.setdefault(dep.job, str(phase))
        else:
            waiting.append(said)
    if waiting:
        return Verdict(WAITING, "waiting for " + "; ".join(waiting), out)
    return Verdict(MET, "", out)


def status_update(status: Mapping[str, Any], verdict: Verdict, now: float) -> tuple[dict[str, Any] | None, str]:
    """What to write for a job that is not bound nor finished: ``(new status or None when
    unchanged, event message or "")``. ``met``: only the record (the core gives the pending
    reason); ``waiting``: Pending, reason ``Dependency``; ``never``: Failed,
    ``DependencyNeverSatisfied``, with an event."""
    doc = dict(status)
    if verdict.record or "dependencies" in doc:
        doc["dependencies"] = dict(verdict.record)
    event = ""
    if verdict.state == WAITING:
        doc.update(phase="Pending", reason="Dependency", plugin="dependencies", message=verdict.message)
    elif verdict.state == NEVER:
        doc.update(phase="Failed", reason="DependencyNeverSatisfied", plugin="dependencies", message=verdict.message,
                   finished_at=now)
        event = verdict.message
    return (doc if doc != dict(status) else None), event


def collect_hold(job: str, dependents: Iterable[tuple[str, str, Mapping[str, str]]]) -> str | None:
    """Why finished job ``job`` may not be collected yet, or None. ``dependents``: ``(name,
    phase, recorded outcomes)`` of every job that depends on it: one that has not finished
    and has not recorded ``job``'s outcome still needs ``job``'s key to read it."""
    for name, phase, record in dependents:
        if phase not in TERMINAL and job not in record:
            return f"job {name} depends on it and has not recorded its outcome yet"
    return None


def cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle among the jobs of ``graph`` (job -> the jobs it depends on; names
    outside the graph are ignored), as a path ``[a, b, a]``, or None."""
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                path.append(node)
                on_path.add(node)
            deps = [d for d in graph[node] if d in graph]
            if i < len(deps):
                stack.append((node, i + 1))
                nxt = deps[i]
                if nxt in on_path:
                    return path[path.index(nxt):] + [nxt]
                if nxt not in done:
                    stack.append((nxt, 0))
            else:
                path.pop()
                on_path.discard(node)
                done.add(node)
    return None


def cycle_through(job: str, waits_on: Callable[[str], Sequence[str] | None]) -> list[str] | None:
    """A cycle of waiting jobs that passes through ``job``, as a path ``[job, b, job]``, or None.
    ``waits_on(j)``: the jobs ``j`` still waits for, None when ``j`` is not a waiting job (it
    runs, has ended or does not exist: the chain ends there). Only what is reachable from
    ``job`` is visited. jobctl refuses a cycle in a submitted file; this catches one written
    by hand (kvctl put), which would otherwise wait for ever."""
    path: list[str] = [job]
    seen: set[str] = {job}
    stack: list[list[str]] = [list(waits_on(job) or ())]
    while stack:
        if not stack[-1]:
            stack.pop()
            path.pop()
            continue
        nxt = stack[-1].pop(0)
        if nxt == job:
            return [*path, job]
        if nxt in seen:
            continue
        seen.add(nxt)
        deps = waits_on(nxt)
        if deps:
            path.append(nxt)
            stack.append(list(deps))
    return None


def submit_order(graph: Mapping[str, Sequence[str]]) -> list[str]:
    """The jobs of an acyclic ``graph`` in an order that writes every job after the jobs of
    the graph it depends on, otherwise in the graph's order: a daemon that reads the first
    jobs of a file before the rest never sees a dependency missing."""
    out: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for d in graph[name]:
            if d in graph:
                visit(d)
        out.append(name)

    for name in graph:
        visit(name)
    return out
