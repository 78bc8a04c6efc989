"""The pure decision of ``scheduler.dependencies``: table-driven, deterministic."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.dependencies import (
    Dependency,
    Verdict,
    collect_hold,
    cycle,
    decide,
    status_update,
    submit_order,
)
from scheduler.jobs import normalize_job, validate_job


@dataclass(frozen=True)
class Case:
    name: str
    deps: tuple[Dependency, ...]
    phases: dict[str, str]  # the jobs that exist, with their phase
    record: dict[str, str] = field(default_factory=dict)
    want: Verdict = Verdict("met", "")


OK, ANY = "succeeded", "finished"
CASES = [
    Case("met", (Dependency("prep"),), {"prep": "Succeeded"}, want=Verdict("met", "", {"prep": "Succeeded"})),
    Case("unmet running", (Dependency("prep"),), {"prep": "Running"},
         want=Verdict("waiting", "waiting for job prep to succeed (Running)")),
    Case("unmet pending", (Dependency("prep", ANY),), {"prep": "Pending"},
         want=Verdict("waiting", "waiting for job prep to finish (Pending)")),
    Case("failed dependency", (Dependency("prep"),), {"prep": "Failed"}, want=Verdict("never", "job prep ended Failed")),
    Case("cancelled dependency", (Dependency("prep"),), {"prep": "Cancelled"},
         want=Verdict("never", "job prep ended Cancelled")),
    Case("finished after a failure", (Dependency("prep", ANY),), {"prep": "Failed"},
         want=Verdict("met", "", {"prep": "Failed"})),
    Case("finished after a cancel", (Dependency("prep", ANY),), {"prep": "Cancelled"},
         want=Verdict("met", "", {"prep": "Cancelled"})),
    Case("missing, nothing recorded", (Dependency("prep"),), {}, want=Verdict("never", "job prep not found")),
    Case("missing, recorded met", (Dependency("prep"),), {}, {"prep": "Succeeded"},
         want=Verdict("met", "", {"prep": "Succeeded"})),
    Case("recorded wins over a new job of the name", (Dependency("prep"),), {"prep": "Running"}, {"prep": "Succeeded"},
         want=Verdict("met", "", {"prep": "Succeeded"})),
    Case("a recorded outcome that does not meet the condition is not final", (Dependency("prep"),),
         {"prep": "Running"}, {"prep": "Failed"},
         want=Verdict("waiting", "waiting for job prep to succeed (Running)", {"prep": "Failed"})),
    Case("two waiting, one met: all unmet named in order",
         (Dependency("a"), Dependency("b", ANY), Dependency("c")), {"a": "Running", "b": "Succeeded", "c": "Pending"},
         want=Verdict("waiting", "waiting for job a to succeed (Running); job c to succeed (Pending)",
                      {"b": "Succeeded"})),
    Case("one never wins over waiting", (Dependency("a"), Dependency("b")), {"a": "Running", "b": "Failed"},
         want=Verdict("never", "job b ended Failed")),
    Case("cascade: a dependent failed for its dependency is itself Failed", (Dependency("train"),),
         {"train": "Failed"}, want=Verdict("never", "job train ended Failed")),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    asked: list[str] = []

    def phase_of(job: str) -> str | None:
        asked.append(job)
        return case.phases.get(job)

    assert decide(case.deps, case.record, phase_of) == case.want
    assert decide(case.deps, case.record, phase_of) == case.want  # deterministic, no state
    met_by_record = {j for j, p in case.record.items() if p == "Succeeded"}
    assert not met_by_record & set(asked)  # a recorded outcome is final: that job is not even looked up


def test_status_update() -> None:
    st = {"name": "t", "phase": "Pending", "reason": "Queued", "restarts": 0}
    doc, event = status_update(st, Verdict("waiting", "waiting for job p to succeed (Running)", {"q": "Succeeded"}), 5.0)
    assert doc == dict(st, reason="Dependency", plugin="dependencies", message="waiting for job p to succeed (Running)",
                       dependencies={"q": "Succeeded"}) and event == ""
    assert status_update(doc, Verdict("waiting", doc["message"], {"q": "Succeeded"}), 6.0) == (None, "")  # unchanged
    doc, event = status_update(st, Verdict("never", "job p ended Failed"), 7.0)
    assert doc is not None and (doc["phase"], doc["reason"], doc["message"], doc["finished_at"]) == (
        "Failed", "DependencyNeverSatisfied", "job p ended Failed", 7.0) and event == "job p ended Failed"
    doc, event = status_update(st, Verdict("met", "", {"p": "Succeeded"}), 8.0)  # only the record; the core says the rest
    assert doc == dict(st, dependencies={"p": "Succeeded"}) and event == ""
    assert status_update(st, Verdict("met", ""), 8.0) == (None, "")


def test_collect_hold() -> None:
    assert collect_hold("p", []) is None
    assert collect_hold("p", [("t", "Pending", {})]) == "job t depends on it and has not recorded its outcome yet"
    assert collect_hold("p", [("t", "Pending", {"p": "Succeeded"})]) is None
    assert collect_hold("p", [("t", "Failed", {})]) is None  # a finished dependent needs nothing any more


@pytest.mark.parametrize(("graph", "want"), [
    ({"a": [], "b": ["a"], "c": ["b", "x"]}, None),
    ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
    ({"a": [], "b": ["c"], "c": ["d"], "d": ["b"]}, ["b", "c", "d", "b"]),
    ({"a": ["x"], "x2": ["x2"]}, ["x2", "x2"]),
], ids=["acyclic", "two", "three", "self"])
def test_cycle(graph: dict[str, list[str]], want: list[str] | None) -> None:
    assert cycle(graph) == want


def test_submit_order_writes_dependencies_first() -> None:
    assert submit_order({"eval": ["train"], "train": ["prep", "elsewhere"], "prep": [], "other": []}) == [
        "prep", "train", "eval", "other"]


@pytest.mark.parametrize(("deps", "want"), [
    ([{"job": "j"}], ["depends_on[0].job: a job cannot depend on itself (j)"]),
    ([{"job": "a"}, {"job": "a", "condition": "finished"}], ["depends_on[1].job: depends on job a twice (also depends_on[0])"]),
    ([{"job": "A"}], ["depends_on[0].job: 'A' does not match ^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$"]),
    ([{"job": "a", "condition": "afterok"}], ["depends_on[0].condition: must be one of succeeded, finished, not 'afterok'"]),
    ([{"job": f"a{i}"} for i in range(17)], ["depends_on: at most 16 item(s)"]),
    ([{"job": "a", "when": 1}], ["depends_on[0].when: unknown field (known: condition, job)"]),
], ids=["self", "twice", "name", "condition", "seventeen", "unknown"])
def test_the_field_is_validated(deps: list[dict[str, object]], want: list[str]) -> None:
    doc = {"name": "j", "tasks": [{"name": "w", "command": "x"}], "depends_on": deps}
    assert [str(p) for p in validate_job(doc)] == want


def test_normalized_with_the_default_condition() -> None:
    doc = {"name": "j", "tasks": [{"name": "w", "command": "x"}], "depends_on": [{"job": "a"}, {"job": "b", "condition": "finished"}]}
    assert normalize_job(doc)["depends_on"] == [{"job": "a", "condition": "succeeded"}, {"job": "b", "condition": "finished"}]
    assert normalize_job(dict(doc, depends_on=[]))["depends_on"] == []


@dataclass
class _KV:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass
class _Ev:
    type: str
    kv: _KV


def test_the_view_holds_a_waiting_job_back_and_dirties_it_when_its_dependency_changes() -> None:
    """Without the dirty dependents, a daemon that is only watching (no relist) never fed train
    to the core after prep ended."""
    from scheduler.informer_view import ClusterView

    view, rev = ClusterView(), 0

    def put(key: str, doc: object) -> None:
        nonlocal rev
        rev += 1
        view.apply([_Ev("PUT", _KV(key.encode(), json.dumps(doc).encode(), rev, rev))], rev)

    put("/registry/jobs/prep", normalize_job({"name": "prep", "tasks": [{"name": "w", "command": "x"}]}))
    train = normalize_job({"name": "train", "tasks": [{"name": "w", "command": "x"}], "depends_on": [{"job": "prep"}]})
    put("/registry/jobs/train", train)
    assert view.job_model("prep") is not None and view.job_model("train") is None
    assert view.gated_jobs() == ["train"]
    view.take_dirty()
    put("/registry/jobstatus/prep", {"phase": "Succeeded"})
    assert view.take_dirty()[1] == {"prep", "train"}
    assert view.job_model("train") is not None
    put("/registry/jobs/train", dict(train, depends_on=[]))  # a spec changed: its old dependencies unindexed
    view.take_dirty()
    put("/registry/jobstatus/prep", {"phase": "Failed"})
    assert view.take_dirty()[1] == {"prep"} and view.dependents == {}


def test_recorded_outcomes_that_do_not_decode_are_read_as_missing() -> None:
    from scheduler import decode

    assert decode.job_status({"dependencies": {"prep": "Succeeded"}}) == (
        {"dependencies": {"prep": "Succeeded"}, "restarts": 0, "preemptions": 0, "evictions": 0}, [])
    for bad in ([1], {"prep": 1}, "Succeeded"):
        got, problems = decode.job_status({"phase": "Pending", "dependencies": bad})
        assert got == {"phase": "Pending", "restarts": 0, "preemptions": 0, "evictions": 0} and problems == [
            f"dependencies: must be an object of strings, not {bad!r}"]


def test_the_example_pipeline_is_valid_and_written_dependencies_first() -> None:
    from pathlib import Path

    from scheduler.cli.submit import _graph, validated_jobs

    path = Path(__file__).resolve().parents[2] / "examples" / "jobs" / "pipeline.yaml"
    docs = validated_jobs(path.read_text(), str(path))
    assert submit_order(_graph(docs)) == ["digits-prep", "digits-train", "digits-evaluate", "digits-cleanup"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefg"), st.lists(st.sampled_from("abcdefgxy"), max_size=3), max_size=7))
def test_cycle_and_submit_order_against_a_naive_reference(graph: dict[str, list[str]]) -> None:
    """A cycle found is a real path of the graph; none found means an order exists, and
    submit_order is one (every job after the jobs of the graph it depends on)."""
    found = cycle(graph)
    if found is not None:
        assert found[0] == found[-1] and len(found) >= 2
        assert all(b in graph[a] for a, b in zip(found, found[1:], strict=False))
        return
    order = submit_order(graph)
    assert sorted(order) == sorted(graph)
    for job, deps in graph.items():
        assert all(order.index(d) < order.index(job) for d in deps if d in graph)
    # naive reference: an acyclic graph can be emptied by removing jobs with no pending dependency
    left = dict(graph)
    while left:
        free = [j for j, deps in left.items() if not any(d in left for d in deps)]
        assert free, left
        for j in free:
            del left[j]


@pytest.mark.parametrize("graph, start, expected", [
    ({"a": ["b"], "b": ["a"]}, "a", ["a", "b", "a"]),
    ({"a": ["x", "b"], "b": ["c"], "c": ["a"]}, "a", ["a", "b", "c", "a"]),
    ({"a": ["b"], "b": ["c"], "c": ["b"]}, "a", None),   # a waits on a cycle it is not part of
    ({"a": ["b"], "b": []}, "a", None),
    ({"a": ["a"]}, "a", ["a", "a"]),
    ({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, "a", None),  # a diamond is no cycle
])
def test_cycle_through_finds_only_cycles_through_the_job(graph, start, expected) -> None:  # type: ignore[no-untyped-def]
    from scheduler.dependencies import cycle_through

    assert cycle_through(start, lambda j: graph.get(j) or None) == expected
