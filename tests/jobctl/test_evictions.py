"""Eviction requests (``/registry/evictions/<job>``, ``jobctl drain --requeue`` and
``jobctl requeue``) on the pure parts: the decoder, the view, and ``scheduler.evictions.decide``,
including what a leader that took over does with a request that outlived its eviction."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

import pytest

from scheduler import decode
from scheduler.evictions import Verdict, cause, decide, request_doc
from scheduler.informer_view import Binding, ClusterView
from tests.jobctl.test_informer import SPEC, FakeClient, node

REQ = request_doc("j", "drain", "n3", 4711, "jobctl", 1796170000.0)


def test_a_request_jobctl_writes_decodes_to_what_it_says() -> None:
    req = decode.eviction("j", REQ)
    assert req == decode.EvictionRequest("j", "drain", "n3", 4711, 1796170000.0, "jobctl")
    assert cause(req) == "node n3 drained by jobctl"
    again = decode.eviction("j", request_doc("j", "requeue", None, 9, "jobctl (user alice)", 1.0))
    assert (again.node, cause(again)) == (None, "requeued by jobctl (user alice)")


@pytest.mark.parametrize(("doc", "why"), [
    ([1, 2], "eviction request: must be a JSON object, not list"),
    (dict(REQ, job="other"), "job: 'other' is not the key's name 'j'"),
    (dict(REQ, reason="maintenance"), "reason: must be one of drain, requeue, not 'maintenance'"),
    (dict(REQ, node=None), "node: must be a name without '/', not None"),
    (dict(REQ, node="../n3"), "node: must be a name without '/', not '../n3'"),
    ({k: v for k, v in REQ.items() if k != "binding_revision"}, "binding_revision: required field is missing"),
    (dict(REQ, binding_revision=0), "binding_revision: must be an integer in [1, "),
    (dict(REQ, binding_revision="4711"), "binding_revision: must be an integer"),
    (dict(REQ, requested_at=float("nan")), "requested_at: must be a finite number"),
    (dict(REQ, by="x" * 101), "by: must be printable text of at most 100 characters"),
    (dict(REQ, by="jobctl\nFAKE LOG LINE"), "by: must be printable text"),
], ids=["a-list", "another-job", "bad-reason", "drain-without-node", "node-path", "no-run", "run-zero", "run-text",
        "time-nan", "by-long", "by-newline"])
def test_a_request_that_does_not_decode_names_the_field(doc: Any, why: str) -> None:
    with pytest.raises(decode.Malformed) as exc:
        decode.eviction("j", doc)
    assert str(exc.value).startswith(why), str(exc.value)


def test_the_binding_carries_the_cause_of_an_eviction_and_a_bad_one_is_its_problem() -> None:
    row = {"task": "w-0", "node": "n1", "rack": "r0", "gpus": [0, 1], "index": 0}
    b = {"job": "j", "tasks": [row], "bound_at": 1.0, "evicting_until": 5.0,
         "eviction": {"reason": "drain", "message": "node n1 drained by jobctl"}}
    assert decode.binding_eviction(b) == ("drain", "node n1 drained by jobctl")
    assert decode.binding_eviction(dict(b, eviction=None)) == ("", "")  # a preemption
    view = ClusterView()
    c = FakeClient()
    view.apply([c.put("/registry/jobs/j", SPEC), c.put("/registry/bindings/j", b)], c.rev)
    got = view.bindings["j"]
    assert (got.evicted_for, got.eviction_message, got.problem) == ("drain", "node n1 drained by jobctl", "")
    view.apply([c.put("/registry/bindings/j", dict(b, eviction={"reason": 7}))], c.rev)
    got = view.bindings["j"]
    assert got.problem == "eviction.reason: must be one of drain, requeue, suspend, resize, cancel, restart, fail, deadline, not 7" and got.evicted_for == ""
    assert "/registry/bindings/j" in view.invalid  # and the lifecycle releases the run (InvalidBinding)


def test_the_view_keeps_requests_that_decode_and_skips_the_others_with_the_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    view = ClusterView()
    c = FakeClient()
    view.apply([c.put("/registry/evictions/j", REQ)], c.rev)
    assert view.evictions["j"].doc == decode.eviction("j", REQ)
    _, jobs, _ = view.take_dirty()
    assert jobs == {"j"}  # the daemon's pass looks at it
    with caplog.at_level(logging.WARNING, logger="kvraft.scheduler.view"):
        view.apply([c.put("/registry/evictions/j", dict(REQ, job="k"))], c.rev)
    assert "j" not in view.evictions  # not acted on: not even the valid value it replaced
    assert view.invalid["/registry/evictions/j"] == ("job: 'k' is not the key's name 'j' "
                                                    "(the request is not acted on)")
    warned = [r for r in caplog.records if r.getMessage() == "malformed value skipped"]
    assert [r.fields["key"] for r in warned] == ["/registry/evictions/j"]  # type: ignore[attr-defined]
    view.apply([c.put("/registry/evictions/j", REQ)], c.rev)
    assert "j" in view.evictions and "/registry/evictions/j" not in view.invalid
    view.apply([c.delete("/registry/evictions/j")], c.rev)
    assert view.evictions == {}
    # a relist (a new leader's first view) marks every request's job dirty
    view.apply([c.put("/registry/evictions/k", dict(REQ, job="k"))], c.rev)
    view.take_dirty()
    view.replace(list(c.data.values()), c.rev)
    assert "k" in view.take_dirty()[1]


# --- decide: one row per outcome ---------------------------------------------------------------

RUN = Binding("j", ({"task": "w-0", "node": "n3", "rack": "r0", "gpus": [0], "index": 0},
                    {"task": "w-1", "node": "n4", "rack": "r0", "gpus": [0], "index": 1}),
              bound_at=100.0, evicting_until=None, revision=4711, mod_revision=4711)


@dataclass(frozen=True)
class Case:
    name: str
    want: Verdict
    binding: Binding | None = RUN
    request: dict[str, Any] | None = None
    known: bool = True
    cancelled: bool = False
    phase: str = "Running"
    unfit: str = ""


CASES = [
    Case("drain-evicts", Verdict(True, "node n3 drained by jobctl")),
    Case("requeue-evicts", Verdict(True, "requeued by jobctl"), request=dict(REQ, reason="requeue", node=None)),
    Case("anonymous", Verdict(True, "node n3 drained by an operator"), request=dict(REQ, by="")),
    Case("unknown-job", Verdict(False, "no such job"), binding=None, known=False),
    Case("finished", Verdict(False, "the job has finished (Succeeded)"), binding=None, phase="Succeeded"),
    Case("pending", Verdict(False, "the job is not running (Pending): nothing to evict"), binding=None,
         phase="Pending"),
    Case("next-run", Verdict(False, "it is for the run bound at revision 4711, which has ended; the run bound at "
                                    "revision 4790 is left alone"), binding=replace(RUN, revision=4790)),
    Case("preempting", Verdict(False, "the run is already being evicted (preempted)"),
         binding=replace(RUN, evicting_until=130.0)),
    Case("evicting", Verdict(False, "the run is already being evicted (node n3 drained by jobctl)"),
         binding=replace(RUN, evicting_until=130.0, evicted_for="drain", eviction_message="node n3 drained by jobctl")),
    Case("cancelled", Verdict(False, "the job is cancelled: its run is being stopped"), cancelled=True),
    Case("broken-binding", Verdict(False, "the run is being released: tasks[1].gpus: bad"),
         binding=replace(RUN, problem="tasks[1].gpus: bad")),
    Case("unfit", Verdict(False, "the run is being released: node n4 is not a known node"),
         unfit="node n4 is not a known node"),
    Case("other-node", Verdict(False, "the run does not use node n5"), request=dict(REQ, node="n5")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    req = decode.eviction("j", case.request or REQ)
    assert decide(req, case.binding, known=case.known, cancelled=case.cancelled, phase=case.phase,
                  unfit=case.unfit) == case.want


def test_a_request_that_outlives_its_eviction_never_evicts_the_next_run() -> None:
    """A leader evicts run 4711 and dies before the request is deleted (the daemon deletes it in
    the evicting txn, so this needs an older daemon, a person who puts it again, or a request
    read from a lagging view): the leader after it sees the request during the grace period,
    and again once the job runs again; it drops it both times."""
    view = ClusterView()
    c = FakeClient()
    row = {"task": "w-0", "node": "n3", "rack": "r0", "gpus": [0, 1], "index": 0}
    view.apply([c.put("/registry/nodes/n3", node("n3")), c.put("/registry/jobs/j", SPEC),
                c.put("/registry/bindings/j", {"job": "j", "tasks": [row], "bound_at": 1.0})], c.rev)
    run = view.bindings["j"].revision
    view.apply([c.put("/registry/evictions/j", dict(REQ, node="n3", binding_revision=run))], c.rev)

    def verdict() -> Verdict:
        return decide(view.evictions["j"].doc, view.bindings.get("j"), known=True, cancelled=False,
                      phase=view.phase("j"))

    assert verdict().evict
    # the old leader's evicting txn: the binding is marked, the request (wrongly) stays
    view.apply([c.put("/registry/bindings/j", {"job": "j", "tasks": [row], "bound_at": 1.0, "evicting_until": 31.0,
                                              "eviction": {"reason": "drain", "message": "node n3 drained by jobctl"}})],
               c.rev)
    assert verdict() == Verdict(False, "the run is already being evicted (node n3 drained by jobctl)")
    # released after the grace period, then bound again on n4: a new run
    view.apply([c.delete("/registry/bindings/j")], c.rev)
    assert not verdict().evict
    view.apply([c.put("/registry/bindings/j", {"job": "j", "tasks": [dict(row, node="n4")], "bound_at": 40.0})],
               c.rev)
    assert view.bindings["j"].revision != run
    assert verdict() == Verdict(False, f"it is for the run bound at revision {run}, which has ended; the run bound "
                                       f"at revision {view.bindings['j'].revision} is left alone")


ROW = b'{"tasks": [{"task": "w-0", "node": "n1", "rack": "r", "gpus": [0], "index": 0}], "bound_at": 1.0'


@pytest.mark.parametrize("spec, binding, status, node, expected", [
    (None, None, None, None, (None, "job/j not found: nothing to requeue", False)),
    (b"{}", None, b'{"phase": "Pending"}', None, (None, "job/j is not running (Pending): nothing to requeue", True)),
    (b"{}", None, b"[not json", None, (None, "job/j is not running (Pending): nothing to requeue", True)),
    (b"{}", (ROW + b', "evicting_until": 5.0}', 40), None, None,
     (None, "job/j is already being stopped (evicted or preempted): it will be queued again", True)),
    (b"{}", (ROW + b', "evicting_until": null}', 40), None, "n2",
     (None, "job/j does not run on n2: nothing to requeue", True)),
    (b"{}", (ROW + b', "evicting_until": null}', 40), None, "n1",
     (40, "job/j requeue requested", True)),
])
def test_prepare_says_what_a_requester_asks_for(spec, binding, status, node, expected) -> None:  # type: ignore[no-untyped-def]
    """What jobctl requeue / drain --requeue and the dashboard's Requeue button write, or why not."""
    from scheduler.evictions import prepare

    got = prepare("j", "drain" if node else "requeue", node, "jobctl", 7.0, spec=spec, binding=binding, status=status)
    revision, message, found = expected
    assert (got.message, got.found) == (message, found)
    if revision is None:
        assert got.request is None
    else:
        assert got.request == {"job": "j", "reason": "drain", "node": node, "binding_revision": revision,
                               "requested_at": 7.0, "by": "jobctl"}
