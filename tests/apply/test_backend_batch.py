"""The state machine's group commit under etcd's ``--backend-batch-interval`` and
``--backend-batch-limit``, and its slow-apply threshold under
``--experimental-warning-apply-duration`` (``StateMachine(commit_interval_s=, commit_ops=,
warn_apply_s=)``)."""

from __future__ import annotations

from pathlib import Path

from kvraft.apply.ops import CompactOp, PutOp, RangeOp
from kvraft.apply.state_machine import StateMachine
from kvraft.server.membership import Membership


def machine(path: Path, **settings: float) -> StateMachine:
    return StateMachine(path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership(),
                        **settings)  # type: ignore[arg-type]


def test_held_ops_commit_at_the_limit_and_not_before(tmp_path: Path) -> None:
    sm = machine(tmp_path, commit_interval_s=3600.0, commit_ops=5)
    try:
        for index in range(1, 5):
            sm.apply_ops([(index, PutOp(b"k%d" % index, b"v"))], index, 1)
        assert sm.holding and sm.commits == 0
        assert sm.range(RangeOp(b"k1")).kvs[0].value == b"v"  # held, and read on the member's thread
        sm.apply_ops([(5, PutOp(b"k5", b"v"))], 5, 1)
        assert not sm.holding and sm.commits == 1
    finally:
        sm.close()


def test_an_interval_of_zero_commits_every_apply(tmp_path: Path) -> None:
    sm = machine(tmp_path, commit_interval_s=0.0, commit_ops=10_000)
    try:
        for index in range(1, 4):
            sm.apply_ops([(index, PutOp(b"k", b"v"))], index, 1)
        assert sm.commits == 3
    finally:
        sm.close()


def test_a_compaction_is_not_stalled_by_a_long_interval(tmp_path: Path) -> None:
    """The compactor takes the writer lock between its batches; a unit held for the whole
    interval (an hour here) kept it waiting that long, and a physical compaction's request
    with it. While a compaction runs, units commit at their apply."""
    sm = machine(tmp_path, commit_interval_s=3600.0, commit_ops=10_000)
    try:
        for index in range(1, 11):
            sm.apply_ops([(index, PutOp(b"k", b"%d" % index))], index, 1)
        [result] = sm.apply_ops([(11, CompactOp(9))], 11, 1)
        assert result.job.wait(10), "the compaction waited for the held units' commit"
        assert result.job.error is None and result.job.deleted == 7  # revisions 2-8 of the key
        sm.apply_ops([(12, PutOp(b"k", b"after"))], 12, 1)
        assert sm.holding  # no compaction running: units are held again
    finally:
        sm.close()


def test_the_slow_apply_threshold_is_a_setting(tmp_path: Path) -> None:
    sm = machine(tmp_path, warn_apply_s=0.0)
    try:
        sm.apply_ops([(1, PutOp(b"k", b"v"))], 1, 1)
        sm.range(RangeOp(b"k"))
        assert sm.slow_applies == 2
    finally:
        sm.close()
