"""The nemesis: faults at seeded times during the safety phase.

Every ``fault_every_us`` (a uniform draw from the plan's range) it picks one of the fault kinds
the plan switched on and acts; most faults undo themselves after a ``fault_length_us`` draw.

==========  ===================================================================================
kind        what it does
==========  ===================================================================================
partition   one shape, replacing any earlier one, healed after a while: ``isolate`` a member;
            ``isolate-leader``; ``split`` into a minority and a majority; ``asym-in`` (a member
            can send but not receive) and ``asym-out`` (the reverse); ``partial`` (a member
            reaches only one other, the Howard-Abraham topology); ``bridge`` (two halves that
            talk only through one member)
crash       a member (the leader half the time) crashes, losing its un-synced writes (a torn
            tail with the plan's ``torn_p``), and restarts after a while; several may be down
            at once, all of them included. With ``crash_after_vote_p`` a member also crashes
            right after granting a vote (back within 0.5-5 ms), and with
            ``crash_after_append_p`` a leader crashes a few ms after accepting a proposal
            or after being elected (its no-op)
pause       a member stops (SIGSTOP): no ticks, messages queue up; resumes after a while
churn       one membership change through the leader: add a learner, promote a learner,
            add a voter, remove a voter (the leader included), remove a learner, or replace a
            voter in one joint change; voters stay within [min(3, initial), 5] and are never cut from 2 to 1
transfer    the leader is asked to hand leadership to another voter
==========  ===================================================================================

Message drops, duplicates, delays and reordering are on the network for the whole safety
phase (the plan's ``net``); ``heal_all`` ends every fault for the liveness phase.
"""

from __future__ import annotations

import random

from kvraft.raft.errors import RaftError
from kvraft.raft.types import ConfChange, ConfChangeType
from kvraft.sim.cluster import Member, SimCluster
from kvraft.testing.simnet import NetFaults

__all__ = ["Nemesis"]

PARTITIONS = ("isolate", "isolate-leader", "split", "asym-in", "asym-out", "partial", "bridge")


class Nemesis:
    def __init__(self, cluster: SimCluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.plan = cluster.plan
        self.running = False
        self._partition_epoch = 0
        self.counts: dict[str, int] = {}

    def start(self) -> None:
        if self.plan.faults:
            self.running = True
            self.cluster.schedule(self.rng.randint(*self.plan.fault_every_us), self._act)
        if self.plan.crash_after_vote_p:
            self.cluster.on_vote_granted = self._after_vote
        if self.plan.crash_after_append_p:
            self.cluster.on_proposal_accepted = self._after_append

    def stop(self) -> None:
        self.running = False

    def heal_all(self) -> None:
        """End every fault: network healed and calm, every member up and running."""
        c = self.cluster
        self._partition_epoch += 1
        c.net.heal()
        f = self.plan.net
        c.net.faults = NetFaults(delay_min_us=f.delay_min_us, delay_max_us=f.delay_max_us)
        for m in list(c.members.values()):
            if m.retired:
                continue
            if not m.alive:
                c.restart(m)
            elif m.paused:
                c.resume(m)
        self._log("heal", "everything")

    def _log(self, kind: str, detail: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.cluster.trace.emit(self.cluster.now, "nem", kind, detail)

    def _length(self) -> int:
        return self.rng.randint(*self.plan.fault_length_us)

    def _act(self) -> None:
        if not self.running:
            return
        kind = self.rng.choice(self.plan.faults)
        getattr(self, "_" + kind)()
        self.cluster.schedule(self.rng.randint(*self.plan.fault_every_us), self._act)

    def _pick(self, prefer_leader: bool = False) -> Member | None:
        c = self.cluster
        if prefer_leader and self.rng.random() < 0.5:
            lead = c.leader()
            if lead is not None:
                return lead
        live = sorted(c.live(), key=lambda m: m.id)
        return self.rng.choice(live) if live else None

    # -- the faults ----------------------------------------------------------------------

    def _partition(self) -> None:
        c, r = self.cluster, self.rng
        ids = sorted(m.id for m in c.members.values() if not m.retired)
        if len(ids) < 2:
            return
        shape = r.choice(PARTITIONS)
        lead = c.leader()
        victim = lead.id if (shape == "isolate-leader" and lead) else r.choice(ids)
        c.net.heal()
        others = [i for i in ids if i != victim]
        if shape in ("isolate", "isolate-leader"):
            c.net.isolate(victim)
            detail = f"isolate {victim}"
        elif shape == "split":
            shuffled = ids[:]
            r.shuffle(shuffled)
            k = r.randint(1, len(ids) // 2)
            c.net.partition([shuffled[:k], shuffled[k:]])
            detail = f"split {sorted(shuffled[:k])} | {sorted(shuffled[k:])}"
        elif shape == "asym-in":
            for o in others:
                c.net.cut(o, victim)
            detail = f"asym {victim} hears nobody"
        elif shape == "asym-out":
            for o in others:
                c.net.cut(victim, o)
            detail = f"asym nobody hears {victim}"
        elif shape == "partial":
            peer = r.choice(others)
            c.net.reach_only(victim, [peer])
            detail = f"partial {victim} reaches only {peer}"
        else:  # bridge
            shuffled = others[:]
            r.shuffle(shuffled)
            half = len(shuffled) // 2
            a, b = shuffled[:half], shuffled[half:]
            for x in a:
                for y in b:
                    c.net.cut(x, y)
                    c.net.cut(y, x)
            detail = f"bridge {sorted(a)} <{victim}> {sorted(b)}"
        self._partition_epoch += 1
        self._log("partition", f"{shape}: {detail}")
        self.cluster.schedule(self._length(), self._heal_partition, self._partition_epoch)

    def _heal_partition(self, epoch: int) -> None:
        if epoch == self._partition_epoch and self.running:
            self.cluster.net.heal()
            self._log("heal", "network")

    def _crash(self) -> None:
        m = self._pick(prefer_leader=True)
        if m is None:
            return
        self.cluster.crash(m)
        self._log("crash", f"member {m.id}")
        self.cluster.schedule(self._length(), self._restart, m)

    def _after_vote(self, m: Member) -> None:
        """Vote, then crash at once; back within a few ms, maybe in time to be asked again
        in the same term (a lost vote would let it vote twice)."""
        if self.running and self.rng.random() < self.plan.crash_after_vote_p:
            self.cluster.schedule(0, self._crash_now, m, "after voting", (500, 5_000))

    def _after_append(self, m: Member) -> None:
        """A leader that just accepted a proposal crashes a few ms later (Figure 8)."""
        if self.running and self.rng.random() < self.plan.crash_after_append_p:
            delay = self.rng.randint(0, 3 * self.plan.net.delay_max_us)
            self.cluster.schedule(delay, self._crash_now, m, "after appending", (1_000, 100_000))

    def _crash_now(self, m: Member, why: str, down_us: tuple[int, int]) -> None:
        if not self.running or not m.alive or m.retired:
            return
        self.cluster.crash(m)
        self._log("crash", f"member {m.id} {why}")
        self.cluster.schedule(self.rng.randint(*down_us), self._restart, m)

    def _restart(self, m: Member) -> None:
        if self.running and not m.alive and not m.retired:
            self.cluster.restart(m)
            self._log("restart", f"member {m.id}")

    def _pause(self) -> None:
        m = self._pick(prefer_leader=True)
        if m is None or m.paused:
            return
        self.cluster.pause(m)
        self._log("pause", f"member {m.id}")
        self.cluster.schedule(self._length(), self._resume, m)

    def _resume(self, m: Member) -> None:
        if self.running and m.paused:
            self.cluster.resume(m)
            self._log("resume", f"member {m.id}")

    def _transfer(self) -> None:
        lead = self.cluster.leader()
        if lead is None or lead.node is None:
            return
        voters = sorted(v for v in lead.conf.voters if v != lead.id)
        if not voters:
            return
        target = self.rng.choice(voters)
        try:
            lead.node.transfer_leader(target)
            outcome = "asked"
        except RaftError as e:
            outcome = f"refused ({e})"
        self._log("transfer", f"{lead.id} -> {target} {outcome}")
        self.cluster.drive(lead)

    def _churn(self) -> None:
        c, r = self.cluster, self.rng
        lead = c.leader()
        if lead is None or lead.node is None:
            return
        voters, learners = sorted(lead.conf.voters), sorted(lead.conf.learners)
        if lead.conf.voters_outgoing:
            return  # still in a joint configuration
        min_voters = min(3, self.plan.members)
        new = c.new_id()
        options = []
        if new is not None and len(voters) + len(learners) < 7:
            options += ["add-learner", "add-voter"]
        if learners and len(voters) < 5:
            options.append("promote")
        if len(voters) > min_voters and len(voters) >= 3:
            # never from 2 voters to 1: if the leader removes the other voter... or itself, the
            # survivor may never learn the change committed (etcd's two-member hazard)
            options.append("remove-voter")
        if learners:
            options.append("remove-learner")
        if new is not None and len(voters) >= 3:
            # not from 2 voters: the outgoing half would need the removed voter, see above
            options.append("replace")
        if not options:
            return
        op = r.choice(options)
        changes: tuple[tuple[ConfChangeType, int], ...]
        if op == "add-learner":
            assert new is not None  # the adding ops are offered only with a free id
            changes = ((ConfChangeType.ADD_LEARNER, new),)
        elif op == "add-voter":
            assert new is not None
            changes = ((ConfChangeType.ADD_VOTER, new),)
        elif op == "promote":
            changes = ((ConfChangeType.ADD_VOTER, r.choice(learners)),)
        elif op == "remove-voter":
            changes = ((ConfChangeType.REMOVE_NODE, r.choice(voters)),)
        elif op == "remove-learner":
            changes = ((ConfChangeType.REMOVE_NODE, r.choice(learners)),)
        else:
            assert new is not None
            changes = (
                (ConfChangeType.ADD_VOTER, new),
                (ConfChangeType.REMOVE_NODE, r.choice(voters)),
            )
        cc = ConfChange(changes=changes)
        try:
            lead.node.propose_conf_change(cc)
            outcome = "proposed"
            if new is not None and any(nid == new for _k, nid in changes):
                c.used_ids.add(new)  # reserved: started when the change is applied
        except RaftError as e:
            outcome = f"refused ({e})"
        desc = ",".join(f"{k.name.lower()}:{nid}" for k, nid in changes)
        self._log("churn", f"{op} {desc} via {lead.id} {outcome}")
        c.drive(lead)
