"""An agent killed while it started an attempt (SIGKILL, OOM, a power cut between the
attempt's handle and its supervisor): the next agent finds an attempt that never ran. It is
no exit of the task's (reconcile rule 5b): the runtime marks it ``never_ran``, and the
reconcile starts the task again whatever its restart policy. Until 2026-12-06 it was
reported Failed/Lost, and a task with restart policy Never (a gang's rank) failed its job."""

from __future__ import annotations

import asyncio
import json

import pytest

from agent.reconcile import AttemptState, Cleanup, Phase, Reported, Start, reconcile
from agent.runtime.process import ProcessRuntime
from agent.runtime.supervised import read_json
from agent.spec import Assignment, parse_spec
from tests.agent.runtime_helpers import NODE, run

SPEC = {"command": ["sleep", "60"], "restart_policy": "Never"}


async def _interrupted_start(rt: ProcessRuntime, key: str) -> None:
    """A start that stops where a killed agent would: after the handle, before the supervisor."""

    async def killed(*_args: object) -> None:
        raise asyncio.CancelledError

    rt._prepare = killed  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await rt.start(run(key, SPEC))
    handle = rt.attempt_dir(key, 1) / "handle.json"
    doc = json.loads(handle.read_text())
    doc["created_at"] -= 60  # the next agent comes up later than the starting grace
    handle.write_text(json.dumps(doc))


async def test_an_attempt_the_agent_died_starting_never_ran(data_dir) -> None:
    await _interrupted_start(ProcessRuntime(data_dir, NODE), "j/0")
    after = ProcessRuntime(data_dir, NODE)  # the restarted agent's
    [o] = await after.observe()
    assert (o.state, o.never_ran, o.exit.reason) == (AttemptState.LOST, True, "Lost"), o
    assert "never started" in o.exit.message
    assert read_json(after.attempt_dir("j/0", 1) / "lost.json")["never_ran"] is True
    [again] = await ProcessRuntime(data_dir, NODE).observe()  # read back from lost.json
    assert again.never_ran and again.state is AttemptState.LOST

    desired = {"j/0": Assignment("j/0", 1, parse_spec(SPEC))}
    actions = reconcile(desired, [again], {"j/0": Reported(1, 1, Phase.STARTING)}, 100.0, stimulus_id="t")
    assert [type(a) for a in actions] == [Cleanup, Start], actions
    assert actions[1].attempt == 2

