"""TimeToLive on a follower (986f4a1: keepalives renewed in memory on the leader, the
remaining TTL replicated by batched checkpoints): once the checkpoint of the leader's
latest renewal is applied, a follower answers never below the leader and at most the
apply delay plus one second above it (the checkpoint carries whole seconds, rounded up, as
etcd's); before it is applied, the follower trails by at most the time since the previous
checkpoint was applied (plus the rounding). Pure
lessors, the leader's checkpoints applied on the follower after a delay."""

from __future__ import annotations

import random

from kvraft.lease import Lessor


def test_a_followers_ttl_stays_within_checkpoint_granularity() -> None:
    rng = random.Random(7)
    for _trial in range(200):
        leader, follower = Lessor(min_ttl_s=1), Lessor(min_ttl_s=1)
        ttl = rng.randint(2, 60)
        t = rng.uniform(0, 1000)
        for lessor in (leader, follower):
            lessor.grant(1, ttl, t)
        leader.promote(t)
        checkpointed_at = t
        for _ in range(rng.randint(1, 6)):
            t += rng.uniform(0.0, ttl * 0.8)
            assert leader.keepalive(1, t) == ttl
            proposed = t + rng.uniform(0.0, 0.1)  # the next lease-loop turn
            due = dict(leader.checkpoints_due(proposed, 10.0))
            assert 1 in due
            applied = proposed + rng.uniform(0.0, 0.5)  # committed and applied on the follower
            for now in (t, proposed, applied - 1e-6):  # not applied yet: trails the leader
                assert leader.remaining(1, now) - follower.remaining(1, now) <= now - checkpointed_at + 1
            leader.checkpoint(1, due[1], applied)
            follower.checkpoint(1, due[1], applied)
            checkpointed_at = applied
            for later in (applied, applied + rng.uniform(0, ttl / 2)):
                lead, follow = leader.remaining(1, later), follower.remaining(1, later)
                assert lead <= follow <= lead + 2, (ttl, lead, follow)  # (apply delay < 1 s)
