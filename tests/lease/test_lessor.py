from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvraft.lease import LeaseExists, LeaseNotFound, LeaseTTLTooLarge, Lessor
from kvraft.testing.clock import ManualClock


def test_grant_minimum_maximum_and_duplicates() -> None:
    lessor = Lessor(min_ttl_s=2)
    assert lessor.grant(1, 0, 0.0).ttl_s == 2
    assert lessor.grant(2, 60, 0.0).ttl_s == 60
    with pytest.raises(LeaseExists):
        lessor.grant(2, 5, 0.0)
    with pytest.raises(LeaseTTLTooLarge):
        lessor.grant(3, 9_000_000_001, 0.0)
    assert lessor.remaining(2, 0.0) == 60
    assert lessor.remaining(2, 0.5) == 60  # ceil, like etcd's TimeToLive
    assert lessor.remaining(2, 1.0) == 59
    assert lessor.remaining(99, 0.0) == -1


def test_only_the_primary_expires_and_retries_lost_revokes() -> None:
    clock = ManualClock()
    lessor = Lessor(min_ttl_s=1, revoke_retry_s=3)
    lessor.grant(7, 5, clock.monotonic())
    clock.advance(6)
    assert lessor.expired(clock.monotonic()) == []  # follower: never decides
    lessor.promote(clock.monotonic())
    assert lessor.expired(clock.monotonic()) == [7]
    clock.advance(1)
    assert lessor.expired(clock.monotonic()) == []  # revoke in flight
    clock.advance(3)
    assert lessor.expired(clock.monotonic()) == [7]  # proposal lost: named again
    lessor.attach(7, b"k2")
    lessor.attach(7, b"k1")
    assert lessor.revoke(7) == [b"k1", b"k2"]
    assert lessor.expired(clock.monotonic() + 100) == []
    with pytest.raises(LeaseNotFound):
        lessor.revoke(7)
    with pytest.raises(LeaseNotFound):
        lessor.renew(7, 0.0)


def test_renew_pushes_the_deadline() -> None:
    clock = ManualClock()
    lessor = Lessor()
    lessor.promote(0.0)
    lessor.grant(1, 10, clock.monotonic())
    for _ in range(5):
        clock.advance(8)
        assert lessor.expired(clock.monotonic()) == []
        assert lessor.renew(1, clock.monotonic()) == 10
    clock.advance(10.001)
    assert lessor.expired(clock.monotonic()) == [1]


def test_remaining_ttl_survives_failover_and_restart() -> None:
    """Leader A and follower B apply the same entries (B a little later); A dies; B keeps
    A's deadline rather than granting a fresh full TTL."""
    a, b = Lessor(), Lessor()
    a.promote(0.0)
    for lessor, t in ((a, 0.0), (b, 0.01)):
        lessor.grant(5, 30, t)
    assert a.checkpoints_due(10.0, interval_s=10) == [(5, 20)]
    for lessor, t in ((a, 10.0), (b, 10.01)):
        lessor.checkpoint(5, 20, t)
    # A dies at t=12; B is elected at t=14
    b.promote(14.0)
    assert b.remaining(5, 14.0) == 17
    assert b.expired(29.9) == []
    assert b.expired(30.02) == [5]
    # a member restarted from persisted records starts from the remaining TTL
    c = Lessor()
    c.restore(b.records(25.0), now=1000.0)
    assert c.remaining(5, 1000.0) == 6


def test_checkpoints_due_skips_recently_renewed() -> None:
    lessor = Lessor()
    lessor.promote(0.0)
    lessor.grant(1, 100, 0.0)
    lessor.grant(2, 100, 0.0)
    lessor.renew(2, 50.0)
    assert lessor.checkpoints_due(60.0, interval_s=30) == [(1, 40)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["grant", "renew", "revoke", "tick", "ckpt"]), st.integers(1, 4), st.integers(1, 20)), max_size=60))
def test_expiry_matches_a_naive_model(ops) -> None:
    """Nothing is expired early, and a lease past its deadline is named within one call."""
    lessor = Lessor(min_ttl_s=1)
    lessor.promote(0.0)
    now = 0.0
    deadline: dict[int, float] = {}
    for op, lid, n in ops:
        if op == "grant" and lid not in deadline:
            lessor.grant(lid, n, now)
            deadline[lid] = now + n
        elif op == "renew" and lid in deadline:
            lessor.renew(lid, now)
            deadline[lid] = now + lessor.leases[lid].ttl_s
        elif op == "revoke" and lid in deadline:
            lessor.revoke(lid)
            del deadline[lid]
        elif op == "ckpt" and lid in deadline:
            left = lessor.remaining(lid, now)
            if left > 0:
                lessor.checkpoint(lid, left, now)
                deadline[lid] = now + left
        elif op == "tick":
            now += n / 4
            named = lessor.expired(now, limit=10)
            assert all(deadline[i] <= now for i in named)
            overdue = {i for i, d in deadline.items() if d <= now}
            assert overdue <= set(named) | set(lessor._revoking)
            for i in named:
                lessor.revoke(i)
                del deadline[i]
