"""The pure reconcile as a table, plus Hypothesis properties over random views."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.reconcile import (
    AttemptState,
    BackoffPolicy,
    Cleanup,
    ExitInfo,
    Observed,
    Phase,
    Remove,
    Report,
    Reported,
    Start,
    Stop,
    Wakeup,
    backoff_s,
    reconcile,
)
from agent.spec import Assignment, parse_assignment, parse_spec

B = BackoffPolicy(base_s=10, max_s=300, reset_after_s=600)


def spec(policy: str = "Never", max_restarts: int | None = None, grace_s: float = 30.0, gpus: tuple[int, ...] = ()):
    return parse_spec({"command": ["true"], "restart_policy": policy, "max_restarts": max_restarts, "grace_s": grace_s,
                       "resources": {"gpus": list(gpus)}})


def want(key: str = "j/0", rev: int = 7, stopping: str = "", **kw) -> dict[str, Assignment]:
    return {key: Assignment(key, rev, spec(**kw), stopping=stopping)}


def running(attempt: int = 1, rev: int = 7, key: str = "j/0", **kw) -> Observed:
    return Observed(key, attempt, rev, AttemptState.RUNNING, started_at_s=kw.pop("started", 1.0), **kw)


def exited(code: int | None, attempt: int = 1, rev: int = 7, key: str = "j/0", at: float = 50.0, **kw) -> Observed:
    sig = kw.pop("signal", None)
    oom = kw.pop("oom", False)
    reason = kw.pop("reason", "")
    return Observed(key, attempt, rev, AttemptState.EXITED, started_at_s=kw.pop("started", 1.0),
                    exit=ExitInfo(code, sig, oom, at, reason), **kw)


def kinds(actions) -> list[str]:
    out = []
    for a in actions:
        if isinstance(a, Report):
            out.append(f"Report({a.key}#{a.status.attempt} {a.status.phase.value} {a.status.reason})".replace(" )", ")"))
        elif isinstance(a, Start):
            out.append(f"Start({a.key}#{a.attempt})")
        elif isinstance(a, Stop):
            out.append(f"Stop({a.key}#{a.attempt} {a.grace_s:g})")
        elif isinstance(a, Cleanup):
            out.append(f"Cleanup({a.key}#{a.attempt})")
        elif isinstance(a, Remove):
            out.append(f"Remove({a.key}#{a.attempt})")
        elif isinstance(a, Wakeup):
            out.append(f"Wakeup({a.at_s:g})")
    return out


@dataclass
class Case:
    name: str
    desired: dict
    observed: list
    reported: dict = field(default_factory=dict)
    now: float = 100.0
    want: list = field(default_factory=list)
    fenced: bool = False
    retain: float = 0.0


CASES = [
    Case("new assignment starts attempt 1", want(), [], want=["Start(j/0#1)"]),
    Case("running is reported once", want(), [running()], want=["Report(j/0#1 Running)"]),
    Case("running already reported: nothing", want(), [running()], {"j/0": Reported(7, 1, Phase.RUNNING)}, want=[]),
    Case("starting reported as Starting", want(), [Observed("j/0", 1, 7, AttemptState.STARTING)],
         want=["Report(j/0#1 Starting)"]),
    Case("exit 0, Never: Succeeded + cleanup", want(), [exited(0)], {"j/0": Reported(7, 1, Phase.RUNNING)},
         want=["Cleanup(j/0#1)", "Report(j/0#1 Succeeded Completed)"]),
    Case("exit 3, Never: Failed Error", want(), [exited(3, held=False)], want=["Report(j/0#1 Failed Error)"]),
    Case("terminal already reported: nothing", want(), [exited(3, held=False)], {"j/0": Reported(7, 1, Phase.FAILED)}, want=[]),
    Case("OOM", want(), [exited(137, signal=9, oom=True, held=False)], want=["Report(j/0#1 Failed OOMKilled)"]),
    Case("start error is permanent even with Always", want(policy="Always"),
         [exited(127, reason="StartError", held=False)], want=["Report(j/0#1 Failed StartError)"]),
    Case("OnFailure after exit 3: BackOff then wakeup", want(policy="OnFailure"), [exited(3, held=False, at=95)],
         want=["Report(j/0#1 Pending BackOff)", "Wakeup(105)"]),
    Case("OnFailure backoff over: attempt 2", want(policy="OnFailure"), [exited(3, held=False, at=85)],
         {"j/0": Reported(7, 1, Phase.PENDING, "BackOff")}, want=["Start(j/0#2)"]),
    Case("second restart waits 20 s", want(policy="OnFailure"),
         [exited(3, 1, held=False, at=50), exited(3, 2, held=False, at=85, started=70)],
         want=["Report(j/0#2 Pending BackOff)", "Wakeup(105)"]),
    Case("OnFailure after success: done", want(policy="OnFailure"), [exited(0, held=False)],
         want=["Report(j/0#1 Succeeded Completed)"]),
    Case("Always after success restarts", want(policy="Always"), [exited(0, held=False, at=10)], now=100,
         want=["Start(j/0#2)"]),
    Case("max_restarts exhausted: Failed", want(policy="OnFailure", max_restarts=1),
         [exited(3, 1, held=False), exited(3, 2, held=False)], want=["Report(j/0#2 Failed Error)"]),
    # the agent's state is gone (data dir lost, an attempt that did not read removed) but this
    # placement ran here: what was reported decides, not a fresh attempt 1 that ran it again
    Case("state gone after the end, Never: nothing runs again", want(), [],
         {"j/0": Reported(7, 1, Phase.SUCCEEDED, "Completed")}, want=[]),
    Case("state gone after a failure, Never: nothing runs again", want(), [],
         {"j/0": Reported(7, 1, Phase.FAILED, "Error")}, want=[]),
    Case("state gone while running, Never: Failed Lost", want(), [],
         {"j/0": Reported(7, 1, Phase.RUNNING)}, want=["Report(j/0#1 Failed Lost)"]),
    Case("state gone while running, OnFailure: lost, then the next attempt", want(policy="OnFailure"), [],
         {"j/0": Reported(7, 2, Phase.RUNNING)}, want=["Report(j/0#2 Failed Lost)", "Start(j/0#3)"]),
    Case("state gone after a failure, OnFailure: the next attempt", want(policy="OnFailure"), [],
         {"j/0": Reported(7, 2, Phase.FAILED, "Error")}, want=["Start(j/0#3)"]),
    Case("state gone in a backoff: the next attempt", want(policy="OnFailure"), [],
         {"j/0": Reported(7, 1, Phase.PENDING, "BackOff")}, want=["Start(j/0#2)"]),
    Case("state gone in a backoff, restart decided: the next attempt", want(policy="OnFailure", max_restarts=0), [],
         {"j/0": Reported(7, 1, Phase.PENDING, "BackOff")}, want=["Start(j/0#2)"]),
    Case("state gone, restarts used up: nothing", want(policy="OnFailure", max_restarts=1), [],
         {"j/0": Reported(7, 2, Phase.FAILED, "Error")}, want=[]),
    Case("another placement's report: attempt 1", want(), [], {"j/0": Reported(5, 3, Phase.SUCCEEDED)},
         want=["Start(j/0#1)"]),
    Case("waiting for GPUs is no attempt: attempt 1", want(), [], {"j/0": Reported(7, 0, Phase.PENDING, "WaitingForGPUs")},
         want=["Start(j/0#1)"]),
    Case("lost attempt is Failed Lost", want(), [Observed("j/0", 1, 7, AttemptState.LOST, held=False)],
         want=["Report(j/0#1 Failed Lost)"]),
    # rule 5b: the agent died while starting it; nothing ran, so no failure, whatever the policy
    Case("never ran, Never: cleaned and started again, nothing reported", want(),
         [Observed("j/0", 1, 7, AttemptState.LOST, never_ran=True)], {"j/0": Reported(7, 1, Phase.STARTING)},
         want=["Cleanup(j/0#1)", "Start(j/0#2)"]),
    Case("never ran, restart limit 0: started again", want(policy="OnFailure", max_restarts=0),
         [Observed("j/0", 1, 7, AttemptState.LOST, held=False, never_ran=True)], want=["Start(j/0#2)"]),
    Case("after a never-ran attempt the restarts count from 0", want(policy="OnFailure", max_restarts=1),
         [Observed("j/0", 1, 7, AttemptState.LOST, held=False, never_ran=True), exited(3, 2, held=False, at=95)],
         want=["Report(j/0#2 Pending BackOff)", "Wakeup(105)"]),
    Case("never ran, its GPUs held by another live task: waits", want(gpus=(0,)),
         [Observed("j/0", 1, 7, AttemptState.LOST, held=False, never_ran=True),
          Observed("k/0", 1, 3, AttemptState.RUNNING, gpus=(0,))],
         want=["Stop(k/0#1 30)"]),
    Case("assignment removed: stop with grace", {}, [running()], want=["Stop(j/0#1 30)"]),
    Case("assignment removed, stop already requested: wait", {}, [running(stop_requested=True)], want=[]),
    Case("assignment removed, exited: cleanup then remove", {}, [exited(0)], want=["Cleanup(j/0#1)"]),
    Case("assignment removed, released: remove", {}, [exited(0, held=False)], want=["Remove(j/0#1)"]),
    Case("reassigned: old copy stopped first, no start yet", want(rev=9), [running(rev=7)],
         want=["Stop(j/0#1 30)"]),
    Case("reassigned: old copy gone, new attempt starts", want(rev=9), [exited(0, rev=7, held=False)],
         want=["Remove(j/0#1)", "Start(j/0#2)"]),
    Case("invalid spec reported once", {"j/0": parse_assignment("j/0", 7, {"spec": {"command": []}})}, [],
         want=["Report(j/0#0 Failed InvalidSpec)"]),
    Case("invalid spec already reported", {"j/0": parse_assignment("j/0", 7, {"spec": {"command": []}})}, [],
         {"j/0": Reported(7, 0, Phase.FAILED, "InvalidSpec")}, want=[]),
    Case("stopped by agent then exit: Killed", want(), [exited(143, signal=None, stop_requested=True, held=False)],
         want=["Report(j/0#1 Failed Killed)"]),
    Case("report from an older revision is overwritten", want(rev=9), [running(rev=9)],
         {"j/0": Reported(7, 1, Phase.FAILED)}, want=["Report(j/0#1 Running)"]),
    Case("fenced: every live attempt stopped, nothing started or reported",
         {**want(), **want("j/1", policy="Always"), **want("j/2")},
         [running(), exited(0, key="j/1", held=False, at=10), running(key="j/2", stop_requested=True),
          exited(3, key="j/3")],
         fenced=True, want=["Stop(j/0#1 30)", "Cleanup(j/3#1)"]),
    Case("fenced, then back in touch: the stopped attempt is reported and restarted by policy",
         want(policy="OnFailure"), [exited(143, stop_requested=True, held=False, at=85)],
         {"j/0": Reported(7, 1, Phase.RUNNING)}, want=["Start(j/0#2)"]),
    Case("finished by itself, assignment removed: logs kept until the retention ends", {},
         [exited(0, held=False, at=50)], retain=3600, want=["Wakeup(3650)"]),
    Case("finished by itself, retention over: removed", {}, [exited(0, held=False, at=50)], now=3650, retain=3600,
         want=["Remove(j/0#1)"]),
    Case("stopped because unassigned: removed at once despite retention", {},
         [exited(143, held=False, stop_requested=True)], retain=3600, want=["Remove(j/0#1)"]),
    Case("reassigned: the finished copy is kept, the new placement starts", want(rev=9),
         [exited(0, rev=7, held=False, at=50)], retain=3600, want=["Start(j/0#2)", "Wakeup(3650)"]),
    # rule 6: the scheduler asks the placement to stop (preempted, evicted, suspended, resized)
    Case("stopping: the running attempt is stopped with its grace, nothing reported yet",
         want(stopping="preempted", grace_s=5), [running(grace_s=5)], {"j/0": Reported(7, 1, Phase.RUNNING)},
         want=["Stop(j/0#1 5)"]),
    Case("stopping, stop already requested: wait", want(stopping="preempted"), [running(stop_requested=True)],
         {"j/0": Reported(7, 1, Phase.RUNNING)}, want=[]),
    Case("stopping, the attempt ended: Killed reported at once", want(stopping="preempted"),
         [exited(143, stop_requested=True)], {"j/0": Reported(7, 1, Phase.RUNNING)},
         want=["Cleanup(j/0#1)", "Report(j/0#1 Failed Killed)"]),
    Case("stopping, the attempt checkpointed and exited 0: Succeeded", want(stopping="suspend"),
         [exited(0, stop_requested=True, held=False)], {"j/0": Reported(7, 1, Phase.RUNNING)},
         want=["Report(j/0#1 Succeeded Completed)"]),
    Case("stopping before the task started: nothing starts, Killed at attempt 0", want(stopping="preempted"), [],
         want=["Report(j/0#0 Failed Killed)"]),
    Case("stopping during a restart's backoff: no restart, the last exit reported",
         want(stopping="preempted", policy="OnFailure"), [exited(3, held=False, at=95)],
         {"j/0": Reported(7, 1, Phase.PENDING, "BackOff")}, want=["Report(j/0#1 Failed Error)"]),
    Case("stopping, end already reported: nothing", want(stopping="preempted"),
         [exited(143, stop_requested=True, held=False)], {"j/0": Reported(7, 1, Phase.FAILED, "Killed")}, want=[]),
    Case("stopping, then the assignment deleted: removed", {}, [exited(143, stop_requested=True, held=False)],
         {"j/0": Reported(7, 1, Phase.FAILED, "Killed")}, want=["Remove(j/0#1)"]),
    # rule 3: never start on a GPU a live attempt of another task holds (a cancelled run's grace period)
    Case("a GPU still held by another task's stopping attempt: wait, Pending WaitingForGPUs once",
         want(gpus=(0, 1)), [running(key="k/0", rev=3, gpus=(1, 2), stop_requested=True)],
         want=["Report(j/0#0 Pending WaitingForGPUs)"]),
    Case("the wait already reported: nothing", want(gpus=(0, 1)),
         [running(key="k/0", rev=3, gpus=(1,), stop_requested=True)], {"j/0": Reported(7, 0, Phase.PENDING, "WaitingForGPUs")},
         want=[]),
    Case("the holder deleted and still running: stopped, and the task waits", want(gpus=(1,)),
         [running(key="k/0", rev=3, gpus=(1,))], want=["Report(j/0#0 Pending WaitingForGPUs)", "Stop(k/0#1 30)"]),
    Case("the holder has exited: the task starts", want(gpus=(0, 1)),
         [exited(143, key="k/0", rev=3, stop_requested=True, held=False)], {"j/0": Reported(7, 0, Phase.PENDING)},
         want=["Start(j/0#1)", "Remove(k/0#1)"]),
    Case("other GPUs in use: starts at once", want(gpus=(0,)), [running(key="k/0", rev=3, gpus=(1,))],
         {"k/0": Reported(3, 1, Phase.RUNNING)}, want=["Start(j/0#1)", "Stop(k/0#1 30)"]),
    Case("a restart after backoff waits for another task on its GPU", want(policy="OnFailure", gpus=(0,)),
         [exited(3, held=False, at=85), running(key="k/0", rev=3, gpus=(0,), stop_requested=True)],
         {"j/0": Reported(7, 1, Phase.PENDING, "BackOff")}, want=[]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_table(case: Case) -> None:
    actions = reconcile(case.desired, case.observed, case.reported, case.now, stimulus_id="s1", backoff=B,
                        fenced=case.fenced, retain_finished_s=case.retain)
    assert kinds(actions) == case.want
    assert all(a.stimulus_id == "s1" for a in actions)


def test_backoff_doubles_to_cap_and_resets() -> None:
    assert [backoff_s(n, 1.0, B) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]
    assert backoff_s(6, 601.0, B) == 10


def test_the_wait_for_gpus_names_them_and_their_holders() -> None:
    [report] = reconcile(want(gpus=(0, 1, 2)), [running(key="a/0", rev=3, gpus=(2,), stop_requested=True),
                                                running(key="b/1", rev=4, gpus=(0,), stop_requested=True)],
                         {}, 100, stimulus_id="x", backoff=B)
    assert isinstance(report, Report)
    assert report.status.message == "GPU 0, 2 still in use by a/0, b/1"


def test_two_tasks_assigned_one_gpu_never_start_together() -> None:
    """Assignments written by hand (kvctl) may name a GPU twice: both tasks were started in
    the same pass, since only live attempts counted as holding GPUs. The first (in key order)
    starts; the other waits for the GPU as it would for a stopping task."""
    desired = {k: Assignment(k, 5, spec(gpus=(0, 1) if k == "a/0" else (1, 2))) for k in ("a/0", "b/0")}
    actions = reconcile(desired, [], {}, 0.0, stimulus_id="s", backoff=B)
    assert [(type(a).__name__, a.key) for a in actions] == [("Start", "a/0"), ("Report", "b/0")]
    waiting = actions[1]
    assert isinstance(waiting, Report)
    assert (waiting.status.reason, waiting.status.message) == ("WaitingForGPUs", "GPU 1 still in use by a/0")


def test_a_stopped_task_says_who_stopped_it() -> None:
    [report] = reconcile(want(stopping="resize"), [exited(143, signal=15, stop_requested=True, held=False)],
                         {}, 100, stimulus_id="x", backoff=B)
    assert isinstance(report, Report)
    assert (report.status.reason, report.status.message) == ("Killed", "stopped by the scheduler (resize)")
    [report] = reconcile(want(stopping="preempted"), [], {}, 100, stimulus_id="x", backoff=B)
    assert isinstance(report, Report)
    assert report.status.message == "stopped before it started (preempted)"


@pytest.mark.parametrize(("stopping", "want"), [
    ({"reason": "preempted", "since": 1.0}, "preempted"), (None, ""), (False, ""), ({}, "stopping"),
    ({"reason": 7}, "stopping"), ("yes", "stopping"), (1, "stopping"),
], ids=["reason", "null", "false", "empty", "reason-not-text", "text", "number"])
def test_a_stop_request_is_never_lost_to_a_malformed_field(stopping: object, want: str) -> None:
    doc = {"spec": {"command": ["x"]}, "stopping": stopping}
    assert parse_assignment("j/t", 1, doc).stopping == want
    assert parse_assignment("j/t", 1, dict(doc, spec={"command": []})).stopping == want  # also with a bad spec


def test_exit_details_carried() -> None:
    [_, report] = reconcile(want(), [exited(137, signal=9, oom=True)], {}, 100, stimulus_id="x", backoff=B)
    assert isinstance(report, Report)
    s = report.status.to_json()
    assert (s["exit_code"], s["signal"], s["oom_killed"], s["reason"], s["finished_at"]) == (137, 9, True, "OOMKilled", 50.0)


def test_a_restart_after_a_lost_later_attempt_takes_a_new_number() -> None:
    """Attempt 2 of this placement ran and was reported (its backoff), then its directory was
    lost; attempt 1 is still there. The restart is attempt 3: reusing 2 made its reports 'not
    newer' than the old ones (found by test_properties, CI-like run of 2026-12-06)."""
    actions = reconcile(want(policy="OnFailure"), [exited(1, attempt=1, at=1.0, held=False)],
                        {"j/0": Reported(7, 2, Phase.PENDING)}, 1000.0, stimulus_id="x", backoff=B)
    assert [(type(a).__name__, getattr(a, "attempt", None)) for a in actions if isinstance(a, Start)] == [("Start", 3)]


# ---- properties -------------------------------------------------------------------------

KEYS = ["a/0", "a/1", "b/0"]
STATES = list(AttemptState)


@st.composite
def world(draw):
    desired = {}
    for key in draw(st.lists(st.sampled_from(KEYS), unique=True)):
        rev = draw(st.integers(1, 3))
        pol = draw(st.sampled_from(["Never", "OnFailure", "Always"]))
        desired[key] = Assignment(key, rev, spec(policy=pol, max_restarts=draw(st.none() | st.integers(0, 3)),
                                                 gpus=tuple(draw(st.sets(st.integers(0, 3), max_size=2)))),
                                  stopping=draw(st.sampled_from(["", "", "preempted"])))
    observed = []
    for key in KEYS:
        n = draw(st.integers(0, 3))
        for attempt in range(1, n + 1):
            state = draw(st.sampled_from(STATES))
            ex = None
            if state is AttemptState.EXITED:
                ex = ExitInfo(draw(st.integers(0, 3)), None, False, draw(st.floats(0, 200)))
            observed.append(Observed(key, attempt, draw(st.integers(1, 3)), state, started_at_s=0.0, exit=ex,
                                     stop_requested=draw(st.booleans()), held=draw(st.booleans()),
                                     gpus=tuple(draw(st.sets(st.integers(0, 3), max_size=2)))))
    reported = {}
    for key in draw(st.lists(st.sampled_from(KEYS), unique=True)):
        reported[key] = Reported(draw(st.integers(1, 3)), draw(st.integers(0, 3)), draw(st.sampled_from(list(Phase))))
    return desired, observed, reported, draw(st.floats(0, 1000))


@settings(max_examples=300, deadline=None)
@given(world())
def test_properties(w) -> None:
    desired, observed, reported, now = w
    actions = reconcile(desired, observed, reported, now, stimulus_id="p", backoff=B)
    assert actions == reconcile(desired, observed, reported, now, stimulus_id="p", backoff=B)  # deterministic
    starts = [a for a in actions if isinstance(a, Start)]
    assert len({a.key for a in starts}) == len(starts), "at most one start per task"
    started_gpus = [g for s in starts for g in s.spec.resources.gpus]
    assert len(set(started_gpus)) == len(started_gpus), "no GPU given to two starts"
    for s in starts:
        attempts = [o for o in observed if o.key == s.key]
        assert not any(o.live for o in attempts), "never start next to a live copy"
        assert not any(o.live and set(o.gpus) & set(desired[s.key].spec.resources.gpus) for o in observed), \
            "never start on a GPU a live attempt holds"
        rep = reported.get(s.key)
        ran = rep.attempt if rep is not None and rep.revision == s.revision else 0
        assert s.attempt == max([o.attempt for o in attempts] + [ran]) + 1, "attempt numbers are never reused"
        assert s.key in desired and s.revision == desired[s.key].revision
    for a in actions:
        if isinstance(a, Report):
            assert a.key in desired and a.revision == desired[a.key].revision, "reports only for the current placement"
        if isinstance(a, Stop | Remove | Cleanup):
            o = next(o for o in observed if o.key == a.key and o.attempt == a.attempt)
            if isinstance(a, Stop):
                assert o.live and not o.stop_requested
            if isinstance(a, Remove):
                assert not o.live and not o.held
                assert a.key not in desired or desired[a.key].revision != o.revision
            if isinstance(a, Cleanup):
                assert not o.live and o.held
    assert not any(desired[s.key].stopping for s in starts), "a stopping placement starts nothing"
    # every live attempt of a removed or stopping placement gets stopped (unless already stopping)
    for o in observed:
        gone = o.key not in desired or desired[o.key].revision != o.revision or desired[o.key].stopping
        if gone and o.live and not o.stop_requested:
            assert any(isinstance(a, Stop) and (a.key, a.attempt) == (o.key, o.attempt) for a in actions)


@settings(max_examples=200, deadline=None)
@given(world())
def test_applying_actions_reaches_a_fixed_point(w) -> None:
    """Carry out the actions in a model world; the next reconcile never repeats a report or
    starts the same attempt twice (idempotence across agent restarts)."""
    desired, observed, reported, now = w
    obs = {(o.key, o.attempt): o for o in observed}
    rep = dict(reported)
    for _ in range(6):
        actions = reconcile(desired, list(obs.values()), rep, now, stimulus_id="f", backoff=B)
        for a in actions:
            if isinstance(a, Start):
                assert (a.key, a.attempt) not in obs
                obs[(a.key, a.attempt)] = Observed(a.key, a.attempt, a.revision, AttemptState.RUNNING, started_at_s=now)
            elif isinstance(a, Report):
                prev = rep.get(a.key)
                assert prev is None or (prev.revision, prev.attempt, prev.phase) != (a.revision, a.status.attempt, a.status.phase)
                rep[a.key] = Reported(a.revision, a.status.attempt, a.status.phase, a.status.reason)
            elif isinstance(a, Stop):
                obs[(a.key, a.attempt)] = replace(obs[(a.key, a.attempt)], stop_requested=True)
            elif isinstance(a, Cleanup):
                obs[(a.key, a.attempt)] = replace(obs[(a.key, a.attempt)], held=False)
            elif isinstance(a, Remove):
                del obs[(a.key, a.attempt)]
        for k, o in list(obs.items()):  # a stop ends the task before the next round
            if o.live and o.stop_requested:
                obs[k] = replace(o, state=AttemptState.EXITED, exit=ExitInfo(143, None, False, now))
        now += 1000  # every backoff ends
    for key, a in desired.items():
        mine = [o for o in obs.values() if o.key == key and o.revision == a.revision]
        if a.stopping:  # stopped, and its end reported for the scheduler to release the run
            assert not any(o.live for o in mine)
            if key in reported and reported[key].revision > a.revision:
                continue  # a newer placement's status (a lagging watch): never overwritten
            assert rep[key].revision == a.revision and rep[key].phase in (Phase.SUCCEEDED, Phase.FAILED)
        elif not mine:  # only a task of another placement that runs on, on one of its GPUs, keeps it out,
            gpus = set(a.spec.resources.gpus)  # or the reported end of this placement (its attempts gone)
            ended = key in rep and rep[key].revision == a.revision and rep[key].phase in (Phase.SUCCEEDED, Phase.FAILED)
            assert ended or any(o.live and o.key != key and set(o.gpus) & gpus for o in obs.values()), \
                f"{key} never started"


@pytest.mark.parametrize(("spec", "want"), [
    ({"command": ["x"], "grace_s": float("nan")}, "spec.grace_s: must be a finite number >= 0, not nan"),
    ({"command": ["x"], "grace_s": float("inf")}, "spec.grace_s: must be a finite number >= 0, not inf"),
    ({"command": ["x"], "user": [True, 0]}, "spec.user: must be [uid, gid], not [True, 0]"),
    ({"command": ["x"], "env": {"A": "b\0c"}}, "spec.env.A: contains a NUL character"),
    ({"command": ["/bin/x\0"]}, "spec.command[0]: contains a NUL character"),
    ({"command": ["x"], "grace_s": 10**400}, "spec.grace_s: must be a finite number >= 0, not an integer of 1329 bits"),
    ({"command": ["x"], "resources": {"memory_mib": 2**63}},
     "spec.resources.memory_mib: must be <= 8796093022207, not 9223372036854775808"),
    # 2^50 MiB is 2^70 bytes: the kernel took that limit as 0, and OOM-killed the supervisor
    # as it stepped into the task's cgroup to start it (the task was reported Lost)
    ({"command": ["x"], "resources": {"memory_mib": 2**50}},
     "spec.resources.memory_mib: must be <= 8796093022207, not 1125899906842624"),
], ids=["grace-nan", "grace-inf", "user-bool", "env-nul", "command-nul", "grace-huge", "memory-huge",
        "memory-bytes-overflow"])
def test_a_spec_with_numbers_that_are_not_numbers_is_invalid(spec: dict[str, object], want: str) -> None:
    """grace_s NaN passed (NaN < 0 is False) and became the SIGTERM-to-SIGKILL wait; a NUL in
    an argument or a variable passed, and the task's supervisor died of ValueError('embedded
    null byte') after the start (a failure that did not name the field)."""
    a = parse_assignment("j/t", 1, {"spec": spec})
    assert (a.spec, a.error) == (None, want)


@pytest.mark.parametrize(("spec", "want"), [
    ({"command": ["sh", "-c", "echo $X"], "env": {"X": "\ud800"}}, "spec.env.X: is not valid UTF-8 (a lone surrogate)"),
    ({"command": ["env"], "env": {"\udcff": "v"}}, "spec.env key: is not valid UTF-8 (a lone surrogate)"),
    ({"command": ["/bin/\ud800"]}, "spec.command[0]: is not valid UTF-8 (a lone surrogate)"),
    ({"command": ["true"], "workdir": "/tmp/\udfff"}, "spec.workdir: is not valid UTF-8 (a lone surrogate)"),
], ids=["env-value", "env-name", "command", "workdir"])
def test_a_spec_string_that_is_not_utf8_is_invalid(spec: dict[str, object], want: str) -> None:
    """JSON's \\ud800 escapes decode to a lone surrogate, which no argv, environment or path
    can carry: the supervisor died of UnicodeEncodeError after the start, and the task was
    reported Failed/Lost ("the task's supervisor died") instead of naming the field."""
    a = parse_assignment("j/t", 1, json.loads(json.dumps({"spec": spec})))
    assert (a.spec, a.error) == (None, want)


@pytest.mark.parametrize(("value", "want"), [
    (None, "spec.env.X: must be a string, not None"),
    ({"a": 1}, "spec.env.X: must be a string, not {'a': 1}"),
    ([1, 2], "spec.env.X: must be a string, not [1, 2]"),
    (float("inf"), "spec.env.X: must be a string, not inf"),
], ids=["null", "object", "list", "inf"])
def test_an_env_value_that_is_no_text_is_invalid(value: object, want: str) -> None:
    """A null, an object or a list became the text of its Python repr ("None", "{'a': 1}"):
    the task ran with nonsense in its environment. Numbers and booleans still become text,
    as a job file's do (scheduler/jobs.py)."""
    assert parse_assignment("j/t", 1, {"spec": {"command": ["x"], "env": {"X": value}}}).error == want
    ok = parse_assignment("j/t", 1, {"spec": {"command": ["x"], "env": {"A": "a", "N": 3, "F": 0.5}}})
    assert ok.spec is not None and dict(ok.spec.env) == {"A": "a", "N": "3", "F": "0.5"}


@pytest.mark.parametrize("cpuset", ["3-1", ",,", "1,", "-2", "0--3", "1-2-3"])
def test_a_cpuset_that_is_no_cpu_list_is_invalid(cpuset: str) -> None:
    """Only the characters were checked: '3-1' failed at the start ('cgroup setup failed:
    Invalid argument' from the kernel, or runc's error), and ',,' killed the spawn ('Exception
    occurred in preexec_fn'), StartErrors that did not name the field."""
    assert parse_assignment("j/t", 1, {"spec": {"command": ["x"], "resources": {"cpuset": cpuset}}}).error == \
        f"spec.resources.cpuset: must look like '0-3,6', not {cpuset!r}"
    for good in ("0", "0-3", "0-3,6", "1,3,5-7"):
        assert parse_assignment("j/t", 1, {"spec": {"command": ["x"], "resources": {"cpuset": good}}}).error == ""


@pytest.mark.parametrize("workdir", ["relative/dir", "./x", "workdir"])
def test_a_relative_workdir_is_invalid(workdir: str) -> None:
    """The process runtime looked for a relative work dir from the agent's own working
    directory (the task ran wherever that led, if it existed there); runc refuses one at its
    start ('cwd property must be an absolute path'), Docker too."""
    assert parse_assignment("j/t", 1, {"spec": {"command": ["x"], "workdir": workdir}}).error == \
        f"spec.workdir: must be an absolute path, not {workdir!r}"


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
                     # an int no float or int64 can hold (grace_s: 1000...0 raised OverflowError)
                     | st.integers(min_value=2**63, max_value=10**400),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                         st.sampled_from(["spec", "command", "image", "env", "resources", "gpus", "grace_s", "user",
                                          "network", "workdir", "restart_policy", "max_restarts", "cpuset",
                                          "memory_mib", "pids", "cpu_milli", "rdma"]) | st.text(max_size=4),
                         inner, max_size=6), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_parse_assignment_takes_any_json_value(doc: object) -> None:
    """The documented contract: never raises on user input; a spec or the reason it is none."""
    for value in (doc, {"spec": doc}, {"spec": {"command": ["x"], "resources": doc}}):
        a = parse_assignment("j/t", 1, value)
        assert (a.spec is None) == bool(a.error)
        if a.spec is not None:
            a.spec.to_json()
