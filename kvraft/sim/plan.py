"""``SimPlan``: every parameter of one simulated run, derived from its seed.

Swarm testing (as TigerBeetle's VOPR does): instead of one fault mix for every run, each seed
draws its own cluster size, Raft knobs, network and disk behaviour, workload and the set of
nemeses that are on, so that across seeds the runs explore very different corners. The plan
is printed in full before a run starts; ``SimPlan.describe()`` is that text.

Sub-random streams are derived from the seed by name (``derive_rng``), so adding a draw to one
stream does not shift any other.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, fields, replace

from kvraft.testing.simnet import NetFaults

__all__ = ["FAULT_KINDS", "SimPlan", "derive_rng"]

FAULT_KINDS = ("partition", "crash", "pause", "churn", "transfer")


def derive_rng(seed: int, name: str) -> random.Random:
    """An independent, reproducible stream for ``name`` (str seeds hash with SHA-512)."""
    return random.Random(f"kvraft-sim:{seed}:{name}")


@dataclass(frozen=True)
class SimPlan:
    seed: int
    # cluster and core
    members: int = 3
    spare_ids: int = 4
    """Ids above ``members`` that membership churn may add (never reused once removed)."""
    tick_us: int = 10_000
    tick_skew_ppm: tuple[int, ...] = ()
    """Per member (by id - 1): how much faster (+) or slower (-) its tick clock runs."""
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    step_while_busy: bool = True
    """Step messages into a member whose Ready is still being persisted (as etcd's
    asynchronous driver does); when false they wait until ``advance``."""
    snapshot_every: int = 50
    """Take a snapshot after this many applied entries; 0 = never."""
    compact_keep: int = 10
    """Entries kept behind a snapshot for slow followers."""
    # network and disk
    net: NetFaults = field(default_factory=NetFaults)
    fsync_us: tuple[int, int] = (200, 2_000)
    torn_p: float = 0.0
    """Probability that a crash leaves a torn tail rather than losing every un-synced write."""
    # workload
    clients: int = 3
    keys: int = 3
    think_us: tuple[int, int] = (0, 20_000)
    op_timeout_us: int = 400_000
    cas_p: float = 0.3
    get_p: float = 0.35
    follower_read_p: float = 0.1
    # nemesis
    faults: tuple[str, ...] = FAULT_KINDS
    crash_after_vote_p: float = 0.0
    """With ``crash`` on: probability that a member crashes right after granting a vote (and
    restarts within a few ms, while the term may still be running)."""
    crash_after_append_p: float = 0.0
    """With ``crash`` on: probability that a leader crashes a few ms after accepting a
    proposal or after winning an election (the Figure 8 pattern: entries of dead leaders'
    terms left half replicated)."""
    fault_every_us: tuple[int, int] = (50_000, 400_000)
    fault_length_us: tuple[int, int] = (50_000, 600_000)
    safety_us: int = 3_000_000
    liveness_ticks: int = 150
    """Bound on the liveness phase, in ticks of the slowest member (see docs/testing.md)."""

    @classmethod
    def from_seed(cls, seed: int, safety_us: int | None = None) -> SimPlan:
        r = derive_rng(seed, "plan")
        members = r.choices([1, 3, 5], weights=[1, 12, 7])[0]
        drop_p = r.choice([0.0, 0.0, 0.01, 0.05, 0.15])
        dup_p = r.choice([0.0, 0.0, 0.02, 0.1])
        delay_min = r.choice([100, 300, 1_000])
        delay_max = delay_min + r.choice([500, 2_000, 8_000])
        reorder_p = r.choice([0.0, 0.0, 0.05, 0.2])
        reorder_max = r.choice([5_000, 30_000, 100_000])
        net = NetFaults(drop_p, dup_p, delay_min, delay_max, reorder_p, reorder_max)
        fsync_lo = r.choice([50, 200, 1_000])
        faults = tuple(k for k in FAULT_KINDS if r.random() < 0.6)
        # flow control: tiny messages (one entry each) or a tiny window, not both, which
        # would catch a member up one entry per round trip (legal, but then "heals within
        # the bound" would measure the catch-up, not whether the cluster is stuck)
        max_size = r.choice([1 << 20, 1 << 20, 256, 64])
        inflight = r.choice([256, 256, 4, 1]) if max_size > 256 else r.choice([256, 16])
        skew = tuple(
            r.choice([0, 0, 0, 20_000, -20_000, 50_000, -50_000]) for _ in range(members + 4)
        )
        plan = cls(
            seed=seed,
            members=members,
            tick_skew_ppm=skew,
            pre_vote=r.random() < 0.85,
            check_quorum=r.random() < 0.85,
            max_size_per_msg=max_size,
            max_inflight_msgs=inflight,
            step_while_busy=r.random() < 0.7,
            snapshot_every=r.choice([0, 10, 30, 100]),
            compact_keep=r.choice([0, 5, 20]),
            net=net,
            fsync_us=(fsync_lo, fsync_lo + r.choice([200, 1_000, 5_000])),
            torn_p=r.choice([0.0, 0.3, 0.8]),
            clients=r.randint(1, 5),
            keys=r.choice([1, 2, 3, 5]),
            think_us=(0, r.choice([2_000, 20_000, 60_000])),
            op_timeout_us=r.choice([200_000, 400_000, 1_000_000]),
            cas_p=r.choice([0.1, 0.3, 0.5]),
            get_p=r.choice([0.2, 0.35, 0.5]),
            follower_read_p=r.choice([0.0, 0.1, 0.3]),
            faults=faults,
            crash_after_vote_p=r.choice([0.0, 0.0, 0.1, 0.4]) if "crash" in faults else 0.0,
            crash_after_append_p=r.choice([0.0, 0.0, 0.02, 0.1]) if "crash" in faults else 0.0,
            fault_every_us=r.choice([(20_000, 150_000), (50_000, 400_000), (200_000, 1_000_000)]),
            fault_length_us=r.choice([(20_000, 200_000), (50_000, 600_000), (300_000, 1_500_000)]),
        )
        if safety_us is not None:
            # The 150-tick bound was measured for the default 3 s safety phase. A longer one
            # grows the log a member added late (or cut off) must replay when no snapshot is
            # taken (snapshot_every=0), so the bound grows with it; otherwise "heals within
            # the bound" measures catch-up speed, not "stuck" (seed 44180 at --safety-ms
            # 12000: a learner added 0.65 s before the heal, 1,817 entries of one 64-byte
            # message each, converged after 166 ticks).
            scale = max(1.0, safety_us / plan.safety_us)
            plan = replace(
                plan, safety_us=safety_us, liveness_ticks=math.ceil(plan.liveness_ticks * scale)
            )
        return plan

    @property
    def election_timeout_us(self) -> int:
        return self.election_ticks * self.tick_us

    def describe(self) -> str:
        """Every parameter, one ``name=value`` pair per item, in field order."""
        out = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "net":
                out += [f"net.{k}={x}" for k, x in asdict(v).items()]
            elif isinstance(v, tuple):
                out.append(f"{f.name}=" + (",".join(map(str, v)) or "-"))
            else:
                out.append(f"{f.name}={v}")
        return " ".join(out)
