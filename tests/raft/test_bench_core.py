"""``python -m kvraft.bench raft-core``: it drives a real 3-member core through every write
and refuses to report figures for a cluster that did not commit them all."""

from __future__ import annotations

import json

import pytest

from kvraft.bench import raft_core
from kvraft.bench.__main__ import main
from kvraft.raft.rawnode import RawNode
from kvraft.raft.types import Message


def test_every_write_is_committed_on_every_member_and_timed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["raft-core", "--writes", "300", "--warmup", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["writes"] == 300 and out["committed"] >= 320
    assert out["leader_us_per_write"] > 0 and out["follower_us_per_write"] > 0


def test_a_core_that_stops_replicating_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    real_step = RawNode.step

    def followers_deaf_once_led(self: RawNode, msg: Message) -> None:
        if self.raft.id != 1 and self.raft.lead != 0:
            return
        real_step(self, msg)

    monkeypatch.setattr(RawNode, "step", followers_deaf_once_led)
    with pytest.raises(RuntimeError, match="did not commit"):
        raft_core.measure(50, warmup=5)
