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
