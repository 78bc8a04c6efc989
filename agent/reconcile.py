"""PURE: ``reconcile(desired, observed, reported, now_s) -> actions``.

The agent's whole decision logic, with no I/O, no clock and no randomness (enforced by
tests/test_house_rules.py). The shell (``agent.agent``) gathers three views and executes the
actions it gets back:

- **desired**: the assignments of this node in kvraft (``Assignment`` per ``"<job>/<task>"``,
  with the assignment's create_revision naming the placement);
- **observed**: every attempt the runtime knows about (``Observed``: from the supervisors'
  state files, containers, processes), including attempts left over from before an agent
  restart;
- **reported**: the last status this agent (or its previous incarnation) wrote to kvraft for
  each task (``Reported``), so nothing is reported twice.

Rules, in the order they are applied per task key:

1. An attempt whose revision is not the desired one (the assignment was deleted, or replaced
   by a new placement) is stopped with its grace period if it is live, cleaned up once it has
   exited, and removed (state and logs) once it holds nothing. Its status is never written:
   the status key belongs to the current placement. An attempt that *finished by itself*
   (not stopped) before its assignment went -- a completed job, released by the scheduler --
   keeps its logs for ``retain_finished_s`` after it finished, so ``jobctl logs`` still
   shows them (kubelet keeps a finished pod's logs until the pod is deleted; Nomad until GC).
2. A desired task with an invalid spec is reported ``Failed`` / ``InvalidSpec`` and never run.
3. A desired task with no attempt for its revision is started (attempt = highest attempt
   number ever seen for the key, or reported for the placement, + 1) -- unless the placement
   already ran here and its attempts are gone (the agent's state lost): then the last report
   decides as an exit would (one reported live is reported ``Failed`` / ``Lost``), and the
   restart policy whether a new attempt starts, so nothing that ended runs again -- and only
   once no older attempt is live, so two copies
   never run at once, and no live attempt of another task holds one of its GPUs (a task still
   stopping after the scheduler freed its GPUs: its node was suspected or its grace period
   ran out, or an assignment was deleted by hand; kubelet's device manager does not hand out
   a terminating pod's devices either) and no task started before it in the same pass took
   one (two assignments written by hand that name one GPU: the first in key order starts);
   meanwhile it is reported ``Pending`` / ``WaitingForGPUs`` once, naming the holders.
4. A live attempt is reported ``Starting`` / ``Running`` (once per attempt and phase).
5. An exited or lost attempt is reported with its exit code, signal, OOM flag and reason; its
   runtime resources are cleaned (logs kept); the restart policy decides whether a new
   attempt starts after kubelet's backoff (``Pending`` / ``BackOff`` is reported meanwhile,
   and a ``Wakeup`` asks the shell to call again when the backoff ends).
   5b. An attempt lost before anything of it ran (``Observed.never_ran``: the agent died
   between writing its handle and its supervisor or container existing) is no exit of the
   task's: it is cleaned and a new attempt starts at once, whatever the restart policy, and
   it counts in no restart limit (kubelet re-creates a pod's containers after its own crash).
   Until 2026-12-06 it was reported ``Failed`` / ``Lost``, and a ``Never`` task failed.
6. A desired task whose assignment is *stopping* (the scheduler preempts, evicts, suspends or
   resizes the run: ``Assignment.stopping``, Kubernetes' deletionTimestamp) starts nothing and
   restarts nothing; a live attempt is stopped with its grace period, and once none is live
   the task's end is reported: the last attempt's exit (``Killed`` when the stop ended it), or
   ``Failed`` / ``Killed`` at attempt 0 for a task that never started. That report is what
   lets the scheduler release the run as soon as its tasks have ended rather than when the
   grace period is over; the assignment's deletion then removes the attempts (rule 1).

``fenced`` (the node has been out of touch with its lease for longer than the grace: the
scheduler may have placed its gangs elsewhere) overrides all of that: every live attempt is
stopped with its grace period ("lease lost"), ended ones are cleaned, and nothing is started,
reported or removed -- the attempts stay on disk, so once the agent is back in touch the
normal rules report them and restart them by policy if they are still assigned here.

Worked example (restart_policy OnFailure, backoff 10 s)::

    desired {j/0 rev 7}, observed {},                       -> Start(j/0, attempt 1, rev 7)
    observed {j/0#1 running}                                -> Report(Running, attempt 1)
    observed {j/0#1 exited 3 at t=50}, now 50                -> Report(Pending BackOff, exit 3),
                                                               Cleanup(j/0#1), Wakeup(60)
    now 60                                                   -> Start(j/0, attempt 2, rev 7)
    desired {} (assignment deleted), j/0#2 running           -> Stop(j/0#2, grace 30)
    j/0#2 exited, held=False                                 -> Remove(j/0#1), Remove(j/0#2)
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from agent.spec import Assignment, TaskSpec

__all__ = [
    "Action",
    "AttemptState",
    "BackoffPolicy",
    "Cleanup",
    "ExitInfo",
    "Observed",
    "Phase",
    "Remove",
    "Report",
    "Reported",
    "Start",
    "Stop",
    "TaskStatus",
    "Wakeup",
    "backoff_s",
    "is_newer",
    "reconcile",
]


class AttemptState(Enum):
    STARTING = "starting"  # the supervisor is preparing or starting it
    RUNNING = "running"
    EXITED = "exited"  # exit recorded by the supervisor (exit.json)
    LOST = "lost"  # the supervisor died without recording an exit; the task was killed


class Phase(Enum):
    PENDING = "Pending"
    STARTING = "Starting"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Phase.PENDING: 0, Phase.STARTING: 1, Phase.RUNNING: 2, Phase.SUCCEEDED: 3, Phase.FAILED: 3}

# reasons a runtime may put in ExitInfo.reason that no restart can fix
PERMANENT_REASONS = frozenset({"StartError", "InvalidSpec", "ImageError"})


@dataclass(frozen=True, slots=True)
class ExitInfo:
    exit_code: int | None  # None when unknown (lost)
    signal: int | None = None
    oom_killed: bool = False
    finished_at_s: float = 0.0
    reason: str = ""  # set by the runtime for start failures ("StartError"), else derived
    message: str = ""


@dataclass(frozen=True, slots=True)
class Observed:
    """One attempt as the runtime sees it."""

    key: str
    attempt: int
    revision: int
    state: AttemptState
    started_at_s: float = 0.0
    exit: ExitInfo | None = None
    stop_requested: bool = False
    held: bool = True  # runtime resources (container, cgroups, bundle) not yet released
    grace_s: float = 30.0
    gpus: tuple[int, ...] = ()  # the GPU indices it was given
    never_ran: bool = False
    """Lost before its supervisor or container existed (the agent died while starting it):
    nothing of the task ran, so it is no exit of the task's (rule 5b)."""

    @property
    def live(self) -> bool:
        return self.state in (AttemptState.STARTING, AttemptState.RUNNING)


@dataclass(frozen=True, slots=True)
class Reported:
    """The last status written for a task (read back from kvraft after a restart)."""

    revision: int
    attempt: int
    phase: Phase
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TaskStatus:
    phase: Phase
    attempt: int
    restarts: int
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    reason: str = ""
    message: str = ""
    started_at_s: float | None = None
    finished_at_s: float | None = None
    next_start_s: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "phase": self.phase.value,
            "attempt": self.attempt,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "oom_killed": self.oom_killed,
            "reason": self.reason,
            "message": self.message,
            "started_at": self.started_at_s,
            "finished_at": self.finished_at_s,
            "next_start_at": self.next_start_s,
        }


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """kubelet's restart backoff: 10 s doubling to 5 min, reset after 10 min running."""

    base_s: float = 10.0
    max_s: float = 300.0
    reset_after_s: float = 600.0


@dataclass(frozen=True, slots=True)
class Start:
    key: str
    attempt: int
    revision: int
    spec: TaskSpec
    stimulus_id: str


@dataclass(frozen=True, slots=True)
class Stop:
    key: str
    attempt: int
    grace_s: float
    reason: str
    stimulus_id: str


@dataclass(frozen=True, slots=True)
class Cleanup:
    """Release the attempt's container, cgroups, mounts and bundle; keep its logs."""

    key: str
    attempt: int
    stimulus_id: str


@dataclass(frozen=True, slots=True)
class Remove:
    """Forget the attempt: delete its state directory and logs."""

    key: str
    attempt: int
    stimulus_id: str


@dataclass(frozen=True, slots=True)
class Report:
    key: str
    revision: int
    status: TaskStatus
    stimulus_id: str


@dataclass(frozen=True, slots=True)
class Wakeup:
    at_s: float
    stimulus_id: str


Action = Start | Stop | Cleanup | Remove | Report | Wakeup


def backoff_s(restarts_done: int, ran_for_s: float, policy: BackoffPolicy) -> float:
    """Delay before the next restart, given restarts already done for this placement."""
    if ran_for_s >= policy.reset_after_s:
        return policy.base_s
    return min(policy.base_s * float(2 ** min(restarts_done, 30)), policy.max_s)


def _exit_status(attempt: Observed, restarts: int) -> TaskStatus:
    info = attempt.exit or ExitInfo(exit_code=None, reason="Lost", message="exit not recorded")
    if attempt.state is AttemptState.LOST:
        reason = "Lost"
    elif info.reason:
        reason = info.reason
    elif info.oom_killed:
        reason = "OOMKilled"
    elif info.exit_code == 0 and info.signal is None:
        reason = "Completed"
    elif attempt.stop_requested:
        reason = "Killed"
    else:
        reason = "Error"
    succeeded = reason == "Completed"
    return TaskStatus(
        phase=Phase.SUCCEEDED if succeeded else Phase.FAILED,
        attempt=attempt.attempt,
        restarts=restarts,
        exit_code=info.exit_code,
        signal=info.signal,
        oom_killed=info.oom_killed,
        reason=reason,
        message=info.message,
        started_at_s=attempt.started_at_s or None,
        finished_at_s=info.finished_at_s or None,
    )


def is_newer(status: TaskStatus, revision: int, reported: Reported | None) -> bool:
    """True when ``status`` (of placement ``revision``) moves the task on from ``reported``:
    not written yet, and neither an older placement's, an older attempt's nor a lower phase."""
    if reported is None:
        return True
    if reported.revision != revision:
        return revision > reported.revision
    if status.attempt != reported.attempt:
        return status.attempt > reported.attempt
    if status.phase is Phase.PENDING and reported.phase is not Phase.PENDING:
        # BackOff after a terminal attempt: written once per attempt
        return reported.phase.rank < Phase.SUCCEEDED.rank
    return status.phase.rank > reported.phase.rank


def _wants_restart(spec: TaskSpec, status: TaskStatus, restarts: int) -> bool:
    if status.reason in PERMANENT_REASONS:
        return False
    if spec.restart_policy == "Never":
        return False
    if spec.restart_policy == "OnFailure" and status.phase is Phase.SUCCEEDED:
        return False
    return spec.max_restarts is None or restarts < spec.max_restarts


def reconcile(
    desired: Mapping[str, Assignment],
    observed: Iterable[Observed],
    reported: Mapping[str, Reported],
    now_s: float,
    *,
    stimulus_id: str,
    backoff: BackoffPolicy = BackoffPolicy(),
    fenced: bool = False,
    retain_finished_s: float = 0.0,
    starting: Mapping[str, tuple[int, ...]] | None = None,
) -> list[Action]:
    """The actions that move observed toward desired. Deterministic: keys in sorted order.
    ``starting``: the GPUs of the shell's Starts still in flight (not observed yet), by key;
    they count as held."""
    by_key: dict[str, list[Observed]] = defaultdict(list)
    for attempt in observed:
        by_key[attempt.key].append(attempt)
    actions: list[Action] = []
    if fenced:
        for key in sorted(by_key):
            for a in sorted(by_key[key], key=lambda a: a.attempt):
                if a.live and not a.stop_requested:
                    actions.append(Stop(key, a.attempt, a.grace_s, "lease lost", stimulus_id))
                elif not a.live and a.held:
                    actions.append(Cleanup(key, a.attempt, stimulus_id))
        return actions
    holders: dict[int, set[str]] = defaultdict(set)  # GPU index -> keys of the live attempts holding it
    for attempt in observed:
        if attempt.live:
            for gpu in attempt.gpus:
                holders[gpu].add(attempt.key)
    for key, gpus in (starting or {}).items():
        for gpu in gpus:
            holders[gpu].add(key)
    wakeups: list[float] = []
    for key in sorted(set(desired) | set(by_key)):
        attempts = sorted(by_key.get(key, ()), key=lambda a: a.attempt)
        assignment = desired.get(key)
        current = [a for a in attempts if assignment is not None and a.revision == assignment.revision]
        stale = [a for a in attempts if assignment is None or a.revision != assignment.revision]
        for a in stale:
            retire = _retire(a, stimulus_id, "assignment removed" if assignment is None else "reassigned")
            if retire and isinstance(retire[0], Remove) and _finished_by_itself(a) and a.exit is not None:
                keep_until = a.exit.finished_at_s + retain_finished_s
                if now_s < keep_until:
                    wakeups.append(keep_until)
                    continue
            actions.extend(retire)
        if assignment is None:
            continue
        rep = reported.get(key)
        if assignment.spec is None:
            status = TaskStatus(Phase.FAILED, attempt=0, restarts=0, reason="InvalidSpec", message=assignment.error)
            if is_newer(status, assignment.revision, rep):
                actions.append(Report(key, assignment.revision, status, stimulus_id))
            for a in current:
                actions.extend(_retire(a, stimulus_id, "invalid spec"))
            continue
        if assignment.stopping:
            actions.extend(_stop_placement(assignment, current, rep, stimulus_id))
            continue
        spec = assignment.spec
        next_attempt = (attempts[-1].attempt if attempts else 0) + 1
        if rep is not None and rep.revision == assignment.revision:
            # attempt numbers are never reused: one reported and lost since (its directory
            # gone, an earlier one still there) was numbered already
            next_attempt = max(next_attempt, rep.attempt + 1)
        if not current:
            if any(a.live for a in stale):
                continue  # wait until the old placement's copy is gone
            if rep is not None and rep.revision == assignment.revision and rep.attempt > 0:
                # this placement ran here, but its attempts are gone (the agent's state lost):
                # what was reported decides, so nothing that ended runs again
                status, report = _state_gone(rep)
                if report and is_newer(status, assignment.revision, rep):
                    actions.append(Report(key, assignment.revision, status, stimulus_id))
                if rep.phase is not Phase.PENDING and not _wants_restart(spec, status, status.restarts):
                    continue  # (in a backoff, the restart was decided already)
            busy = _busy_gpus(key, spec, holders)
            if busy:
                status = TaskStatus(Phase.PENDING, attempt=0, restarts=0, reason="WaitingForGPUs", message=busy)
                if is_newer(status, assignment.revision, rep):
                    actions.append(Report(key, assignment.revision, status, stimulus_id))
                continue
            actions.append(Start(key, next_attempt, assignment.revision, spec, stimulus_id))
            _claim(holders, key, spec)
            continue
        latest = current[-1]
        restarts = sum(1 for a in current[:-1] if not a.never_ran)
        for a in current[:-1]:  # earlier attempts of this placement: release what they hold
            if a.live and not a.stop_requested:
                actions.append(Stop(key, a.attempt, a.grace_s, "superseded", stimulus_id))
            elif not a.live and a.held:
                actions.append(Cleanup(key, a.attempt, stimulus_id))
        if latest.live:
            phase = Phase.RUNNING if latest.state is AttemptState.RUNNING else Phase.STARTING
            status = TaskStatus(phase, latest.attempt, restarts, started_at_s=latest.started_at_s or None)
            if is_newer(status, assignment.revision, rep):
                actions.append(Report(key, assignment.revision, status, stimulus_id))
            continue
        if latest.never_ran:  # rule 5b: started again at once, whatever the policy; nothing reported
            if latest.held:
                actions.append(Cleanup(key, latest.attempt, stimulus_id))
            if any(a.live for a in attempts) or _busy_gpus(key, spec, holders):
                continue
            actions.append(Start(key, next_attempt, assignment.revision, spec, stimulus_id))
            _claim(holders, key, spec)
            continue
        status = _exit_status(latest, restarts)
        if latest.held:
            actions.append(Cleanup(key, latest.attempt, stimulus_id))
        if not _wants_restart(spec, status, restarts):
            limited = spec.max_restarts is not None and restarts >= spec.max_restarts
            if limited and spec.restart_policy != "Never" and status.phase is Phase.FAILED:
                status = _replace_message(status, f"restart limit reached ({spec.max_restarts})")
            if is_newer(status, assignment.revision, rep):
                actions.append(Report(key, assignment.revision, status, stimulus_id))
            continue
        ran_for_s = max(0.0, (status.finished_at_s or now_s) - (latest.started_at_s or now_s))
        at_s = (status.finished_at_s or now_s) + backoff_s(restarts, ran_for_s, backoff)
        if now_s >= at_s:
            if any(a.live for a in attempts) or _busy_gpus(key, spec, holders):
                continue  # an earlier copy (or another task on its GPUs) is still stopping: start once it is gone
            actions.append(Start(key, next_attempt, assignment.revision, spec, stimulus_id))
            _claim(holders, key, spec)
            continue
        waiting = TaskStatus(
            Phase.PENDING,
            latest.attempt,
            restarts,
            exit_code=status.exit_code,
            signal=status.signal,
            oom_killed=status.oom_killed,
            reason="BackOff",
            message=f"last attempt: {status.reason}" + (f" ({status.message})" if status.message else ""),
            started_at_s=status.started_at_s,
            finished_at_s=status.finished_at_s,
            next_start_s=at_s,
        )
        if is_newer(waiting, assignment.revision, rep):
            actions.append(Report(key, assignment.revision, waiting, stimulus_id))
        wakeups.append(at_s)
    if wakeups:
        actions.append(Wakeup(min(wakeups), stimulus_id))
    return actions


def _state_gone(reported: Reported) -> tuple[TaskStatus, bool]:
    """How the last reported attempt of a placement whose attempts are gone ended, for the
    restart policy, and whether that is news: one reported live was lost with the state."""
    n = reported.attempt
    if reported.phase in (Phase.SUCCEEDED, Phase.FAILED):
        return TaskStatus(reported.phase, n, n - 1, reason=reported.reason), False
    if reported.phase is Phase.PENDING:  # in its backoff: the attempt ended and a restart is due
        return TaskStatus(Phase.PENDING, n, n - 1, reason=reported.reason), False
    return TaskStatus(Phase.FAILED, n, n - 1, reason="Lost",
                      message="the attempt's state on this node is gone (the agent's data dir lost)"), True


def _claim(holders: dict[int, set[str]], key: str, spec: TaskSpec) -> None:
    """A task started in this pass holds its GPUs for the rest of it: two assignments that
    name one GPU (written by hand) never start together."""
    for gpu in spec.resources.gpus:
        holders[gpu].add(key)


def _busy_gpus(key: str, spec: TaskSpec, holders: Mapping[int, set[str]]) -> str:
    """What keeps ``key`` from starting on its GPUs ("" when nothing): live attempts of other
    tasks that hold one of them."""
    busy = sorted(g for g in spec.resources.gpus if holders.get(g, set()) - {key})
    if not busy:
        return ""
    others = sorted(set().union(*(holders[g] for g in busy)) - {key})
    return f"GPU {', '.join(map(str, busy))} still in use by {', '.join(others)}"


def _stop_placement(assignment: Assignment, current: list[Observed], reported: Reported | None,
                    stimulus_id: str) -> list[Action]:
    """Rule 6: stop what runs of a stopping placement; report its end once nothing is live."""
    key, why = assignment.key, assignment.stopping
    out: list[Action] = []
    for a in current:
        if a.live and not a.stop_requested:
            out.append(Stop(key, a.attempt, a.grace_s, f"stopping ({why})", stimulus_id))
        elif not a.live and a.held:
            out.append(Cleanup(key, a.attempt, stimulus_id))
    if any(a.live for a in current):
        return out
    # a report of this placement at a later attempt than the agent still knows of (its state
    # gone) is ended at that attempt, so the end is reported all the same
    last = reported.attempt if reported is not None and reported.revision == assignment.revision else 0
    ran = [a for a in current if not a.never_ran]
    if ran:
        status = _exit_status(ran[-1], len(ran) - 1)
        if ran[-1].stop_requested:
            status = _replace_message(status, f"stopped by the scheduler ({why})")
        if status.attempt < last:
            status = dataclasses.replace(status, attempt=last)
    else:  # never started here (or its attempts are gone, or the agent died starting them)
        status = TaskStatus(Phase.FAILED, attempt=last, restarts=0, reason="Killed",
                            message=f"stopped before it started ({why})")
    if is_newer(status, assignment.revision, reported):
        out.append(Report(key, assignment.revision, status, stimulus_id))
    return out


def _replace_message(status: TaskStatus, note: str) -> TaskStatus:
    message = f"{status.message}; {note}" if status.message else note
    return TaskStatus(
        status.phase,
        status.attempt,
        status.restarts,
        status.exit_code,
        status.signal,
        status.oom_killed,
        status.reason,
        message,
        status.started_at_s,
        status.finished_at_s,
    )


def _finished_by_itself(a: Observed) -> bool:
    return a.state is AttemptState.EXITED and not a.stop_requested and a.exit is not None \
        and a.exit.finished_at_s > 0


def _retire(a: Observed, stimulus_id: str, reason: str) -> list[Action]:
    if a.live:
        return [] if a.stop_requested else [Stop(a.key, a.attempt, a.grace_s, reason, stimulus_id)]
    if a.held:
        return [Cleanup(a.key, a.attempt, stimulus_id)]
    return [Remove(a.key, a.attempt, stimulus_id)]
