"""The informer with a fake client: list, watch from the listed revision, relist after a
compaction (deletions missed meanwhile are seen), and the view's translation to core events."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from kvraft.client import WatchCompactedError
from scheduler.informer import Informer
from scheduler.informer_view import ClusterView, CoreFeed
from scheduler.model import JobAdded, JobBound, JobEvicted, NodeAdded, NodeUpdated


@dataclass
class KV:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass
class Ev:
    type: str
    kv: KV


@dataclass
class Header:
    revision: int


@dataclass
class Resp:
    header: Header
    kvs: list[KV] = field(default_factory=list)
    events: list[Ev] = field(default_factory=list)


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
