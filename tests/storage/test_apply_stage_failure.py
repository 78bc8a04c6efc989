"""An apply stage that failed applies nothing more.

Found by the ``failing-disk`` robustness scenario under load: the new leader's apply stage
died on a failed batch, but the Ready loop went on applying later committed entries inline
(``apply_now``: the stage's queue was empty, so it looked idle). Those entries landed on a
state without the failed batch, so they took its revisions: a client's PUT was answered
with a revision the cluster gave to another write, the state machine's close committed
that state, and the restarted member refused to start (its hash differed from its peers').
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kvraft.apply.ops import PutOp, encode_entry
from kvraft.raft.types import ConfState, Entry
from kvraft.server.apply_stage import ApplyStage
from kvraft.server.reads import AppliedWaiters


class FlakyTarget:
    """A state machine whose first batch fails as a failed disk would."""

    def __init__(self) -> None:
        self.applied: list[int] = []
        self.calls = 0

    def apply_ops(self, items: list[tuple[int, Any]], index: int, term: int) -> list[Any]:
        self.calls += 1
        if self.calls == 1:
            raise OSError(5, "injected I/O error")
        self.applied.append(index)
        return [None] * len(items)


def _entries(first: int, n: int) -> tuple[Entry, ...]:
    return tuple(Entry(2, i, data=encode_entry(i, PutOp(b"k", str(i).encode()))) for i in range(first, first + n))


async def test_after_a_failed_batch_nothing_more_is_applied() -> None:
    target = FlakyTarget()
    stage = ApplyStage(target, {}, AppliedWaiters(), ConfState(voters=frozenset({1})), lambda: None)
    task = asyncio.create_task(stage.run())
    stage.submit_entries(_entries(1, 3), ConfState(voters=frozenset({1})))
    with pytest.raises(OSError):
        await task
    assert stage.failed is not None
    assert not stage.idle()  # so the driver never applies inline after the failure
    with pytest.raises(OSError):
        stage.apply_now(_entries(4, 2), ConfState(voters=frozenset({1})))
    assert target.applied == [] and stage.applied.applied == 0
