"""What anyone may write under /registry/ cannot crash, wedge or mislead the daemon: the
daemon's own pass (``SchedulerDaemon.step``) on a real one-member kvraft, in this process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import FAST_FLAGS, no_double_allocation

from kvraft.client import Client
from kvraft.server.local import LocalCluster
from scheduler.jobs import normalize_job
from scheduler.service import SchedulerDaemon
from scheduler.service_config import SchedulerConfig


@pytest.fixture(scope="module")
def one_member(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    cluster = LocalCluster(1, tmp_path_factory.mktemp("kv"), extra_args=FAST_FLAGS)
    try:
        cluster.start(timeout_s=120)
        yield [m.client_url for m in cluster.members.values()]
    finally:
        cluster.stop()


@pytest.fixture
async def daemon(one_member: list[str]) -> AsyncIterator[SchedulerDaemon]:
    client = Client(one_member, request_timeout_s=10.0)
    await client.open()
    await client.delete("/registry/", prefix=True)
    d = SchedulerDaemon(SchedulerConfig(name="t", election=False, endpoints=one_member), client)
    try:
        yield d
    finally:
        await client.close()


def spec(name: str, gpus: int = 8, replicas: int = 1, **extra: Any) -> dict[str, Any]:
    doc = {"name": name, "tasks": [{"name": "w", "replicas": replicas, "command": "sleep 1",
                                    "resources": {"gpus": gpus}}], **extra}
    return normalize_job(doc, submitted_at=1.0)


async def put(d: SchedulerDaemon, key: str | bytes, doc: Any) -> None:
    await d.client.put(key, doc if isinstance(doc, bytes) else json.dumps(doc).encode())


async def nodes(d: SchedulerDaemon, *names: str) -> None:
    for n in names:
        await put(d, f"/registry/nodes/{n}", {"name": n, "gpus": 8, "gpu_type": "A100", "cpu_milli": 64000,
                                             "memory_mib": 512000, "rack": "r0", "healthy": True})
        await put(d, f"/registry/leases/{n}", {"holder": n, "lease_id": 1, "ttl_s": 40, "renew_interval_s": 10})


async def steps(d: SchedulerDaemon, n: int = 3) -> None:
    """List (the informer's first step), become 'leader', and run ``n`` passes; a pass that
    raises fails the test (the daemon would log it, rebuild the core and fail again)."""
    await d.informer.list_once()
    if d.core is None:
        d._rebuild()
    for _ in range(n):
        await d.informer.list_once()
        await d.step()


async def doc(d: SchedulerDaemon, key: str) -> Any:
    resp = await d.client.get(key)
    return json.loads(resp.kvs[0].value) if resp.kvs else None


def eps(d: SchedulerDaemon) -> list[str]:
    return list(d.config.endpoints)


async def test_malformed_jobs_wait_with_their_reason_and_the_queue_goes_on(daemon: SchedulerDaemon) -> None:
    """A job stored with replicas 2.0 (what jobctl submit let through) made every pass raise
    TypeError in the binder (range(2.0)); the daemon rebuilt its core and failed again, and
    no job was ever bound. A spec under another job's key fed that other job."""
    d = daemon
    await nodes(d, "n1", "n2")
    await put(d, "/registry/jobs/a-float", dict(spec("a-float", replicas=1), tasks=[
        dict(spec("x")["tasks"][0], replicas=2.0)]))
    await put(d, "/registry/jobs/b-text", b"{not json")
    await put(d, "/registry/jobs/c-other", spec("d-good"))  # names another job
    await put(d, b"/registry/jobs/\xff\xfe", spec("e"))  # not UTF-8
    await put(d, "/registry/jobs/d-good", spec("d-good"))
    await put(d, "/registry/jobstatus/d-good", {"phase": "Pending", "restarts": "many", "placement": 7})
    await steps(d)
    assert (await doc(d, "/registry/bindings/d-good")) is not None
    for name in ("a-float", "b-text", "c-other"):
        st = await doc(d, f"/registry/jobstatus/{name}")
        assert (st["phase"], st["reason"]) == ("Pending", "InvalidSpec"), st
        assert st["message"].startswith(f"/registry/jobs/{name}: "), st
    assert "tasks[0].replicas: must be integer, not float 2.0" in (await doc(d, "/registry/jobstatus/a-float"))["message"]
    assert "'d-good' is not the key's name 'c-other'" in (await doc(d, "/registry/jobstatus/c-other"))["message"]
    assert (await doc(d, "/registry/jobstatus/d-good"))["restarts"] == 0
    no_double_allocation(eps(d))


async def test_an_integer_too_large_for_a_float_is_an_invalid_spec_not_a_relist_loop(daemon: SchedulerDaemon) -> None:
    """`kvctl put /registry/jobs/big '{..., "max_run_s": 1000...0}'` (400 digits): the informer's
    check raised OverflowError (math.isfinite), the informer relisted for ever, and the jobs
    running meanwhile were released as NodeLost."""
    d = daemon
    await nodes(d, "n1")
    await put(d, "/registry/jobs/big", b'{"name": "big", "tenant": "default", "priority": 0, "max_run_s": 1'
              + b"0" * 400 + b', "tasks": [{"name": "w", "replicas": 1, "image": "host", "command": ["x"], '
              b'"resources": {"gpus": 1, "cpu_milli": 0, "memory_mib": 0, "rdma": false}}]}')
    await put(d, "/registry/jobs/good", spec("good"))
    await steps(d)
    assert (await doc(d, "/registry/bindings/good")) is not None
    st = await doc(d, "/registry/jobstatus/big")
    assert (st["phase"], st["reason"]) == ("Pending", "InvalidSpec"), st
    assert "max_run_s: must be number or null, not an integer too large" in st["message"], st


async def test_the_leader_does_not_act_while_its_view_is_out_of_sync(daemon: SchedulerDaemon) -> None:
    """When the informer's sink failed, the view missed changes (heartbeats among them: every
    node would look lost and its jobs be released, as they were behind a relist loop): the
    leader's loop runs no step until the informer has listed again."""
    d = daemon
    await steps(d, 1)
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1

    d.step = counted  # type: ignore[method-assign]
    d.informer.synced.clear()  # what the informer does when its sink raises
    lost = asyncio.Event()
    task = asyncio.get_running_loop().create_task(d._act(lost))
    try:
        await asyncio.sleep(0.5)
        assert calls == 0 and not task.done()
        d.informer.synced.set()  # a list the sink took
        async with asyncio.timeout(5):
            while not calls:
                await asyncio.sleep(0.01)
    finally:
        lost.set()
        async with asyncio.timeout(5):
            await task


async def test_a_running_jobs_spec_overwritten_fails_its_run_and_no_gpu_is_given_twice(daemon: SchedulerDaemon) -> None:
    """A bound job whose spec stopped decoding was JobFinished for the core (its GPUs free) while
    its binding and alloc record stayed: the next pass bound the waiting job on the same GPUs."""
    d = daemon
    await nodes(d, "n1")
    await put(d, "/registry/jobs/first", spec("first"))
    await steps(d, 1)
    assert (await doc(d, "/registry/bindings/first")) is not None
    await put(d, "/registry/jobs/second", spec("second"))
    await put(d, "/registry/jobs/first", dict(spec("first"), max_run_s="forever"))
    await steps(d, 3)
    no_double_allocation(eps(d))
    st = await doc(d, "/registry/jobstatus/first")
    assert (st["phase"], st["reason"]) == ("Failed", "InvalidSpec"), st
    assert "max_run_s: must be number or null" in st["message"]
    assert (await doc(d, "/registry/bindings/second")) is not None  # the GPUs were released first


async def test_forged_bindings_are_released_not_fed_to_the_core(daemon: SchedulerDaemon) -> None:
    """A binding that does not decode (bound_at text), one on GPUs another job holds and one on
    GPUs the node does not have: the core asserted on them (or the sink raised) in every pass."""
    d = daemon
    await nodes(d, "n1", "n2")
    await put(d, "/registry/jobs/held", spec("held"))
    await steps(d, 1)
    held = await doc(d, "/registry/bindings/held")
    node = held["tasks"][0]["node"]
    other = "n2" if node == "n1" else "n1"
    row = {"task": "w-0", "node": node, "rack": "r0", "gpus": list(range(8)), "index": 0}
    for name, binding in (("twice", {"job": "twice", "tasks": [row], "bound_at": 1.0}),
                          ("text", {"job": "text", "tasks": [dict(row, node=other)], "bound_at": "noon"}),
                          ("nine", {"job": "nine", "tasks": [dict(row, node=other, gpus=list(range(1, 9)))],
                                    "bound_at": 1.0})):
        await put(d, f"/registry/jobs/{name}", spec(name))
        await put(d, f"/registry/bindings/{name}", binding)
    await steps(d, 4)
    no_double_allocation(eps(d))
    want = {"twice": f"GPUs [0, 1, 2, 3, 4, 5, 6, 7] of {node} are held by another job",
            "text": "bound_at: must be a finite number, not 'noon'",
            "nine": f"GPUs [1, 2, 3, 4, 5, 6, 7, 8] of {other}: it has 8"}
    for name, why in want.items():
        st = await doc(d, f"/registry/jobstatus/{name}")
        assert (st["phase"], st["reason"], st["message"]) == (
            "Failed", "InvalidBinding", f"/registry/bindings/{name}: {why}"), st
        assert (await doc(d, f"/registry/bindings/{name}")) is None
    assert (await doc(d, "/registry/bindings/held")) == held  # untouched
    assert d.releases["failed"] == 3
    d._rebuild()  # a new leader: every stored placement is checked against a core that knows the nodes
    await steps(d, 2)
    assert (await doc(d, "/registry/bindings/held")) == held and d.releases["failed"] == 3
    assert (await doc(d, "/registry/jobstatus/held"))["phase"] == "Running"


async def test_a_broken_alloc_record_keeps_binds_off_its_node(daemon: SchedulerDaemon, tmp_path: Path) -> None:
    d = daemon
    await nodes(d, "n1", "n2")
    await put(d, "/registry/alloc/n1", {"jobs": {"someone": {"gpus": "all"}}})
    for name in ("j1", "j2"):
        await put(d, f"/registry/jobs/{name}", spec(name))
    await steps(d, 3)
    bound = [b for b in [await doc(d, "/registry/bindings/j1"), await doc(d, "/registry/bindings/j2")] if b]
    assert [t["node"] for b in bound for t in b["tasks"]] == ["n2"]
    assert (await doc(d, "/registry/alloc/n1")) == {"jobs": {"someone": {"gpus": "all"}}}


def test_jobctl_skips_what_does_not_decode_and_names_it(one_member: list[str], capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    """Each of these raised out of jobctl with a traceback (KeyError, TypeError, AttributeError,
    UnicodeDecodeError), or made a listing of every job fail for one of them."""
    from kvraft.client import SyncClient
    from scheduler.cli.main import main

    good_node = {"name": "n2", "gpus": 8, "rack": "r0", "healthy": True, "agent": {"url": "http://127.0.0.1:1"}}
    values: dict[str | bytes, Any] = {
        "/registry/jobs/x-bad": b"{not json", "/registry/jobs/y-float": dict(spec("y-float"), tasks=[
            dict(spec("y")["tasks"][0], replicas=2.0)]),
        b"/registry/jobs/\xff": spec("w"), "/registry/jobs/z-good": spec("z-good"),
        "/registry/jobstatus/z-good": {"phase": "Running", "restarts": "many",
                                       "placement": [1, {"node": 3}, {"task": "w-0", "node": "n3", "rack": "r0",
                                                                        "gpus": [0]}]},
        "/registry/events/z-good/1": [1], "/registry/events/z-good/2": {"type": "Scheduled", "at": "x"},
        "/registry/nodes/n1": {"name": "n1", "gpus": 8, "labels": ["a"]}, "/registry/nodes/n2": good_node,
        "/registry/nodes/n3": dict(good_node, name="n3", agent={"url": "file:///etc/passwd"}),
        "/registry/alloc/n2": {"jobs": [1]}, "/registry/tenants/t1": {"kind": "Tenant", "name": "t2", "nominal_gpus": 1},
        "/registry/priorityclasses/pc1": {"kind": "PriorityClass", "name": "pc1"},
    }
    with SyncClient(one_member, request_timeout_s=10.0) as c:
        c.delete("/registry/", prefix=True)
        for k, v in values.items():
            c.put(k, v if isinstance(v, bytes) else json.dumps(v).encode())
    job = tmp_path / "j.yaml"
    job.write_text("name: p\npriority_class: pc1\ntasks: [{name: w, command: x}]\n")
    eps = ["--endpoints", ",".join(one_member)]
    want = {
        ("get", "jobs", "-o", "wide"): 0, ("get", "jobs", "-o", "json"): 0, ("describe", "job", "z-good"): 0,
        ("get", "nodes"): 0, ("top", "nodes"): 0, ("get", "queues"): 0, ("get", "priorityclasses"): 0,
        ("get", "job", "x-bad"): 1, ("cancel", "y-float"): 1, ("submit", "-f", str(job)): 1, ("drain", "n2"): 1,
        ("logs", "z-good"): 1,
    }
    for argv, rc in want.items():
        got = main([*eps, *argv])
        out, err = capsys.readouterr()
        assert got == rc and "Traceback" not in err, (argv, got, out, err)
        if argv[:2] == ("get", "jobs"):
            assert "z-good" in out and "warning: skipping /registry/jobs/y-float: tasks[0].replicas: must be integer" in err
            assert "warning: skipping b'/registry/jobs/\\xff': key" in err and "x-bad" in err
        elif argv[0] == "describe":
            assert "Scheduled" in out and "n3" in out
        elif argv == ("get", "nodes"):
            assert "n2" in out and "n1" not in out and "skipping /registry/nodes/n1: labels" in err
            assert "skipping /registry/alloc/n2: jobs: must be a JSON object" in err
        elif argv == ("get", "queues"):
            assert "skipping /registry/tenants/t1: name: 't2' is not the key's name 't1'" in err
        elif argv == ("get", "priorityclasses"):
            assert "skipping /registry/priorityclasses/pc1: value: required field is missing" in err
        elif rc == 1:
            assert err.splitlines()[-1].startswith("error: "), (argv, err)  # after any warnings
    assert main([*eps, "logs", "z-good"]) == 1
    assert "advertises no agent URL ('file:///etc/passwd')" in capsys.readouterr().err


async def test_a_bound_job_on_a_deleted_node_record_is_lost_not_a_wedge(daemon: SchedulerDaemon) -> None:
    """`kvctl del /registry/nodes/n1` under a running job, then a new leader: the core was told
    JobAdded with a placement on a node it did not know (KeyError in allocate) in every pass."""
    d = daemon
    await nodes(d, "n1")
    await put(d, "/registry/jobs/j", spec("j", restart_policy="OnFailure", max_restarts=1))
    await steps(d, 1)
    assert (await doc(d, "/registry/bindings/j")) is not None
    await d.client.delete("/registry/nodes/n1")
    d._rebuild()
    await steps(d, 2)
    st = await doc(d, "/registry/jobstatus/j")
    assert (st["phase"], st["restarts"], st["last_placement"][0]["node"]) == ("Pending", 1, "n1"), st
    assert (await doc(d, "/registry/bindings/j")) is None and dict(d.releases) == {"restarted": 1}
    events = (await d.client.get("/registry/events/j/", prefix=True)).kvs
    assert "Lost" in [json.loads(kv.value)["type"] for kv in events]  # NodeLost, not InvalidBinding
