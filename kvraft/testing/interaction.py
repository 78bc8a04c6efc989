"""An interaction harness for the Raft core: whole clusters driven by text commands.

``InteractionEnv.run(command_line)`` runs one command and returns its output; the
datadriven runner in ``tests/raft/test_interaction.py`` feeds it scenario files
(``tests/raft/testdata/*.txt``) and compares outputs. Every line of output comes from
``kvraft.raft.describe`` (Readys, messages, entries, trace events).

Members are ``RawNode``s over ``MemoryLogStorage``. The harness fulfils each Ready exactly
as ``types.Ready`` says (persist, send, apply, advance), and everything persisted
survives ``crash``; what was not yet handed out in a Ready is lost. Messages wait in the
network until ``deliver-msgs`` (or ``stabilize``) hands them over, in the order sent;
messages to a crashed node are lost (those waiting when it crashes are printed as
dropped), and messages sent across a ``partition`` are dropped as they are sent
(printed under the Ready); messages already in flight when a partition starts still
arrive.

Randomness: every member's election timeout is exactly ``election_ticks`` (the injected
rng always draws 0), so ``tick-election`` fires an election on a follower;
``randomized-timeout 4 15`` gives node 4 a longer one (from now on), so that it can be
ticked past the leader's lease without campaigning itself.

Commands (one handler each, below; arguments ``key=value`` or ``key=(a,b)``)::

    add-nodes 3 voters=(1,2,3) [learners=(4)] [prevote=false] [checkquorum=false]
              [election=10] [heartbeat=1] [max-inflight=256] [max-size=1048576]
              [max-uncommitted=0] [read-only=lease] [step-down-on-removal=false]
    campaign 1
    propose 1 foo            propose-batch 1 a b c
    propose-conf-change 1 v4 l5 r2 [transition=implicit|explicit]   (or: leave)
    read-index 1 ctx         transfer-leader 1 2
    tick-heartbeat 1         tick-election 2        tick 1 [n=3]
    randomized-timeout 4 15
    process-ready 1 [2 ...]  deliver-msgs 2 [3 ...] [drop=(4)] [type=MsgApp] [from=(1)]
    capture-msgs 2           replay-msgs 2          (copy messages now queued for 2; queue
                                                     the copies again later: stale replays)
    stabilize [1 2 ...]
    partition (1,2) (3,4,5)  isolate 1             heal
    crash 2                  restart 2
    compact 1 10             report-unreachable 1 2  report-snapshot 1 2 ok|fail
    raft-log 1               raft-state             status 1
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from kvraft.raft.confchange import members
from kvraft.raft.config import RaftConfig, ReadOnlyOption
from kvraft.raft.describe import (
    describe_conf_state,
    describe_entry,
    describe_event,
    describe_message,
    describe_ready,
    message_type_name,
    progress_state_name,
    role_name,
)
from kvraft.raft.errors import RaftError
from kvraft.raft.events import RaftEvent
from kvraft.raft.memory_storage import MemoryLogStorage
from kvraft.raft.rawnode import RawNode
from kvraft.raft.types import (
    ConfChange,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    EntryType,
    Message,
    StateRole,
)

__all__ = ["InteractionEnv", "parse_args"]


class _FixedRandom(random.Random):
    """An rng whose ``randrange`` always returns ``offset`` (0 unless set with
    ``randomized-timeout``): election timeouts are exact."""

    def __init__(self) -> None:
        super().__init__(0)
        self.offset = 0

    def randrange(self, *args: object, **kwargs: object) -> int:
        return self.offset


@dataclass
class _Member:
    id: int
    storage: MemoryLogStorage
    config: RaftConfig
    node: RawNode | None = None
    applied: int = 0
    conf_history: list[tuple[int, ConfState]] = field(default_factory=list)

    def conf_at(self, index: int) -> ConfState:
        conf = ConfState()
        for at, cs in self.conf_history:
            if at <= index:
                conf = cs
        return conf


@dataclass
class Args:
    """A parsed command line: positional tokens and ``key=value`` options."""

    positional: list[str]
    options: dict[str, list[str]]

    def ids(self) -> list[int]:
        return [int(p) for p in self.positional]

    def option(self, key: str, default: str) -> str:
        vals = self.options.get(key)
        return vals[0] if vals else default

    def option_ids(self, key: str) -> list[int]:
        return [int(v) for v in self.options.get(key, [])]


def parse_args(tokens: list[str]) -> Args:
    positional: list[str] = []
    options: dict[str, list[str]] = {}
    for tok in tokens:
        if "=" in tok and not tok.startswith("("):
            key, _, val = tok.partition("=")
            val = val.strip("()")
            options[key] = [v.strip() for v in val.split(",") if v.strip()]
        else:
            positional.append(tok)
    return Args(positional, options)


@dataclass(frozen=True)
class _MessageFilter:
    type_name: str
    senders: frozenset[int]

    def matches(self, m: Message) -> bool:
        if self.type_name and message_type_name(m.type) != self.type_name:
            return False
        return not self.senders or m.from_ in self.senders


def _bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return text == "true"


class InteractionEnv:
    def __init__(self) -> None:
        self.members: dict[int, _Member] = {}
        self.network: list[Message] = []
        self.cut: set[tuple[int, int]] = set()
        self.captured: dict[int, list[Message]] = {}
        self._out: list[str] = []
        self._handlers: dict[str, Callable[[Args], None]] = {
            "add-nodes": self._add_nodes,
            "campaign": self._campaign,
            "propose": self._propose,
            "propose-batch": self._propose_batch,
            "propose-conf-change": self._propose_conf_change,
            "read-index": self._read_index,
            "transfer-leader": self._transfer_leader,
            "tick": self._tick,
            "tick-heartbeat": self._tick_heartbeat,
            "tick-election": self._tick_election,
            "randomized-timeout": self._randomized_timeout,
            "process-ready": self._process_ready,
            "deliver-msgs": self._deliver_msgs,
            "stabilize": self._stabilize,
            "capture-msgs": self._capture_msgs,
            "replay-msgs": self._replay_msgs,
            "partition": self._partition,
            "isolate": self._isolate,
            "heal": self._heal,
            "crash": self._crash,
            "restart": self._restart,
            "compact": self._compact,
            "report-unreachable": self._report_unreachable,
            "report-snapshot": self._report_snapshot,
            "raft-log": self._raft_log,
            "raft-state": self._raft_state,
            "status": self._status,
        }

    # -- entry point ------------------------------------------------------------------

    def run(self, line: str) -> str:
        """Run one command line; returns its output ("ok" when it printed nothing)."""
        tokens = shlex.split(line)
        if not tokens:
            raise ValueError("empty command")
        handler = self._handlers.get(tokens[0])
        if handler is None:
            raise ValueError(f"unknown command {tokens[0]!r}")
        self._out = []
        handler(parse_args(tokens[1:]))
        text = "\n".join(self._out)
        return text if text else "ok"

    def _print(self, text: str, indent: str = "") -> None:
        for line in text.split("\n"):
            self._out.append(indent + line)

    def _on_event(self, ev: RaftEvent) -> None:
        self._print(describe_event(ev), "  ")

    def _node(self, node_id: int) -> RawNode:
        member = self.members.get(node_id)
        if member is None:
            raise ValueError(f"no node {node_id}")
        if member.node is None:
            raise ValueError(f"node {node_id} is crashed")
        return member.node

    def _running(self) -> list[int]:
        return [i for i, m in sorted(self.members.items()) if m.node is not None]

    def _attempt(self, action: Callable[[], object]) -> None:
        try:
            action()
        except RaftError as err:
            self._print(f"error: {type(err).__name__}: {err}")

    # -- membership of the harness ----------------------------------------------------

    # add-nodes 3 voters=(1,2,3) learners=(4) prevote=true checkquorum=true
    # add-nodes 1            (a node with an empty log that joins later)
    def _add_nodes(self, args: Args) -> None:
        count = int(args.positional[0])
        voters = args.option_ids("voters")
        learners = args.option_ids("learners")
        read_only = (
            ReadOnlyOption.LEASE_BASED
            if args.option("read-only", "safe") == "lease"
            else ReadOnlyOption.SAFE
        )
        first = max(self.members, default=0) + 1
        for node_id in range(first, first + count):
            storage = MemoryLogStorage.bootstrap(voters, learners) if voters else MemoryLogStorage()
            hard_state, _ = storage.initial_state()
            config = RaftConfig(
                id=node_id,
                rng=_FixedRandom(),
                election_ticks=int(args.option("election", "10")),
                heartbeat_ticks=int(args.option("heartbeat", "1")),
                max_inflight_msgs=int(args.option("max-inflight", "256")),
                max_size_per_msg=int(args.option("max-size", str(1 << 20))),
                max_uncommitted_entries_size=int(args.option("max-uncommitted", "0")),
                pre_vote=_bool(args.option("prevote", "true")),
                check_quorum=_bool(args.option("checkquorum", "true")),
                read_only_option=read_only,
                step_down_on_removal=_bool(args.option("step-down-on-removal", "true")),
                # A founding member's state machine starts with the bootstrap entries applied.
                applied=hard_state.commit,
                trace=self._on_event,
            )
            member = _Member(node_id, storage, config, applied=hard_state.commit)
            self.members[node_id] = member
            self._start(member)
            conf = member.node.status().conf_state if member.node else ConfState()
            member.conf_history.append((hard_state.commit, conf))
            self._print(
                f"{node_id}: {describe_conf_state(conf)} Term:{hard_state.term} Commit:{hard_state.commit}"
            )

    def _start(self, member: _Member) -> None:
        config = replace(member.config, applied=member.applied)
        member.node = RawNode(config, member.storage)

    # crash 2
    def _crash(self, args: Args) -> None:
        for node_id in args.ids():
            self._node(node_id)
            self.members[node_id].node = None
            dropped = [m for m in self.network if m.to == node_id]
            self.network = [m for m in self.network if m.to != node_id]
            for m in dropped:
                self._print("dropped: " + describe_message(m))

    # restart 2
    def _restart(self, args: Args) -> None:
        for node_id in args.ids():
            member = self.members[node_id]
            if member.node is not None:
                raise ValueError(f"node {node_id} is running")
            self._start(member)
            hs, _ = member.storage.initial_state()
            status = self._node(node_id).status()
            self._print(
                f"{node_id}: restarted Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit} "
                f"Applied:{member.applied} {describe_conf_state(status.conf_state)}"
            )

    # -- requests to a node -----------------------------------------------------------

    # campaign 1
    def _campaign(self, args: Args) -> None:
        self._node(args.ids()[0]).campaign()

    # propose 1 foo
    def _propose(self, args: Args) -> None:
        node = self._node(int(args.positional[0]))
        data = args.positional[1].encode()
        self._attempt(lambda: node.propose(data))

    # propose-batch 1 a b c
    def _propose_batch(self, args: Args) -> None:
        node = self._node(int(args.positional[0]))
        datas = [p.encode() for p in args.positional[1:]]
        self._attempt(lambda: node.propose_batch(datas))

    # propose-conf-change 1 v4 l5 r2 transition=explicit     propose-conf-change 1 leave
    def _propose_conf_change(self, args: Args) -> None:
        node = self._node(int(args.positional[0]))
        specs = args.positional[1:]
        transition = {
            "auto": ConfChangeTransition.AUTO,
            "implicit": ConfChangeTransition.JOINT_IMPLICIT,
            "explicit": ConfChangeTransition.JOINT_EXPLICIT,
        }[args.option("transition", "auto")]
        if specs == ["leave"]:
            cc = ConfChange(leave_joint=True)
        else:
            kinds = {
                "v": ConfChangeType.ADD_VOTER,
                "l": ConfChangeType.ADD_LEARNER,
                "r": ConfChangeType.REMOVE_NODE,
            }
            cc = ConfChange(
                changes=tuple((kinds[s[0]], int(s[1:])) for s in specs), transition=transition
            )
        self._attempt(lambda: node.propose_conf_change(cc))

    # read-index 1 ctx
    def _read_index(self, args: Args) -> None:
        node = self._node(int(args.positional[0]))
        ctx = args.positional[1].encode()
        self._attempt(lambda: node.read_index(ctx))

    # transfer-leader 1 2     (ask leader 1 to hand over to 2)
    def _transfer_leader(self, args: Args) -> None:
        leader, transferee = args.ids()
        node = self._node(leader)
        self._attempt(lambda: node.transfer_leader(transferee))

    # report-unreachable 1 2  (1's transport could not reach 2)
    def _report_unreachable(self, args: Args) -> None:
        reporter, target = args.ids()
        self._node(reporter).report_unreachable(target)

    # report-snapshot 1 2 ok  (or fail)
    def _report_snapshot(self, args: Args) -> None:
        reporter, target = int(args.positional[0]), int(args.positional[1])
        self._node(reporter).report_snapshot(target, args.positional[2] == "ok")

    # -- time -------------------------------------------------------------------------

    # tick 1 n=3
    def _tick(self, args: Args) -> None:
        for _ in range(int(args.option("n", "1"))):
            for node_id in args.ids():
                self._node(node_id).tick()

    # tick-heartbeat 1
    def _tick_heartbeat(self, args: Args) -> None:
        for node_id in args.ids():
            node = self._node(node_id)
            for _ in range(self.members[node_id].config.heartbeat_ticks):
                node.tick()

    # tick-election 2
    def _tick_election(self, args: Args) -> None:
        for node_id in args.ids():
            node = self._node(node_id)
            for _ in range(self.members[node_id].config.election_ticks):
                node.tick()

    # randomized-timeout 4 15   (node 4's election timeout is 15 ticks from now on)
    def _randomized_timeout(self, args: Args) -> None:
        node_id, ticks = args.ids()
        member = self.members[node_id]
        if not member.config.election_ticks <= ticks < 2 * member.config.election_ticks:
            raise ValueError(f"timeout {ticks} outside [election_ticks, 2 * election_ticks)")
        rng = member.config.rng
        assert isinstance(rng, _FixedRandom)
        rng.offset = ticks - member.config.election_ticks
        self._node(node_id).raft.randomized_election_timeout = ticks

    # -- the Ready loop and the network -----------------------------------------------

    # process-ready 1 2
    def _process_ready(self, args: Args) -> None:
        for node_id in args.ids() or self._running():
            self._handle_ready(node_id)

    def _handle_ready(self, node_id: int) -> bool:
        node = self._node(node_id)
        if not node.has_ready():
            return False
        member = self.members[node_id]
        rd = node.ready()
        self._print(f"> {node_id} handling Ready")
        self._print(describe_ready(rd), "  ")
        # 1. persist
        if not rd.snapshot.is_empty():
            member.storage.apply_snapshot(rd.snapshot)
        member.storage.append(list(rd.entries))
        if rd.hard_state is not None:
            member.storage.set_hard_state(rd.hard_state)
        member.storage.sync()
        # 2. send (messages to a crashed node are lost, across a partition dropped)
        for m in rd.messages:
            if (m.from_, m.to) in self.cut:
                self._print("  dropped (partition): " + describe_message(m))
            elif self.members[m.to].node is not None:
                self.network.append(m)
        # 3. apply
        if not rd.snapshot.is_empty():
            meta = rd.snapshot.metadata
            member.applied = meta.index
            member.conf_history.append((meta.index, meta.conf_state))
        for entry in rd.committed_entries:
            member.applied = entry.index
            if entry.type == EntryType.CONF_CHANGE:
                conf = node.apply_conf_change(ConfChange.decode(entry.data))
                member.conf_history.append((entry.index, conf))
        # 4. advance
        node.advance(rd)
        return True

    # deliver-msgs 2 3 drop=(4) type=MsgApp from=(1)
    #   deliver what waits for 2 and 3, drop what waits for 4; only messages of that
    #   type and from those senders when given
    def _deliver_msgs(self, args: Args) -> None:
        wanted = _MessageFilter(args.option("type", ""), frozenset(args.option_ids("from")))
        for node_id in args.ids():
            self._deliver(node_id, wanted)
        for node_id in args.option_ids("drop"):
            self._drop_for(node_id, wanted)

    def _drop_for(self, node_id: int, wanted: _MessageFilter) -> None:
        keep: list[Message] = []
        for m in self.network:
            if m.to == node_id and wanted.matches(m):
                self._print("dropped: " + describe_message(m))
            else:
                keep.append(m)
        self.network = keep

    def _deliver(self, node_id: int, wanted: _MessageFilter | None = None) -> bool:
        batch = [
            m for m in self.network if m.to == node_id and (wanted is None or wanted.matches(m))
        ]
        if not batch:
            return False
        taken = {id(m) for m in batch}
        self.network = [m for m in self.network if id(m) not in taken]
        node = self._node(node_id)
        self._print(f"> {node_id} receiving messages")
        for m in batch:
            self._print("  " + describe_message(m))
            node.step(m)
        return True

    # capture-msgs 2   (remember copies of the messages now waiting for 2)
    def _capture_msgs(self, args: Args) -> None:
        for node_id in args.ids():
            copies = [m for m in self.network if m.to == node_id]
            self.captured[node_id] = copies
            for m in copies:
                self._print("captured: " + describe_message(m))

    # replay-msgs 2     (queue the captured copies for 2 again: duplicated, delayed)
    def _replay_msgs(self, args: Args) -> None:
        for node_id in args.ids():
            for m in self.captured.pop(node_id, []):
                self.network.append(m)
                self._print("replayed: " + describe_message(m))

    # stabilize        stabilize 1 2
    def _stabilize(self, args: Args) -> None:
        chosen = args.ids()
        for _ in range(10_000):
            ids = [i for i in (chosen or self._running()) if self.members[i].node is not None]
            progressed = False
            for node_id in ids:
                progressed |= self._handle_ready(node_id)
            for node_id in ids:
                progressed |= self._deliver(node_id)
            if not progressed:
                return
        raise RuntimeError("stabilize: the cluster is still busy after 10000 rounds")

    # partition (1,2) (3,4,5)
    def _partition(self, args: Args) -> None:
        groups = [[int(x) for x in g.strip("()").split(",") if x] for g in args.positional]
        side = {node: i for i, group in enumerate(groups) for node in group}
        self.cut = {
            (a, b)
            for a in self.members
            for b in self.members
            if a != b and side.get(a, -1 - a) != side.get(b, -1 - b)
        }

    # isolate 1
    def _isolate(self, args: Args) -> None:
        for node_id in args.ids():
            for other in self.members:
                if other != node_id:
                    self.cut.add((node_id, other))
                    self.cut.add((other, node_id))

    # heal
    def _heal(self, args: Args) -> None:
        self.cut = set()

    # -- storage ----------------------------------------------------------------------

    # compact 1 10   (snapshot node 1's applied state at 10 and discard the log up to 10)
    def _compact(self, args: Args) -> None:
        node_id, index = args.ids()
        member = self.members[node_id]
        if index > member.applied:
            raise ValueError(f"compact {index}: node {node_id} has applied only {member.applied}")
        member.storage.create_snapshot(index, member.conf_at(index), f"applied:{index}".encode())
        member.storage.compact(index)
        self._raft_log(Args([str(node_id)], {}))

    # -- inspection -------------------------------------------------------------------

    # raft-log 1
    def _raft_log(self, args: Args) -> None:
        storage = self.members[args.ids()[0]].storage
        first, last = storage.first_index(), storage.last_index()
        if last < first:
            self._print(f"log is empty: first index={first}, last index={last}")
            return
        for entry in storage.entries(first, last + 1):
            self._print(describe_entry(entry))

    # raft-state
    def _raft_state(self, args: Args) -> None:
        for node_id, member in sorted(self.members.items()):
            if member.node is None:
                self._print(f"{node_id}: crashed")
                continue
            st = member.node.status()
            conf = st.conf_state
            if node_id in conf.voters or node_id in conf.voters_outgoing:
                kind = "Voter"
            elif node_id in members(conf):
                kind = "Learner"
            else:
                kind = "Non-Member"
            self._print(f"{node_id}: {role_name(st.role)} ({kind}) Term:{st.term} Lead:{st.leader}")

    # status 1
    def _status(self, args: Args) -> None:
        node = self._node(args.ids()[0])
        st = node.status()
        self._print(
            f"{st.id}: {role_name(st.role)} Term:{st.term} Vote:{st.vote} Commit:{st.commit} "
            f"Applied:{st.applied} Lead:{st.leader} Transferee:{st.lead_transferee}"
        )
        self._print(describe_conf_state(st.conf_state))
        if st.role == StateRole.LEADER:
            tracker = node.raft.tracker
            for peer, ps in sorted(st.progress.items()):
                pr = tracker.progress[peer]
                extra = f" inflight={pr.inflights.count()}" if pr.inflights.count() else ""
                extra += " paused" if pr.is_paused() and peer != st.id else ""
                extra += f" pending-snap={pr.pending_snapshot}" if pr.pending_snapshot else ""
                learner = " learner" if pr.is_learner else ""
                self._print(
                    f"{peer}: {progress_state_name(ps.state)} match={ps.match} next={ps.next}{learner}{extra}"
                )
