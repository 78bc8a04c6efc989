"""The fake agent the daemon tests run (scheduler/fake_agent.py): a status write the cluster
fails now and then is written again, as the real agent's reconcile loop does. Before, one
lost write ended the task's run and left the job without a phase for ever: a candidate cause
(not reproduced in 12 runs under load) of a "timed out waiting for g running" in one full run
of tests/scheduler_daemon/test_suspect_nodes.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from kvraft.client import EndpointError, PermissionDeniedError, UnavailableError
from scheduler import keys
from scheduler.fake_agent import FakeAgent, FakeNode


class _Answer:
    succeeded = True


class _Txn:
    def __init__(self, client: _FlakyClient) -> None:
        self.client = client
        self.ops: tuple[Any, ...] = ()

    def if_(self, *_compares: Any) -> _Txn:
        return self

    def then(self, *ops: Any) -> _Txn:
        self.ops = ops
        return self

    async def commit(self) -> _Answer:
        self.client.calls += 1
        if self.client.failures:
            raise self.client.failures.pop(0)
        self.client.written.extend(self.ops)
        return _Answer()


class _FlakyClient:
    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0
        self.written: list[Any] = []

    def txn(self) -> _Txn:
        return _Txn(self)


async def _run_once(client: _FlakyClient) -> FakeAgent:
    agent = FakeAgent(client, [FakeNode("n0", 8, "A100", "rack-0")])  # type: ignore[arg-type]
    doc = {"spec": {"command": ["serve"]}}
    agent._on_put(keys.assignment_key("n0", "j/worker-0"), 7, json.dumps(doc).encode())
    async with asyncio.timeout(10):
        await agent.running["n0/j/worker-0"]
    return agent


async def test_a_status_write_that_fails_for_a_while_is_written_again() -> None:
    client = _FlakyClient(UnavailableError("etcdserver: leader changed"), TimeoutError("request timed out"),
                          EndpointError("no endpoint answered"), ConnectionResetError())
    agent = await _run_once(client)
    assert client.calls == 5 and agent.status_retries == 4 and agent.statuses_written == 1
    (op,) = client.written
    assert json.loads(op.body["value"])["phase"] == "Running" and op.body["key"] == keys.status_key("j/worker-0").encode()


async def test_a_permanent_error_is_not_retried() -> None:
    client = _FlakyClient(PermissionDeniedError("etcdserver: permission denied"))
    with pytest.raises(PermissionDeniedError):
        await _run_once(client)
    assert client.calls == 1


async def test_a_new_assignment_under_a_key_already_run_is_started() -> None:
    """The gang restarted while the watch was away: a relist shows the key with another
    assignment revision. The old run's entry stays in ``running`` once its Running is written
    (a ``serve`` task ends there), and the agent skipped on the key alone: the new assignment
    never got its Running. The same revision again (a plain relist) starts nothing."""
    client = _FlakyClient()
    agent = await _run_once(client)  # revision 7, Running written
    doc = json.dumps({"spec": {"command": ["serve"]}}).encode()
    agent._on_put(keys.assignment_key("n0", "j/worker-0"), 7, doc)
    assert agent.statuses_written == 1
    agent._on_put(keys.assignment_key("n0", "j/worker-0"), 12, doc)
    async with asyncio.timeout(10):
        await agent.running["n0/j/worker-0"]
    assert agent.statuses_written == 2
    revisions = [json.loads(op.body["value"])["assignment_revision"] for op in client.written]
    assert revisions == [7, 12]
