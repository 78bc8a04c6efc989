"""An agent stopping ends its log follows at once.

Before, an agent stopped by SIGTERM (a restart, an upgrade) while ``jobctl logs -f`` followed
a running task did not exit for aiohttp's whole shutdown timeout (60 s): the follow went on
polling the live task, and aiohttp waits for every request before it closes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import aiohttp

from tests.agent.conftest import assign, wait_status

STOP_BOUND_S = 30.0
"""Half of aiohttp's shutdown timeout: past it, the agent waited for the follow."""


async def test_an_agent_with_a_follow_open_stops_at_once(agents, kv) -> None:
    a = agents("n-stopf", "process").start()
    code = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.2)\n"
    await assign(kv, "n-stopf", "jf", "t", {"command": ["/usr/bin/python3", "-c", code]})
    await wait_status(kv, "jf", "t", "Running", agent=a)
    async with aiohttp.ClientSession() as http, \
            http.get(f"{a.url}/logs/jf/t?follow=1", timeout=aiohttp.ClientTimeout(120)) as r:
        assert (await r.content.readline()).strip() == b"tick"
        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        try:
            await asyncio.to_thread(a.proc.wait, STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the agent did not exit within {STOP_BOUND_S} s of SIGTERM with a follow open") from None
        rest = await r.content.read()  # the follow ended with the agent, its response whole
    assert time.monotonic() - began < STOP_BOUND_S
    assert set(rest.split()) <= {b"tick"}
