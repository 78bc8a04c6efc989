"""Stopping the agent never hangs: a stop that lands as the reconcile loop is woken still ends it.

On Python 3.11, ``asyncio.wait_for`` returns the inner result when the outer task is cancelled
in the same tick as the inner one completes, and the cancel is lost: the reconcile loop went on,
``Agent.stop`` awaited it for ever, and systemd had to kill the agent after its stop timeout.
"""

from __future__ import annotations

import asyncio

from agent.agent import Agent
from agent.config import AgentConfig
from agent.runtime.fake import FakeRuntime
from kvraft.aio import cancel_and_wait
from kvraft.server.local import free_port
from kvraft.testing.stopping import stops_in_time


async def test_stop_as_the_reconcile_loop_is_woken_ends_it(tmp_path) -> None:
    # nothing listens there: the agent keeps dialling while its reconcile loop runs
    cfg = AgentConfig(endpoints=[f"127.0.0.1:{free_port()}"], name="n-stop", data_dir=tmp_path,
                      relist_s=30.0)
    agent = Agent(cfg, FakeRuntime())
    await agent.start()
    await asyncio.sleep(0.2)  # the reconcile loop is waiting to be woken
    agent.wake()  # in the same tick as stop() cancels the loop
    assert await stops_in_time(agent.stop(), agent._tasks), "stop() hung: the reconcile loop lost its cancel"


async def test_a_gpu_of_a_start_still_in_flight_is_not_given_again(tmp_path) -> None:
    """A Start waits on kvraft for the rank environment (the job's binding, a scoped token)
    before the runtime records the attempt; a pass in that window saw no attempt holding the
    GPU and started the task of an assignment naming it that came meanwhile (written by
    hand). GPUs of starts in flight count as held."""
    from pathlib import Path

    from agent.spec import parse_assignment

    data = Path(__file__).parent / "data"
    inv = tmp_path / "gpus.yaml"
    inv.write_text((data / "fake_gpus.yaml").read_text().replace("TOPO", str(data / "topo_v100x8.txt")))
    cfg = AgentConfig(endpoints=[f"127.0.0.1:{free_port()}"], name="n-inflight", data_dir=tmp_path / "agent",
                      gpu_inventory=str(inv), relist_s=30.0)
    runtime = FakeRuntime()
    agent = Agent(cfg, runtime)
    held = asyncio.Event()

    async def rank_env_from_kvraft(spec, key="", attempt=0):
        await held.wait()  # the gets of the binding and the job, or the token grant, take a while
        return spec

    agent._with_rank_env = rank_env_from_kvraft  # type: ignore[method-assign]

    def assign(key: str) -> None:
        agent.desired[key] = parse_assignment(key, 5, {"spec": {"command": ["fake", "run"], "resources": {"gpus": [0]}}})

    assign("b/0")
    first = await agent.reconcile_once()
    assert [(type(a).__name__, a.key) for a in first] == [("Start", "b/0")]
    await asyncio.sleep(0.1)  # b/0's start waits on kvraft
    assign("a/0")  # written by hand, on b/0's GPU
    await agent.reconcile_once()
    held.set()
    await asyncio.sleep(0.2)
    assert runtime.started == [("b/0", 1)], "a/0 started on the GPU of b/0, whose start was in flight"
    await cancel_and_wait(*agent._action_tasks)
    await agent.client.close()


async def test_a_stop_lets_a_start_in_flight_finish(tmp_path) -> None:
    """Stopping the agent (SIGTERM: an upgrade, systemctl restart) cancelled a Start in flight
    -- a runc bundle or an image being unpacked, the rank environment read from kvraft --
    after its handle was written and before its supervisor ran: the next agent found an
    attempt that never started and reported it Failed/Lost, failing the task (and its gang).
    A stop now lets starts in flight finish (for a while); the task runs under its supervisor
    and the next agent re-attaches."""
    from agent.spec import parse_assignment

    cfg = AgentConfig(endpoints=[f"127.0.0.1:{free_port()}"], name="n-stop-start", data_dir=tmp_path / "agent",
                      relist_s=30.0)
    runtime = FakeRuntime()
    agent = Agent(cfg, runtime)
    slow = asyncio.Event()

    async def rank_env_from_kvraft(spec, key="", attempt=0):
        slow.set()
        await asyncio.sleep(0.5)  # the start is under way
        return spec

    agent._with_rank_env = rank_env_from_kvraft  # type: ignore[method-assign]
    agent.desired = {"j/0": parse_assignment("j/0", 5, {"spec": {"command": ["fake", "run"]}})}
    await agent.reconcile_once()
    await slow.wait()
    assert await stops_in_time(agent.stop(), agent._tasks), "stop() hung"
    assert runtime.started == [("j/0", 1)], "the start in flight was cancelled"
