"""The informer with a fake client: list, watch from the listed revision, relist after a
compaction (deletions missed meanwhile are seen), and the view's translation to core events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvraft.client import WatchCompactedError
from scheduler import decode
from scheduler.informer import Informer
from scheduler.informer_view import ClusterView, CoreFeed
from scheduler.model import (
    JobAdded,
    JobBound,
    JobDeleted,
    JobEvicted,
    NodeAdded,
    NodeUpdated,
    Tenant,
)
from scheduler.profiles import profile
from scheduler.testing import cluster, make_node

from .store_values import KV, Ev, Header, Resp


class FakeClient:
    """A store with a revision counter; watch streams scripted per call."""

    def __init__(self) -> None:
        self.data: dict[str, KV] = {}
        self.rev = 0
        self.streams: list[Any] = []
        self.watch_starts: list[int] = []

    def put(self, key: str, doc: Any) -> Ev:
        self.rev += 1
        old = self.data.get(key)
        kv = KV(key.encode(), json.dumps(doc).encode(), old.create_revision if old else self.rev, self.rev)
        self.data[key] = kv
        return Ev("PUT", kv)

    def delete(self, key: str) -> Ev:
        self.rev += 1
        old = self.data.pop(key)
        return Ev("DELETE", KV(old.key, b"", 0, self.rev))

    async def get(self, key: str, **_: Any) -> Resp:
        return Resp(Header(self.rev), [kv for k, kv in sorted(self.data.items()) if k.startswith(key)])

    async def get_all(self, key: str, **_: Any) -> Resp:
        """The streamed range the informer lists with, gathered (Client.get_all)."""
        return await self.get(key)

    def watch(self, key: str, **opts: Any) -> Any:
        self.watch_starts.append(opts["start_revision"])
        script = self.streams.pop(0)

        class W:
            async def __aenter__(self) -> Any:
                return self

            async def __aexit__(self, *a: Any) -> None:
                return None

            def __aiter__(self) -> Any:
                return self._gen()

            async def _gen(self) -> Any:
                for item in script:
                    if isinstance(item, BaseException):
                        raise item
                    if callable(item):  # something happens in the store while we watch
                        item()
                        continue
                    yield item
                await asyncio.sleep(3600)

        return W()


def node(name: str, gpus: int = 8) -> dict[str, Any]:
    return {"name": name, "gpus": gpus, "gpu_type": "A100", "cpu_milli": 1000, "memory_mib": 1024, "rack": "r0",
            "healthy": True}


async def test_list_watch_and_relist_after_compaction() -> None:
    c = FakeClient()
    c.put("/registry/nodes/n1", node("n1"))
    c.put("/registry/leases/n1", {})
    c.put("/registry/nodes/n2", node("n2"))
    e1 = c.put("/registry/leases/n2", {})
    listed = c.rev
    # the first stream delivers one event then the revision it needs is compacted
    # meanwhile n1 vanishes (its heartbeat expired) and the history is compacted: the relist sees it
    c.streams.append([Resp(Header(e1.kv.mod_revision), events=[e1]), lambda: c.delete("/registry/leases/n1"),
                      WatchCompactedError(0, 0, "compacted")])
    c.streams.append([])
    view = ClusterView()
    inf = Informer(c, "/registry/", view, backoff_initial_s=0.01)
    task = asyncio.get_running_loop().create_task(inf.run())
    await asyncio.wait_for(inf.synced.wait(), 10)
    await asyncio.sleep(0.05)
    assert c.watch_starts[0] == listed + 1
    assert view.node_ready("n2")
    for _ in range(100):
        if inf.relists >= 1:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert inf.compactions == 1 and inf.relists == 1
    assert c.watch_starts[1] == c.rev + 1 or c.watch_starts[1] > listed
    assert not view.node_ready("n1") and "n1" in view.dirty_nodes


def test_view_feeds_the_core_once_per_fact() -> None:
    c = FakeClient()
    view = ClusterView()
    feed = CoreFeed()
    for ev in (c.put("/registry/nodes/n1", node("n1")), c.put("/registry/leases/n1", {})):
        view.apply([ev], c.rev)
    nodes, _, _ = view.take_dirty()
    evs = [e for n in nodes for e in feed.sync_node(view, n)]
    assert [type(e) for e in evs] == [NodeAdded] and evs[0].node.healthy
    assert feed.sync_node(view, "n1") == []
    spec = {"kind": "Job", "name": "j", "tenant": "t", "priority": 0, "tasks": [
        {"name": "w", "replicas": 1, "image": "host", "command": ["x"], "env": {}, "workdir": "",
         "resources": {"gpus": 2, "gpu_type": None, "cpu_milli": 0, "memory_mib": 0, "rdma": False}}]}
    view.apply([c.put("/registry/jobs/j", spec)], c.rev)
    assert [type(e) for e in feed.sync_job(view, "j", 0.0)] == [JobAdded]
    b = {"job": "j", "tasks": [{"task": "w-0", "node": "n1", "rack": "r0", "gpus": [0, 1], "index": 0}], "bound_at": 1.0}
    view.apply([c.put("/registry/bindings/j", b)], c.rev)
    assert [type(e) for e in feed.sync_job(view, "j", 0.0)] == [JobBound]
    assert feed.sync_job(view, "j", 0.0) == []
    view.apply([c.delete("/registry/bindings/j")], c.rev)
    assert [type(e) for e in feed.sync_job(view, "j", 0.0)] == [JobEvicted]
    # the heartbeat goes: NotReady, and the node's jobs are dirty for the lifecycle step
    view.apply([c.put("/registry/bindings/j", b)], c.rev)
    view.take_dirty()
    view.apply([c.delete("/registry/leases/n1")], c.rev)
    nodes, jobs, _ = view.take_dirty()
    assert "j" in jobs
    evs = feed.sync_node(view, "n1")
    assert [type(e) for e in evs] == [NodeUpdated] and not evs[0].node.healthy


def test_a_suspended_jobs_stopped_run_is_an_eviction_then_a_deletion_not_an_end() -> None:
    """The core's finish plugins learn from runs that ended (run times, attained service): the
    run a suspension stopped did not end, so the core is told it was evicted and the job left
    the queue (until resumed), never that it finished."""
    c = FakeClient()
    view, feed = ClusterView(), CoreFeed()
    view.apply([c.put("/registry/nodes/n1", node("n1")), c.put("/registry/leases/n1", {})], c.rev)
    spec = {"kind": "Job", "name": "j", "tenant": "t", "priority": 0, "tasks": [
        {"name": "w", "replicas": 1, "image": "host", "command": ["x"], "env": {}, "workdir": "",
         "resources": {"gpus": 2, "gpu_type": None, "cpu_milli": 0, "memory_mib": 0, "rdma": False}}]}
    b = {"job": "j", "tasks": [{"task": "w-0", "node": "n1", "rack": "r0", "gpus": [0, 1], "index": 0}], "bound_at": 1.0}
    view.apply([c.put("/registry/jobs/j", spec), c.put("/registry/bindings/j", b)], c.rev)
    assert [type(e) for e in feed.sync_job(view, "j", 0.0)] == [JobAdded]
    view.apply([c.put("/registry/jobs/j", dict(spec, suspend=True))], c.rev)
    assert feed.sync_job(view, "j", 0.0) == [] and not view.held("j")  # bound: the daemon stops it first
    view.apply([c.delete("/registry/bindings/j")], c.rev)
    assert view.held("j") and view.suspended_jobs() == ["j"]
    assert [type(e) for e in feed.sync_job(view, "j", 0.0)] == [JobEvicted, JobDeleted]
    view.apply([c.put("/registry/jobs/j", dict(spec, suspend=False))], c.rev)
    assert [type(e) for e in feed.sync_job(view, "j", 0.0)] == [JobAdded] and not view.held("j")


# --- malformed keys and values: skipped, named, and nothing else affected ---------------------

SPEC = {"kind": "Job", "name": "j", "tenant": "t", "priority": 0, "tasks": [
    {"name": "w", "replicas": 1, "image": "host", "command": ["x"], "env": {}, "workdir": "",
     "resources": {"gpus": 2, "gpu_type": None, "cpu_milli": 0, "memory_mib": 0, "rdma": False}}]}


def _raw(key: bytes, value: bytes, rev: int = 1) -> Ev:
    return Ev("PUT", KV(key, value, rev, rev))


def test_a_key_that_is_not_utf8_is_skipped_in_a_list_and_a_watch() -> None:
    """Was UnicodeDecodeError out of the sink, which ended the informer's task (it catches
    client errors only): the scheduler's view never changed again."""
    view = ClusterView()
    good = KV(b"/registry/nodes/n1", json.dumps(node("n1")).encode(), 1, 1)
    view.replace([KV(b"/registry/nodes/\xff", b"{}", 2, 2), good], 2)
    assert set(view.nodes) == {"n1"}
    view.apply([_raw(b"/registry/jobs/\xfe\xff", b"{}", 3), _raw(b"/registry/leases/n1", b"{}", 4)], 4)
    assert view.node_ready("n1") and view.jobs == {}


@pytest.mark.parametrize("doc", [
    {"job": "j", "tasks": [{"task": "w-0", "node": "n1", "gpus": [0], "index": 0}], "bound_at": "yesterday"},
    {"job": "j", "tasks": 5, "bound_at": 1.0},
    {"job": "j", "tasks": ["w-0@n1"], "bound_at": 1.0},
    {"job": "j", "tasks": [{"task": "w-0", "node": "../n1", "gpus": [0], "index": 0}], "bound_at": 1.0},
    {"job": "j", "tasks": [{"task": "w-0", "node": "n1", "gpus": [0.5], "index": 0}], "bound_at": 1.0},
    {"job": "j", "tasks": [{"task": "w-0", "node": "n1", "gpus": [0], "index": 0}], "bound_at": 1.0,
     "evicting_until": "soon"},
    ["not", "a", "binding"],
], ids=["bound-at-text", "tasks-int", "tasks-text", "node-dotdot", "gpu-float", "evicting-text", "a-list"])
def test_a_binding_that_does_not_decode_is_kept_broken_not_raised(doc: object) -> None:
    """Was ValueError/TypeError/KeyError out of the sink (float('yesterday'), t['node'] of a
    string): the informer's task ended. The binding holds GPUs, so it is kept with its problem
    for the daemon to release, and the core is not given its placement."""
    view = ClusterView()
    c = FakeClient()
    view.apply([c.put("/registry/jobs/j", SPEC), c.put("/registry/bindings/j", doc)], c.rev)
    b = view.bindings["j"]
    assert b.problem and "/registry/bindings/j" in view.invalid
    feed = CoreFeed()
    assert [type(e) for e in feed.sync_job(view, "j", 0.0)] == [JobAdded]
    assert feed.jobs["j"][1] is None  # the core holds no placement of a broken binding


def test_a_job_key_whose_spec_names_another_job_is_not_that_job() -> None:
    """Was: /registry/jobs/a holding the spec of 'b' gave the core job 'b' from key 'a' (two
    keys feeding one job; the binder then read view.jobs['b'])."""
    view = ClusterView()
    c = FakeClient()
    view.apply([c.put("/registry/jobs/a", SPEC)], c.rev)
    assert view.job_model("a") is None
    assert view.job_problem("a") == "name: 'j' is not the key's name 'a'"
    assert CoreFeed().sync_job(view, "a", 0.0) == []
    view.apply([c.put("/registry/jobs/a", dict(SPEC, name="a"))], c.rev)  # fixed: a job again
    assert view.job_model("a") is not None and view.job_problem("a") is None


@pytest.mark.parametrize("patch", [{"labels": ["rack=r1"]}, {"gpus": 1e999}, {"islands": [8.0]},
                                   {"gpus": 10 ** 12}, {"labels": {"rack": 1}}, {"rack": None}],
                         ids=["labels-list", "gpus-inf", "islands-float", "gpus-huge", "label-int", "rack-null"])
def test_a_node_record_that_does_not_decode_is_no_node(patch: dict[str, object]) -> None:
    """Was AttributeError (labels.items), OverflowError (int(inf)) out of node_model, which
    raised in every pass; islands [8.0] made a Node whose island masks raise in the core
    (1 << 8.0); 10**12 GPUs a mask of 10**12 bits."""
    view = ClusterView()
    c = FakeClient()
    view.apply([c.put("/registry/nodes/n1", dict(node("n1"), **patch)), c.put("/registry/leases/n1", {}),
                c.put("/registry/nodes/n2", node("n2")), c.put("/registry/leases/n2", {})], c.rev)
    assert view.node_model("n1") is None and "/registry/nodes/n1" in view.invalid
    assert view.node_model("n2") is not None
    feed = CoreFeed()
    assert [e.node.name for e in feed.sync_node(view, "n2")] == ["n2"] and feed.sync_node(view, "n1") == []


def test_task_statuses_and_job_statuses_that_do_not_decode() -> None:
    """Was ValueError (int('x')) in task_statuses and int(st['restarts']) in the lifecycle:
    the pass raised, the core was rebuilt, forever."""
    view = ClusterView()
    c = FakeClient()
    view.apply([c.put("/registry/tasks/j/w-0/status", {"assignment_revision": "x", "phase": "Failed"}),
                c.put("/registry/tasks/j/w-1/status", {"assignment_revision": 7, "phase": "Running"}),
                c.put("/registry/tasks/j/w-2/status", {"assignment_revision": 7, "phase": "Failed", "node": [1]}),
                c.put("/registry/jobstatus/j", {"phase": "Running", "restarts": "many", "placement": 3,
                                                "finished_at": float("nan")})], c.rev)
    assert list(view.task_statuses("j", 7)) == ["w-1"]
    st = view.status["j"].doc
    assert (st["restarts"], st["placement"], "finished_at" in st) == (0, [], False)
    assert view.phase("j") == "Running"


def test_an_alloc_record_that_does_not_decode_makes_its_node_unschedulable() -> None:
    view = ClusterView()
    c = FakeClient()
    view.apply([c.put("/registry/nodes/n1", node("n1")), c.put("/registry/leases/n1", {}),
                c.put("/registry/alloc/n1", {"jobs": [1, 2]})], c.rev)
    m = view.node_model("n1")
    assert m is not None and m.healthy and not m.schedulable
    with pytest.raises(decode.Malformed):
        view.alloc_jobs("n1")
    view.apply([c.put("/registry/alloc/n1", {"jobs": {}})], c.rev)
    m = view.node_model("n1")
    assert m is not None and m.schedulable


def test_a_tenant_key_whose_record_names_another_tenant() -> None:
    """Was TenantUpdated('b') from key 'a': key a's record overwrote tenant b's quota."""
    view = ClusterView()
    c = FakeClient()
    feed = CoreFeed()
    view.apply([c.put("/registry/tenants/b", {"kind": "Tenant", "name": "b", "nominal_gpus": 8})], c.rev)
    assert [e.tenant for e in feed.sync_tenant(view, "b")] == [Tenant("b", 8)]
    view.apply([c.put("/registry/tenants/a", {"kind": "Tenant", "name": "b", "nominal_gpus": 0}),
                c.put("/registry/tenants/c", {"kind": "Tenant", "name": "c", "nominal_gpus": "8"})], c.rev)
    assert feed.sync_tenant(view, "a") == [] and feed.sync_tenant(view, "c") == []
    assert feed.tenants == {"b": Tenant("b", 8)}


def test_a_stored_placement_the_core_cannot_hold_is_withheld() -> None:
    """Was: the core's allocate asserted (GPUs not free, unknown node: KeyError) on a binding
    anyone wrote, in every pass after the rebuild that the failure caused."""
    sched = cluster([make_node("n1").gpus(8).obj()]).scheduler(profile("default"))
    view = ClusterView()
    c = FakeClient()
    other = dict(SPEC, name="k")
    row = {"task": "w-0", "node": "n1", "rack": "rack-0", "gpus": [0, 1], "index": 0}
    view.apply([c.put("/registry/jobs/j", SPEC), c.put("/registry/jobs/k", other),
                c.put("/registry/bindings/j", {"job": "j", "tasks": [row], "bound_at": 1.0}),
                c.put("/registry/bindings/k", {"job": "k", "tasks": [dict(row, task="w-0")], "bound_at": 1.0})], c.rev)
    feed = CoreFeed()
    for name in ("j", "k"):
        sched.handle(*feed.sync_job(view, name, 0.0, fits=sched.state.placement_problem))
    assert feed.unfit == {"k": "GPUs [0, 1] of n1 are held by another job"}
    assert sched.state.jobs["j"].placement is not None and sched.state.jobs["k"].placement is None
    ghost = {"job": "k", "tasks": [dict(row, node="ghost")], "bound_at": 1.0}
    view.apply([c.put("/registry/bindings/k", ghost)], c.rev)
    sched.handle(*feed.sync_job(view, "k", 0.0, fits=sched.state.placement_problem))
    assert feed.unfit == {"k": "node ghost is not a known node"}


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
                     # an int no float can hold (max_run_s: 1000...0) raised OverflowError in the job check
                     | st.integers(min_value=10**308, max_value=10**400),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                         st.sampled_from(["name", "gpus", "tasks", "node", "task", "index", "jobs", "labels", "islands",
                                          "bound_at", "phase", "assignment_revision", "nominal_gpus", "ttl_s",
                                          "lease_id", "restarts", "placement", "job", "reason",
                                          "binding_revision", "by", "eviction", "x"]) | st.text(max_size=4),
                         inner, max_size=5), max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_every_decoder_returns_a_value_or_raises_malformed(doc: object) -> None:
    for fn in (lambda d: decode.node("n1", d), decode.alloc_jobs, decode.task_status,
               lambda d: decode.tenant("t", d), decode.heartbeat, lambda d: decode.eviction("j", d),
               decode.binding_eviction):
        with contextlib.suppress(decode.Malformed):
            fn(doc)
    rows, bound_at, evicting, problem = decode.binding(doc)
    assert isinstance(problem, str) and isinstance(bound_at, float)
    decode.job_status(doc)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["/registry/nodes/n1", "/registry/leases/n1", "/registry/jobs/j", "/registry/bindings/j",
                        "/registry/alloc/n1", "/registry/jobstatus/j", "/registry/tasks/j/w-0/status",
                        "/registry/tenants/t", "/registry/cordons/n1", "/registry/priorityclasses/p",
                        "/registry/evictions/j",
                        "/registry/nodes/..", "/registry/tasks/j//status"]),
       st.one_of(_JSON.map(lambda d: json.dumps(d).encode()), st.binary(max_size=20)))
def test_the_view_and_the_feed_take_any_value(key: str, value: bytes) -> None:
    """Whatever is put under any prefix: the sink does not raise, nor does feeding the core."""
    sched = cluster([make_node("n1").gpus(8).obj()]).scheduler(profile("default"))
    view = ClusterView()
    c = FakeClient()
    view.apply([c.put("/registry/nodes/n1", node("n1")), c.put("/registry/leases/n1", {}),
                c.put("/registry/jobs/j", SPEC)], c.rev)
    view.apply([_raw(key.encode(), value, c.rev + 1)], c.rev + 1)
    feed = CoreFeed()
    nodes, jobs, tenants = view.take_dirty()
    for n in sorted(nodes):
        sched.handle(*feed.sync_node(view, n))
    for t in sorted(tenants):
        sched.handle(*feed.sync_tenant(view, t))
    for j in sorted(jobs):
        sched.handle(*feed.sync_job(view, j, 0.0, fits=sched.state.placement_problem))
        view.task_statuses(j, 1)
    sched.schedule(0.0)


async def test_a_sink_that_raises_does_not_end_the_informer() -> None:
    """Was: any exception but a client error out of the sink ended ``run()``; the daemon's
    view then never changed again while the daemon went on acting on it. And while the sink's
    view misses changes, ``synced`` is clear (the daemon does not act) until a list succeeds."""
    c = FakeClient()
    c.put("/registry/nodes/n1", node("n1"))
    c.streams += [[], []]

    class Flaky(ClusterView):
        calls = 0

        def replace(self, kvs: Any, revision: int) -> None:
            Flaky.calls += 1
            if Flaky.calls == 2:
                raise RuntimeError("a bug in the sink")
            super().replace(kvs, revision)

    view = Flaky()
    inf = Informer(c, "/registry/", view, backoff_initial_s=0.5)
    await inf.list_once()
    assert inf.synced.is_set()
    task = asyncio.get_running_loop().create_task(inf.run())
    try:
        for _ in range(100):
            if inf.errors:
                break
            await asyncio.sleep(0.005)
        assert inf.errors == 1 and not inf.synced.is_set()
        async with asyncio.timeout(10):
            await inf.synced.wait()
        assert not task.done(), task
        assert Flaky.calls == 3 and "n1" in view.nodes
    finally:
        task.cancel()


def test_a_decoder_that_raises_is_that_keys_problem_not_the_views(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoder's bug (any exception but Malformed) on one stored value: logged, the value read
    as not decoding (no node, a job's InvalidSpec), and the other keys of the same list and
    watch batch are taken. Before, the exception left the view half-replaced and made the
    informer list again for ever."""
    real = decode.node

    def buggy(name: str, doc: Any) -> Any:
        if name == "n2":
            raise ZeroDivisionError("a bug")
        return real(name, doc)

    monkeypatch.setattr(decode, "node", buggy)
    c = FakeClient()
    view = ClusterView()
    view.replace([c.put("/registry/nodes/n1", node("n1")).kv, c.put("/registry/nodes/n2", node("n2")).kv,
                  c.put("/registry/leases/n1", {}).kv, c.put("/registry/leases/n2", {}).kv], c.rev)
    assert set(view.nodes) == {"n1"} and set(view.heartbeats) == {"n1", "n2"}
    assert "ZeroDivisionError: a bug; a scheduler bug" in view.invalid["/registry/nodes/n2"]
    view.apply([c.put("/registry/nodes/n2", node("n2")), c.put("/registry/nodes/n3", node("n3"))], c.rev)
    assert set(view.nodes) == {"n1", "n3"}

    def raises(name: str, doc: Any) -> list[Any]:
        raise OverflowError("int too large to convert to float")

    monkeypatch.setattr("scheduler.informer_view.check_stored_job", raises)
    view.apply([c.put("/registry/jobs/j", SPEC)], c.rev)
    assert "j" not in view.jobs and "j" in view.invalid_jobs
    assert "OverflowError" in view.invalid["/registry/jobs/j"]


def test_a_list_that_fails_leaves_the_last_view_whole() -> None:
    """``replace`` builds the new view apart: an exception on the way (a bug) leaves the view
    it had, not one whose heartbeats were not read yet (every node would look lost)."""
    c = FakeClient()
    view = ClusterView()
    view.replace([c.put("/registry/leases/n1", {}).kv, c.put("/registry/nodes/n1", node("n1")).kv], c.rev)
    before = (dict(view.nodes), dict(view.heartbeats), view.revision)

    class Breaks(ClusterView):  # a bug met on one key, after the jobs were read, before the leases
        def _put(self, key: str, value: bytes, create: int, mod: int) -> None:
            if key.startswith("/registry/leases/"):
                raise RuntimeError("a bug")
            super()._put(key, value, create, mod)

    broken = Breaks()
    broken.__dict__.update(view.__dict__)
    with pytest.raises(RuntimeError):
        broken.replace([c.put("/registry/jobs/j", SPEC).kv, c.put("/registry/leases/n1", {}).kv,
                        c.put("/registry/nodes/n1", node("n1")).kv], c.rev)
    assert (dict(broken.nodes), dict(broken.heartbeats), broken.revision) == before and "j" not in broken.jobs
