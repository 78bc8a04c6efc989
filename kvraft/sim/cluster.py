"""``SimCluster``: N Raft members over a ``SimNetwork`` and ``SimDisk``s, on simulated time.

A discrete-event loop: a heap of ``(time_us, seq, action)`` holds ticks, fsync completions,
client requests and replies and nemesis actions; the network's own queue holds messages.
The loop always takes the earliest of the two (the heap first on a tie), moves the
``ManualClock`` there and runs it. Nothing reads the wall clock, and every random choice
comes from a stream derived from the seed, so a seed replays exactly.

Each member is driven the way ``types.Ready`` says, line for line:

1. persist: install the snapshot, append the entries, save the hard state into the
   member's ``SimDisk``; when ``must_sync``, fsync, which takes simulated time (the member is
   *busy* until it completes; a crash meanwhile loses the writes);
2. send the messages;
3. apply the committed entries (conf changes through ``apply_conf_change``) to the member's
   ``KvStateMachine``, answering the clients whose proposals they were, and serve read
   states once their index is applied;
4. ``advance``.

While a member is busy, messages, ticks and client requests are stepped in at once when the
plan's ``step_while_busy`` is set (as an asynchronous driver would) and queued otherwise.
Every observation is reported to ``ClusterCheckers`` as it happens.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from kvraft.raft.config import RaftConfig
from kvraft.raft.errors import ProposalDroppedError
from kvraft.raft.memory_storage import MemoryLogStorage
from kvraft.raft.rawnode import RawNode
from kvraft.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    EntryType,
    Message,
    MessageType,
    Ready,
    StateRole,
)
from kvraft.sim.member import Member, Reply, Request, durable_term_at
from kvraft.sim.model import Command, KvStateMachine, decode_command, encode_command
from kvraft.sim.plan import SimPlan, derive_rng
from kvraft.sim.trace import ROLE, Trace, describe_entries, describe_hard_state, describe_message
from kvraft.testing.buggify import buggify
from kvraft.testing.checkers import ClusterCheckers
from kvraft.testing.clock import ManualClock
from kvraft.testing.simdisk import SimDisk
from kvraft.testing.simnet import SimNetwork

__all__ = ["Member", "Request", "SimCluster"]  # Member and Request re-exported from member


class SimCluster:
    def __init__(
        self, plan: SimPlan, trace: Trace, checkers: ClusterCheckers | None = None
    ) -> None:
        self.plan = plan
        self.trace = trace
        self.checkers = checkers or ClusterCheckers()
        self.clock = ManualClock()
        self.net = SimNetwork(derive_rng(plan.seed, "net"), plan.net)
        self.rng = derive_rng(plan.seed, "cluster")  # fsync latency, torn crashes, phases
        self.client_rng = derive_rng(plan.seed, "client-net")
        self._events: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.members: dict[int, Member] = {}
        self.used_ids: set[int] = set()
        self.reply: Reply = lambda req, outcome, payload: None
        # hooks for the nemesis: a member granted a vote / its core accepted a proposal
        self.on_vote_granted: Callable[[Member], None] | None = None
        self.on_proposal_accepted: Callable[[Member], None] | None = None
        self.steps = 0
        voters = list(range(1, plan.members + 1))
        for mid in voters:
            self._add_member(mid, SimDisk(MemoryLogStorage.bootstrap(voters)))

    # -- the event loop ----------------------------------------------------------------

    @property
    def now(self) -> int:
        return self.clock.now_us

    def schedule(self, delay_us: int, action: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (self.clock.now_us + delay_us, self._seq, action, args))

    def run_until(self, t_end_us: int) -> None:
        """Run every event due at or before ``t_end_us``; the clock ends there."""
        events, net = self._events, self.net
        while True:
            t_ev = events[0][0] if events else None
            t_net = net.next_delivery_us()
            if t_net is not None and (t_ev is None or t_net < t_ev):
                if t_net > t_end_us:
                    break
                self.clock.set_us(t_net)
                lost: list[tuple[int, int, Any]] = []
                for src, dst, msg in net.deliver_due(t_net, lost):
                    self.steps += 1
                    self._deliver(src, dst, msg)
                for src, dst, msg in lost:
                    self._lost(src, dst, msg)
            elif t_ev is not None and t_ev <= t_end_us:
                t, _seq, action, args = heapq.heappop(events)
                self.clock.set_us(t)
                self.steps += 1
                action(*args)
            else:
                break
        self.clock.set_us(max(self.clock.now_us, t_end_us))

    # -- members -----------------------------------------------------------------------

    def _add_member(self, mid: int, disk: SimDisk) -> Member:
        skew = (
            self.plan.tick_skew_ppm[(mid - 1) % len(self.plan.tick_skew_ppm)]
            if self.plan.tick_skew_ppm
            else 0
        )
        m = Member(mid, disk, self.plan.tick_us * 1_000_000 // (1_000_000 + skew))
        self.members[mid] = m
        self.used_ids.add(mid)
        self._start(m)
        self.schedule(self.rng.randrange(m.tick_us), self._tick, m)
        return m

    def _start(self, m: Member) -> None:
        hs, cs = m.disk.initial_state()
        snap = m.disk.snapshot()
        m.sm = KvStateMachine.restore(snap.data)
        m.applied = snap.metadata.index
        m.incarnation += 1
        p = self.plan
        cfg = RaftConfig(
            id=m.id,
            rng=derive_rng(p.seed, f"node{m.id}.{m.incarnation}"),
            election_ticks=p.election_ticks,
            heartbeat_ticks=p.heartbeat_ticks,
            pre_vote=p.pre_vote,
            check_quorum=p.check_quorum,
            max_size_per_msg=p.max_size_per_msg,
            max_inflight_msgs=p.max_inflight_msgs,
            applied=m.applied,
            trace=self._core_event if self.trace.on else None,
        )
        m.node = RawNode(cfg, m.disk)
        m.alive, m.busy, m.paused = True, False, False
        m.term, m.commit, m.conf = hs.term, hs.commit, cs
        m.role, m.leader = StateRole.FOLLOWER, NONE
        self.checkers.restarted(m.id, hs.commit, m.applied)
        if self.trace.on:
            self.trace.emit(
                self.now,
                f"n{m.id}",
                "start",
                f"inc={m.incarnation} {describe_hard_state(hs)} applied={m.applied} "
                f"log={m.disk.first_index()}..{m.disk.last_index()}",
            )

    def _core_event(self, ev: Any) -> None:
        self.trace.emit(self.now, f"n{ev.node}", "core", f"t={ev.term} {ev.text}")

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if m.alive and not m.retired]

    def leader(self) -> Member | None:
        """The live member that believes it leads with the highest term, if any."""
        best = None
        for m in self.live():
            if m.role == StateRole.LEADER and not m.paused and (best is None or m.term > best.term):
                best = m
        return best

    def new_id(self) -> int | None:
        for mid in range(1, self.plan.members + self.plan.spare_ids + 1):
            if mid not in self.used_ids:
                return mid
        return None

    # -- faults (called by the nemesis) -------------------------------------------------

    def crash(self, m: Member) -> None:
        if not m.alive:
            return
        torn = self.rng.random() < self.plan.torn_p
        lost = m.disk.crash(self.rng, torn)
        m.alive, m.node, m.busy, m.held_ready = False, None, False, None
        m.inbox.clear()
        m.proposals.clear()
        m.reads.clear()
        m.ready_reads.clear()
        dropped = self.net.drop_all_to(m.id)
        if self.trace.on:
            self.trace.emit(
                self.now,
                f"n{m.id}",
                "crash",
                f"lost_writes={lost} torn={torn} dropped_msgs={dropped}",
            )

    def restart(self, m: Member) -> None:
        if m.alive or m.retired:
            return
        self._start(m)
        self._drive(m)

    def pause(self, m: Member) -> None:
        if m.alive and not m.paused:
            m.paused = True
            self.trace.emit(self.now, f"n{m.id}", "pause")

    def resume(self, m: Member) -> None:
        if not (m.alive and m.paused):
            return
        m.paused = False
        self.trace.emit(self.now, f"n{m.id}", "resume", f"queued={len(m.inbox)}")
        rd, m.held_ready = m.held_ready, None
        if rd is not None:
            self._finish_ready(m, rd)
        else:
            self._drain(m)
        self._drive(m)

    def retire(self, m: Member) -> None:
        """Stop a member removed from the configuration, for good."""
        if m.retired:
            return
        if m.alive:
            self.crash(m)
        m.retired = True
        self.trace.emit(self.now, f"n{m.id}", "retire")

    # -- inputs ------------------------------------------------------------------------

    def _tick(self, m: Member) -> None:
        if m.retired:
            return
        self.schedule(m.tick_us, self._tick, m)
        if not m.alive or m.paused:
            return
        if m.busy and not self.plan.step_while_busy:
            m.inbox.append(("tick",))
            return
        assert m.node is not None
        m.node.tick()
        self._drive(m)

    def _deliver(self, src: int, dst: int, msg: Message) -> None:
        m = self.members.get(dst)
        if msg.type == MessageType.SNAP:
            sender = self.members.get(src)
            if sender is not None and sender.alive:
                self._local(sender, ("snap_status", dst, m is not None and m.alive))
        if m is None or not m.alive:
            if self.trace.on:
                self.trace.emit(self.now, f"n{dst}", "lost", describe_message(msg) + " (down)")
            return
        if m.paused or (m.busy and not self.plan.step_while_busy):
            m.inbox.append(("msg", msg))
            return
        self._step(m, msg)
        self._drive(m)

    def _lost(self, src: int, dst: int, msg: Message) -> None:
        if self.trace.on:
            self.trace.emit(self.now, f"n{dst}", "lost", describe_message(msg) + " (cut)")
        sender = self.members.get(src)
        if msg.type == MessageType.SNAP and sender is not None and sender.alive:
            self._local(sender, ("snap_status", dst, False))

    def _step(self, m: Member, msg: Message) -> None:
        if self.trace.on:
            self.trace.emit(self.now, f"n{m.id}", "recv", describe_message(msg))
        assert m.node is not None
        m.node.step(msg)

    def _local(self, m: Member, item: tuple[Any, ...]) -> None:
        """A report from the transport (unreachable peer, snapshot status): given to the
        core when the member is next free."""
        if m.busy or m.paused:
            m.inbox.append(item)
        else:
            self._run_item(m, item)
            self._drive(m)

    def client_send(self, target: int, req: Request) -> None:
        """A client sends ``req`` to member ``target``; it arrives after a network delay."""
        f = self.plan.net
        self.schedule(
            self.client_rng.randint(f.delay_min_us, f.delay_max_us),
            self._client_arrive,
            target,
            req,
        )

    def _client_arrive(self, target: int, req: Request) -> None:
        m = self.members.get(target)
        if m is None or not m.alive:
            # connection refused: a definite failure, the client may try elsewhere
            self._send_reply(req, "redirect", NONE)
            return
        if m.paused or (m.busy and not self.plan.step_while_busy):
            m.inbox.append(("client", req))
            return
        self._client_request(m, req)
        self._drive(m)

    def _client_request(self, m: Member, req: Request) -> None:
        assert m.node is not None
        try:
            if req.kind == "get":
                ctx = b"r%d" % req.id
                m.node.read_index(ctx)
                m.reads[ctx] = req
            else:
                cmd = Command(req.kind, req.id, req.key, req.value or "", req.expect)
                m.node.propose(encode_command(cmd))
                m.proposals[req.id] = req
        except ProposalDroppedError as e:
            if self.trace.on:
                self.trace.emit(self.now, f"n{m.id}", "refuse", f"req={req.id} {e.reason}")
            self._send_reply(req, "redirect", e.leader)
            return
        if self.trace.on:
            self.trace.emit(self.now, f"n{m.id}", "accept", f"req={req.id} {req.kind} {req.key}")
        if req.kind != "get" and self.on_proposal_accepted is not None:
            self.on_proposal_accepted(m)

    def _send_reply(self, req: Request, outcome: str, payload: Any) -> None:
        f = self.plan.net
        self.schedule(
            self.client_rng.randint(f.delay_min_us, f.delay_max_us),
            self.reply,
            req,
            outcome,
            payload,
        )

    def _run_item(self, m: Member, item: tuple[Any, ...]) -> None:
        assert m.node is not None
        kind = item[0]
        if kind == "msg":
            self._step(m, item[1])
        elif kind == "tick":
            m.node.tick()
        elif kind == "client":
            self._client_request(m, item[1])
        elif kind == "unreachable":
            m.node.report_unreachable(item[1])
        elif kind == "snap_status":
            m.node.report_snapshot(item[1], item[2])
        else:  # pragma: no cover
            raise AssertionError(f"unknown inbox item {kind}")

    def _drain(self, m: Member) -> None:
        while (
            m.inbox and m.alive and not m.paused and not (m.busy and not self.plan.step_while_busy)
        ):
            self._run_item(m, m.inbox.popleft())

    # -- the Ready loop ----------------------------------------------------------------

    def drive(self, m: Member) -> None:
        """Run ``m``'s Ready loop after an input was fed to its RawNode from outside."""
        self._drive(m)

    def _drive(self, m: Member) -> None:
        while m.alive and not m.busy and not m.paused:
            assert m.node is not None
            if not m.node.has_ready():
                if m.inbox:
                    self._drain(m)
                    continue
                return
            rd = m.node.ready()
            self._persist(m, rd)
            if rd.must_sync:
                m.busy = True
                lo, hi = self.plan.fsync_us
                lat = self.rng.randint(lo, hi)
                if buggify("cluster.slow_fsync", 0.1):
                    lat *= 20
                self.schedule(lat, self._sync_done, m, m.incarnation, rd)
                return
            self._finish_ready(m, rd)

    def _persist(self, m: Member, rd: Ready) -> None:
        d, who = m.disk, f"n{m.id}"
        if not rd.snapshot.is_empty():
            md = rd.snapshot.metadata
            d.apply_snapshot(rd.snapshot)
            term_now = rd.hard_state.term if rd.hard_state is not None else m.term
            self.checkers.snapshot_installed(m.id, md.index, md.term, term_now)
            if self.trace.on:
                self.trace.emit(self.now, who, "persist", f"snap={md.index}/{md.term}")
        if rd.entries:
            prev = m.term_at(rd.entries[0].index - 1)
            d.append(list(rd.entries))
            self.checkers.appended(m.id, rd.entries, prev)
            if self.trace.on:
                self.trace.emit(self.now, who, "persist", f"entries={describe_entries(rd.entries)}")
        if rd.hard_state is not None:
            d.set_hard_state(rd.hard_state)
            if self.trace.on:
                self.trace.emit(self.now, who, "persist", describe_hard_state(rd.hard_state))

    def _sync_done(self, m: Member, incarnation: int, rd: Ready) -> None:
        if not m.alive or m.incarnation != incarnation:
            return  # crashed meanwhile: the writes are gone
        m.disk.sync()
        self.trace.emit(self.now, f"n{m.id}", "sync", f"writes_durable={m.disk.syncs}")
        if m.paused:
            m.held_ready = rd
            return
        self._finish_ready(m, rd)
        self._drive(m)

    def _finish_ready(self, m: Member, rd: Ready) -> None:
        """Steps 2-4 of the Ready contract, once step 1 is durable."""
        node, ck, who, tr = m.node, self.checkers, f"n{m.id}", self.trace
        assert node is not None
        hs = rd.hard_state
        if hs is not None:
            m.term = hs.term
        if rd.soft_state is not None:
            was_leader = m.role == StateRole.LEADER
            m.role, m.leader = rd.soft_state.role, rd.soft_state.leader
            ck.role(m.id, m.term, m.role)
            if tr.on:
                tr.emit(self.now, who, "role", f"{ROLE[m.role]} term={m.term} leader={m.leader}")
            if m.role == StateRole.LEADER and not was_leader:
                ck.new_leader(m.id, m.term, m.term_at, m.disk.first_index(), m.disk.last_index())
                if self.on_proposal_accepted is not None:
                    self.on_proposal_accepted(m)  # its no-op: a new leader's first append
        if hs is not None and hs.commit != m.commit:
            ck.commit_advanced(m.id, m.commit, hs.commit, m.term_at, m.disk.last_index(), m.term)
            m.commit = hs.commit
        # 2. send
        for msg in rd.messages:
            if msg.type == MessageType.VOTE_RESP and not msg.reject:
                ck.vote_granted(msg.from_, msg.term, msg.to, m.disk.durable.initial_state()[0])
                if self.on_vote_granted is not None:
                    self.on_vote_granted(m)
            elif msg.type == MessageType.APP_RESP and not msg.reject:
                durable = m.disk.durable
                ck.ack_sent(
                    m.id,
                    msg.term,
                    msg.index,
                    m.term_at(msg.index),
                    durable_term_at(durable),
                    durable.first_index(),
                    durable.initial_state()[0],
                )
            copies = self.net.send(msg.from_, msg.to, msg, self.now)
            if tr.on:
                tr.emit(
                    self.now,
                    who,
                    "send" if copies == 1 else ("send2" if copies else "drop"),
                    describe_message(msg),
                )
            if not copies:
                # a transport knows when a peer is unreachable, and a snapshot stream that
                # failed is always reported (the core waits for the report)
                if not self.net.connected(msg.from_, msg.to):
                    m.inbox.append(("unreachable", msg.to))
                if msg.type == MessageType.SNAP:
                    m.inbox.append(("snap_status", msg.to, False))
        # 3. apply
        if not rd.snapshot.is_empty():
            md = rd.snapshot.metadata
            m.sm = KvStateMachine.restore(rd.snapshot.data)
            m.applied, m.conf = md.index, md.conf_state
            ck.snapshot_applied(m.id, md.index)
            if tr.on:
                tr.emit(self.now, who, "apply", f"snap={md.index}/{md.term} digest={m.sm.digest()}")
        conf_changed = False
        for e in rd.committed_entries:
            ck.applied(m.id, e, m.commit)
            m.applied = e.index
            if e.type == EntryType.CONF_CHANGE:
                cc = ConfChange.decode(e.data)
                m.conf = node.apply_conf_change(cc)
                conf_changed = True
                self._conf_applied(m, cc)
                if tr.on:
                    tr.emit(
                        self.now,
                        who,
                        "apply",
                        f"{e.index}/{e.term} conf voters={sorted(m.conf.voters)} "
                        f"learners={sorted(m.conf.learners)} outgoing={sorted(m.conf.voters_outgoing)}",
                    )
            elif e.data:
                cmd = decode_command(e.data)
                result = m.sm.apply(cmd)
                req = m.proposals.pop(cmd.req, None)
                if req is not None:
                    self._send_reply(req, "ok", result)
                if tr.on:
                    tr.emit(
                        self.now, who, "apply", f"{e.index}/{e.term} {e.data.decode()} -> {result}"
                    )
        if rd.committed_entries:
            self._maybe_snapshot(m, conf_changed)
        m.ready_reads.extend((rs.index, rs.request_ctx) for rs in rd.read_states)
        if m.ready_reads:
            self._serve_reads(m)
        # 4. advance
        node.advance(rd)
        m.busy = False
        self._drain(m)

    def _serve_reads(self, m: Member) -> None:
        waiting = []
        for index, ctx in m.ready_reads:
            if index > m.applied:
                waiting.append((index, ctx))
                continue
            req = m.reads.pop(ctx, None)
            if req is not None:
                value = m.sm.get(req.key)
                self._send_reply(req, "ok", value)
                if self.trace.on:
                    self.trace.emit(
                        self.now, f"n{m.id}", "read", f"req={req.id} at={index} {req.key}={value}"
                    )
        m.ready_reads = waiting

    def _maybe_snapshot(self, m: Member, conf_changed: bool) -> None:
        """Snapshot every ``snapshot_every`` applied entries, and after every applied conf
        change: the core ignores a snapshot whose ConfState does not name it (as etcd does),
        so a snapshot older than a member's addition could never catch that member up."""
        every = self.plan.snapshot_every
        snap_index = m.disk.snapshot().metadata.index
        if not every:
            return
        due = m.applied - snap_index >= every or conf_changed
        if not due and not buggify("cluster.early_snapshot", 0.02):
            return
        if m.applied <= snap_index:
            return
        m.disk.create_snapshot(m.applied, m.conf, m.sm.snapshot())
        compact_to = m.applied - self.plan.compact_keep
        if compact_to >= m.disk.first_index():
            m.disk.compact(compact_to)
        if self.trace.on:
            self.trace.emit(
                self.now, f"n{m.id}", "snapshot", f"at={m.applied} compact_to={compact_to}"
            )

    def _conf_applied(self, m: Member, cc: ConfChange) -> None:
        for kind, nid in cc.changes:
            if kind in (ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER):
                if nid not in self.members and nid in self.used_ids:
                    # an operator starts the new member once the change is in: empty storage
                    self._add_member(nid, SimDisk(MemoryLogStorage()))
            elif kind == ConfChangeType.REMOVE_NODE:
                target = self.members.get(nid)
                if target is not None and not target.retired:
                    self.schedule(self.plan.election_timeout_us, self.retire, target)

    # -- checks on demand ----------------------------------------------------------------

    PROBE_KEY = "__probe"

    def probe_applied(self, m: Member) -> bool:
        """Whether ``m`` has applied the liveness probe (by entry or through a snapshot)."""
        return m.sm.get(self.PROBE_KEY) == f"p{self.plan.seed}"

    def probe(self) -> bool:
        """Propose the liveness probe (request id 0) at the leader; False if refused."""
        m = self.leader()
        if m is None or m.node is None:
            return False
        try:
            m.node.propose(encode_command(Command("put", 0, self.PROBE_KEY, f"p{self.plan.seed}")))
        except ProposalDroppedError:
            return False
        self._drive(m)
        return True
