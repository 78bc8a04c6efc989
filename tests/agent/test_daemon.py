"""kvraft-agent against a real kvraft cluster: registration, tasks, status, lease loss."""

from __future__ import annotations

import json

from tests.agent.conftest import assign, status, unassign, wait_for, wait_status


async def test_registers_runs_and_reports(agents, kv) -> None:
    a = agents("n-basic").start()

    async def registered():
        resp = await kv.get("/registry/nodes/n-basic")
        lease = await kv.get("/registry/leases/n-basic")
        return json.loads(resp.kvs[0].value) if resp.kvs and lease.kvs and lease.kvs[0].lease else None

    node = await wait_for(registered, 60, "node registered", a)
    assert node["cpu_milli"] > 0 and node["memory_mib"] > 0
    assert {c["type"] for c in node["conditions"]} >= {"Ready", "MemoryPressure", "DiskPressure", "GPUHealthy"}
    await assign(kv, "n-basic", "j1", "ok", {"command": ["sh", "-c", "echo hello; exit 0"]})
    await assign(kv, "n-basic", "j1", "bad", {"command": ["sh", "-c", "echo oops >&2; exit 3"]})
    ok = await wait_status(kv, "j1", "ok", "Succeeded", agent=a)
    bad = await wait_status(kv, "j1", "bad", "Failed", agent=a)
    assert (ok["exit_code"], ok["reason"], ok["node"]) == (0, "Completed", "n-basic")
    assert (bad["exit_code"], bad["reason"]) == (3, "Error")
    assert "oops" in bad["log_tail"]
    await unassign(kv, "n-basic", "j1", "ok")
    await unassign(kv, "n-basic", "j1", "bad")
    assert (await status(kv, "j1", "ok"))["phase"] == "Succeeded"
