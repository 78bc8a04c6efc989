"""Agent restarts and lease loss with real processes: nothing lost, nothing run twice."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp

from tests.agent.conftest import assign, status, unassign, wait_for, wait_status

COUNTING = 'echo x >> "$KVRAFT_WORKDIR/starts"; '


async def test_agent_sigkill_and_restart_reattaches(agents, kv) -> None:
    a = agents("n-re").start()
    await assign(kv, "n-re", "ja", "ends", {"command": ["sh", "-c", COUNTING + "sleep 3; exit 7"]})
    await assign(kv, "n-re", "ja", "long", {"command": ["sh", "-c", COUNTING + "echo up; exec sleep 300"]})
    await assign(kv, "n-re", "ja", "ok", {"command": ["sh", "-c", COUNTING + "sleep 2; exit 0"]})
    for t in ("ends", "long", "ok"):
        await wait_status(kv, "ja", t, "Running", agent=a)
    a.kill(signal.SIGKILL)
    await asyncio.sleep(4)  # "ends" and "ok" finish while no agent runs
    a.start()
    ends = await wait_status(kv, "ja", "ends", "Failed", agent=a)
    ok = await wait_status(kv, "ja", "ok", "Succeeded", agent=a)
    assert (ends["exit_code"], ends["attempt"], ends["reason"]) == (7, 1, "Error")
    assert (ok["exit_code"], ok["attempt"]) == (0, 1)
    assert (await status(kv, "ja", "long"))["phase"] == "Running"
    for t in ("ends", "long", "ok"):
        starts = (a.data_dir / "tasks" / "ja" / t / "workdir" / "starts").read_text().split()
        assert starts == ["x"], f"{t} started {len(starts)} times"
    # a second restart with everything already reported writes nothing new
    revs = {t: (await kv.get(f"/registry/tasks/ja/{t}/status")).kvs[0].mod_revision for t in ("ends", "ok", "long")}
    a.kill(signal.SIGKILL)
    a.start()
    async with aiohttp.ClientSession() as http:
        async def healthy():
            try:
                async with http.get(f"{a.url}/health") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False
        await wait_for(healthy, 60, "agent healthy again", a)
        await asyncio.sleep(2)
    for t, rev in revs.items():
        assert (await kv.get(f"/registry/tasks/ja/{t}/status")).kvs[0].mod_revision == rev, f"{t} re-reported"
    await unassign(kv, "n-re", "ja", "long")


async def test_lease_expiry_reregisters_and_stops_moved_tasks(agents, kv) -> None:
    a = agents("n-lease").start()
    await assign(kv, "n-lease", "jl", "moved", {"command": ["sleep", "300"], "grace_s": 2})
    await assign(kv, "n-lease", "jl", "stays", {"command": ["sleep", "300"]})
    await wait_status(kv, "jl", "moved", "Running", agent=a)
    await wait_status(kv, "jl", "stays", "Running", agent=a)
    lease_before = json.loads((await kv.get("/registry/leases/n-lease")).kvs[0].value)["lease_id"]
    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)  # a partition that outlives the TTL
    try:
        async def expired():
            return not (await kv.get("/registry/leases/n-lease")).kvs
        await wait_for(expired, 60, "lease expiry")
        # the scheduler moves one task to another node meanwhile
        await unassign(kv, "n-lease", "jl", "moved")
        new_rev = await assign(kv, "n-other", "jl", "moved", {"command": ["sleep", "300"]})
        await kv.put("/registry/tasks/jl/moved/status", json.dumps(
            {"phase": "Pending", "attempt": 0, "assignment_revision": new_rev, "node": "n-other"}).encode())
    finally:
        a.proc.send_signal(signal.SIGCONT)

    async def reregistered():
        resp = await kv.get("/registry/leases/n-lease")
        return resp.kvs and json.loads(resp.kvs[0].value)["lease_id"] != lease_before
    await wait_for(reregistered, 60, "re-registration", a)
    async with aiohttp.ClientSession() as http:
        async def moved_stopped():
            async with http.get(f"{a.url}/tasks") as r:
                return [t["task"] for t in await r.json()] == ["jl/stays"]
        await wait_for(moved_stopped, 60, "moved task stopped here", a)
        async with http.get(f"{a.url}/metrics") as r:
            text = await r.text()
    assert "kvraft_agent_lease_losses_total 1" in text
    moved = await status(kv, "jl", "moved")
    assert (moved["node"], moved["phase"]) == ("n-other", "Pending")  # never overwritten by n-lease
    assert (await status(kv, "jl", "stays"))["phase"] == "Running"
    await unassign(kv, "n-lease", "jl", "stays")
    await unassign(kv, "n-other", "jl", "moved")


async def test_kvraft_leader_killed_while_tasks_run(tmp_path) -> None:
    """A 3-member kvraft; the leader is SIGKILLed while the task runs; the agent keeps its
    lease through the other members and reports the exit."""
    from kvraft.client import Client
    from kvraft.server.local import LocalCluster
    from tests.agent.conftest import FAST_FLAGS, AgentProcess

    cluster = LocalCluster(3, tmp_path / "kv3", extra_args=FAST_FLAGS)
    agent = None
    try:
        cluster.start(timeout_s=120)
        urls = [m.client_url for m in cluster.members.values()]
        async with Client(urls, request_timeout_s=15.0, dial_timeout_s=5.0) as kv:
            agent = AgentProcess(cluster, tmp_path, "n-leader", "process").start()
            await assign(kv, "n-leader", "jk", "t", {"command": ["sh", "-c", "sleep 5; exit 5"]})
            await wait_status(kv, "jk", "t", "Running", agent=agent)
            lease = json.loads((await kv.get("/registry/leases/n-leader")).kvs[0].value)["lease_id"]
            leader = cluster.wait_leader(60)
            cluster.stop_member(leader, sig=signal.SIGKILL)
            s = await wait_status(kv, "jk", "t", "Failed", agent=agent, timeout_s=90)
            assert (s["exit_code"], s["attempt"]) == (5, 1)
            # with the tests' 4 s TTL the lease may expire during the election; either way the
            # node must end up registered (the same lease, or a new one after re-registration)
            async def registered():
                resp = await kv.get("/registry/leases/n-leader")
                return json.loads(resp.kvs[0].value)["lease_id"] if resp.kvs else None
            now = await wait_for(registered, 60, "node registered after the leader change", agent)
            print(f"lease before {lease:x}, after {now:x}: {'kept' if now == lease else 're-registered'}")
    finally:
        if agent is not None:
            agent.teardown()
        cluster.stop()


async def test_kvraft_unreachable_tasks_run_on_and_exit_is_reported_later(tmp_path) -> None:
    """kvraft stopped while a task runs (and absent when an agent starts): the task keeps
    running, ends, and its exit is reported once kvraft is back (T9)."""
    import aiohttp

    from kvraft.client import Client
    from kvraft.server.local import LocalCluster
    from tests.agent.conftest import FAST_FLAGS, AgentProcess

    cluster = LocalCluster(1, tmp_path / "kv1", extra_args=FAST_FLAGS)
    agent = None
    try:
        cluster.start(timeout_s=90)
        urls = [m.client_url for m in cluster.members.values()]
        async with Client(urls, request_timeout_s=15.0, dial_timeout_s=5.0) as kv:
            agent = AgentProcess(cluster, tmp_path, "n-down", "process").start()
            await assign(kv, "n-down", "jd", "t", {"command": ["sh", "-c", "sleep 4; exit 6"]})
            await wait_status(kv, "jd", "t", "Running", agent=agent)
        cluster.stop_member("m0", sig=signal.SIGKILL)
        agent.kill(signal.SIGKILL)
        agent.start()  # an agent starting while kvraft is down keeps trying
        async with aiohttp.ClientSession() as http:
            async def unregistered():
                try:
                    async with http.get(f"{agent.url}/health") as r:
                        return r.status == 503
                except aiohttp.ClientError:
                    return False
            await wait_for(unregistered, 60, "agent up but unregistered", agent)
        await asyncio.sleep(5)  # the task ends while kvraft is down
        assert agent.proc is not None and agent.proc.poll() is None
        cluster.start_member("m0")
        cluster.wait_ready(90)
        async with Client(urls, request_timeout_s=15.0, dial_timeout_s=5.0) as kv:
            s = await wait_status(kv, "jd", "t", "Failed", agent=agent, timeout_s=90)
            assert (s["exit_code"], s["attempt"]) == (6, 1)
    finally:
        if agent is not None:
            agent.teardown()
        cluster.stop()


async def test_supervisor_killed_is_reported_lost_and_restarted_by_policy(agents, kv) -> None:
    from agent.runtime.supervised import read_json

    a = agents("n-sup").start()
    await assign(kv, "n-sup", "js", "t", {"command": ["sleep", "300"], "restart_policy": "OnFailure"})
    await wait_status(kv, "js", "t", "Running", agent=a)
    adir = a.data_dir / "tasks" / "js" / "t" / "1"
    shim, started = read_json(adir / "shim.json"), read_json(adir / "started.json")
    import os

    os.kill(shim["pid"], signal.SIGKILL)
    s = await wait_status(kv, "js", "t", "Pending", "Running", agent=a, attempt=2)
    assert s["attempt"] == 2

    async def task_killed():
        try:
            return "Z" in open(f"/proc/{started['pid']}/stat").read().split()[2]
        except OSError:
            return True
    await wait_for(task_killed, 30, "attempt 1's task killed with its supervisor gone", a)
    assert (a.data_dir / "tasks" / "js" / "t" / "1" / "lost.json").exists() or not adir.exists()
    await unassign(kv, "n-sup", "js", "t")


async def test_agent_stop_ends_its_zygote_and_tasks_are_reattached(agents, kv) -> None:
    """A deliberate stop (SIGTERM) and a crash (SIGKILL) both leave the tasks running under
    their supervisors and no zygote behind; the next agent re-attaches and starts nothing twice."""
    from agent.runtime.supervised import pid_alive, read_json

    a = agents("n-zyg").start()
    await assign(kv, "n-zyg", "jz", "long", {"command": ["sh", "-c", COUNTING + "exec sleep 300"]})
    await wait_status(kv, "jz", "long", "Running", agent=a)
    started = read_json(a.data_dir / "tasks" / "jz" / "long" / "1" / "started.json")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        zygote = read_json(a.data_dir / "zygote.pid")
        assert pid_alive(zygote), f"no zygote before {sig!r}"
        a.kill(sig)

        async def zygote_gone(z=zygote):
            return not pid_alive(z)
        await wait_for(zygote_gone, 30, f"the zygote gone after {sig!r}", a)
        assert pid_alive(started), f"the task died with the agent ({sig!r})"
        a.start()
        # a new task goes through a new zygote; the old one is still attempt 1, started once
        await assign(kv, "n-zyg", "jz", f"after-{int(sig)}", {"command": ["sh", "-c", "exec sleep 300"]})
        await wait_status(kv, "jz", f"after-{int(sig)}", "Running", agent=a)
        assert (await status(kv, "jz", "long"))["attempt"] == 1
        assert (a.data_dir / "tasks" / "jz" / "long" / "workdir" / "starts").read_text().split() == ["x"]
    for t in ("long", f"after-{int(signal.SIGTERM)}", f"after-{int(signal.SIGKILL)}"):
        await unassign(kv, "n-zyg", "jz", t)


async def test_out_of_touch_past_ttl_and_grace_stops_every_task(tmp_path) -> None:
    """kvraft unreachable for longer than the lease TTL + --lease-loss-grace-s: the agent
    fences the node (every task stopped with its grace, nothing started); back in touch it
    reports the stopped attempts and restarts by policy the tasks still assigned here."""
    from agent.runtime.supervised import pid_alive, read_json
    from kvraft.client import Client
    from kvraft.server.local import LocalCluster
    from tests.agent.conftest import FAST_FLAGS, AgentProcess

    cluster = LocalCluster(1, tmp_path / "kv1", extra_args=FAST_FLAGS)
    agent = None
    try:
        cluster.start(timeout_s=90)
        urls = [m.client_url for m in cluster.members.values()]
        agent = AgentProcess(cluster, tmp_path, "n-fence", "process", "--lease-loss-grace-s", "1").start()
        async with Client(urls, request_timeout_s=15.0, dial_timeout_s=5.0) as kv:
            await assign(kv, "n-fence", "jf", "never", {"command": ["sleep", "300"], "grace_s": 2})
            await assign(kv, "n-fence", "jf", "again", {"command": ["sleep", "300"], "grace_s": 2,
                                                        "restart_policy": "OnFailure"})
            for t in ("never", "again"):
                await wait_status(kv, "jf", t, "Running", agent=agent)
        started = {t: read_json(agent.data_dir / "tasks" / "jf" / t / "1" / "started.json") for t in ("never", "again")}
        cluster.stop_member("m0", sig=signal.SIGKILL)

        async def stopped():  # dead, and its supervisor has recorded how (exit.json follows the reap)
            return all(not pid_alive(doc) and (agent.data_dir / "tasks" / "jf" / t / "1" / "exit.json").exists()
                       for t, doc in started.items())
        await wait_for(stopped, 60, "tasks stopped once out of touch past TTL + grace", agent)
        for t in ("never", "again"):
            exit_doc = read_json(agent.data_dir / "tasks" / "jf" / t / "1" / "exit.json")
            assert exit_doc is not None and exit_doc["signal"] == signal.SIGTERM, exit_doc
        assert "fenced" in agent.log_text()
        await asyncio.sleep(2)  # fenced: nothing restarts while out of touch
        assert sorted(p.name for p in (agent.data_dir / "tasks" / "jf" / "again").iterdir()) == ["1", "workdir"]
        cluster.start_member("m0")
        cluster.wait_ready(90)
        async with Client(urls, request_timeout_s=15.0, dial_timeout_s=5.0) as kv:
            never = await wait_status(kv, "jf", "never", "Failed", agent=agent, timeout_s=90)
            assert (never["attempt"], never["reason"], never["signal"]) == (1, "Killed", signal.SIGTERM)
            await wait_status(kv, "jf", "again", "Running", agent=agent, attempt=2, timeout_s=90)
            assert "unfenced" in agent.log_text()
        # an agent restarted while kvraft is unreachable fences too, counting from the
        # renewal time it saved (its own clock starts at zero)
        second = read_json(agent.data_dir / "tasks" / "jf" / "again" / "2" / "started.json")
        cluster.stop_member("m0", sig=signal.SIGKILL)
        agent.kill(signal.SIGKILL)
        agent.start()

        async def second_stopped():
            return not pid_alive(second) and (agent.data_dir / "tasks" / "jf" / "again" / "2" / "exit.json").exists()
        await wait_for(second_stopped, 60, "attempt 2 stopped by a restarted, unconnected agent", agent)
        exit_doc = read_json(agent.data_dir / "tasks" / "jf" / "again" / "2" / "exit.json")
        assert exit_doc is not None and exit_doc["signal"] == signal.SIGTERM, exit_doc
        cluster.start_member("m0")
        cluster.wait_ready(90)
        async with Client(urls, request_timeout_s=15.0, dial_timeout_s=5.0) as kv:
            for t in ("never", "again"):
                await unassign(kv, "n-fence", "jf", t)
    finally:
        if agent is not None:
            agent.teardown()
        cluster.stop()


async def test_a_saved_lease_that_does_not_read_is_replaced(agents, kv) -> None:
    """lease.json is the agent's own, but anyone can edit it: an id that was not a number
    (null, a list, 1e999) raised TypeError or OverflowError out of the registration, which
    ended the lease loop for good -- the agent ran on, never registered (the node NotReady,
    then fenced: every task stopped). Now such a lease is not kept: a new one is granted."""
    for i, saved in enumerate(('{"id": null}', '{"id": [1]}', '{"id": 1e999}', '{"id": "x"}', "[]")):
        a = agents(f"n-lease{i}")
        a.data_dir.mkdir(parents=True)
        (a.data_dir / "lease.json").write_text(saved)
        a.start()

        async def registered(name: str = a.name):
            resp = await kv.get(f"/registry/leases/{name}")
            return resp.kvs and resp.kvs[0].lease
        await wait_for(registered, 30, f"{a.name} registered with lease.json {saved}", a)
        a.kill()


async def test_a_data_dir_removed_under_the_agent_ends_it_with_a_reason(agents, kv) -> None:
    """The node record's disk facts come from statvfs on the data dir: with the dir removed
    (an operator's rm -rf, a disk unmounted), the next registration -- after the lease was
    lost -- raised FileNotFoundError out of the lease loop, which ended for good: the agent
    ran on, never registered again. Since 2026-12-06 the agent exits 1 naming the data dir
    (its tasks' state is gone: agent.datadir; test_daemon's test has the tasks), and nothing
    fails with a traceback before it does."""
    a = agents("n-nodata").start()

    async def lease():
        resp = await kv.get("/registry/leases/n-nodata")
        return resp.kvs[0].lease if resp.kvs else 0
    first = await wait_for(lease, 30, "registered", a)
    await asyncio.to_thread(__import__("shutil").rmtree, a.data_dir)
    await kv.lease_revoke(first)  # the lease is lost: the agent would register again
    assert a.proc is not None
    assert await asyncio.to_thread(a.proc.wait, 60) == 1, a.log_text()[-2000:]
    log = a.log_text()
    assert f"the data dir {a.data_dir} was removed while the agent ran" in log
    assert "Traceback" not in log, log[-3000:]
