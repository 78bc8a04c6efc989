"""Named fault scenarios for live clusters (``shared/reference/raft.md`` section 5, the ones
that apply to real processes), each a nemesis run while the workload runs.

A scenario is ``Scenario(name, members, nemesis, needs_net=..., extra_args=...)``; the
nemesis is an async function of a ``Nemesis`` context, which wraps the cluster's blocking
calls in threads (the workload shares the event loop and must keep its timing) and records
every fault it injects. The runner heals everything afterwards (heal the network, resume
paused members, restart killed ones) before it checks.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kvraft.robustness.cluster import RobustCluster
from kvraft.robustness.netfault import NetFaults
from kvraft.robustness.shapes import random_shape
from kvraft.robustness.workload import History
from kvraft.server.local import b64, post

__all__ = ["SCENARIOS", "Nemesis", "Scenario"]


class Nemesis:
    def __init__(self, cluster: RobustCluster, net: NetFaults | None, history: History, pace: float,
                 seed: int = 0) -> None:
        self.cluster = cluster
        self.net = net
        self.history = history
        self.pace = pace
        self.rng = random.Random(seed)  # the shapes of random faults (``flapping_partitions``)
        self.started = time.monotonic()
        self.removed: set[str] = set()
        self.problems: list[str] = []

    def fault(self, text: str) -> None:
        self.history.faults.append(f"{time.monotonic() - self.started:6.1f}s {text}")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds * self.pace)

    async def expect_progress(self, seconds: float, during: str) -> None:
        """Wait ``seconds`` (paced) and note a problem unless some write was acknowledged in
        that window: a fault that leaves a connected majority must not stop the cluster."""
        start = time.monotonic()
        await self.sleep(seconds)
        end = time.monotonic()
        acked = sum(
            1 for op in self.history.ops
            if op["op"] != "get" and op.get("ret") is not None and start <= op["ret"] <= end
        )  # fmt: skip
        self.fault(f"{acked} writes acknowledged in {end - start:.1f} s during {during}")
        if acked == 0:
            self.problems.append(f"liveness: no write acknowledged for {end - start:.1f} s during {during}")

    def expect_no_stall(self, start: float, max_gap_s: float, during: str) -> None:
        """Note a problem if the acknowledged writes from ``start`` to now leave a gap longer
        than ``max_gap_s`` (paced): a fault that must not stop the writes even for an election."""
        end = time.monotonic()
        acked = sorted(op["ret"] for op in self.history.ops
                       if op["op"] != "get" and op.get("ret") is not None and start <= op["ret"] <= end)
        gap = max((b - a for a, b in zip([start, *acked], [*acked, end], strict=True)), default=end - start)
        self.fault(f"{len(acked)} writes acknowledged in {end - start:.1f} s during {during}, longest gap {gap:.2f} s")
        if gap > max_gap_s * self.pace:
            self.problems.append(f"liveness: no write acknowledged for {gap:.2f} s during {during}")

    async def leader(self) -> str:
        return await asyncio.to_thread(self.cluster.wait_leader, 60.0)

    async def majority_leader(self, timeout_s: float = 60.0) -> str:
        """The member a majority of the running members name as leader (``leader`` wants every
        running member to agree, which a partitioned one does not)."""
        def find() -> str | None:
            running = self.cluster.running()
            named: dict[int, int] = {}
            by_id: dict[int, str] = {}
            for member in running:
                status = self.cluster.status(member.name)
                if status is None or "leader" not in status:
                    continue
                by_id[int(status["header"]["member_id"])] = member.name
                named[int(status["leader"])] = named.get(int(status["leader"]), 0) + 1
            for leader, votes in named.items():
                if votes * 2 > len(running) and leader in by_id:
                    return by_id[leader]
            return None

        deadline = asyncio.get_running_loop().time() + timeout_s
        while (found := await asyncio.to_thread(find)) is None:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no leader named by a majority after {timeout_s}s")
            await asyncio.sleep(0.2)
        return found

    async def followers(self) -> tuple[str, list[str]]:
        leader = await self.leader()
        others = [m.name for m in self.cluster.running() if m.name != leader and m.name not in self.removed]
        return leader, sorted(others)

    async def kill(self, *names: str) -> None:
        for name in names:
            self.fault(f"kill -9 {name}")
            await asyncio.to_thread(self.cluster.kill, name)

    async def stop(self, name: str) -> None:
        """Stop ``name`` gracefully (SIGTERM, as for a restart or an upgrade: a leader hands its
        leadership over first) and wait for it to exit."""
        self.fault(f"SIGTERM {name}")
        await asyncio.to_thread(self.cluster.stop_member, name)
        self.fault(f"{name} exited")

    async def restart(self, *names: str) -> None:
        for name in names:
            self.fault(f"restart {name}")
            await asyncio.to_thread(self.cluster.restart, name)

    async def pause(self, name: str) -> None:
        self.fault(f"SIGSTOP {name}")
        self.cluster.pause(name)

    async def resume(self, name: str) -> None:
        self.fault(f"SIGCONT {name}")
        self.cluster.resume(name)

    def _net(self) -> NetFaults:
        if self.net is None:
            raise RuntimeError("this scenario needs network faults")
        return self.net

    async def partition(self, *groups: list[str]) -> None:
        net = self._net()
        net.partition(*groups)
        self.fault(f"partition {' | '.join(','.join(sorted(g)) for g in groups)} (cuts {net.describe()})")

    async def cut(self, src: str, dst: str) -> None:
        self._net().cut(src, dst)
        self.fault(f"cut {src}->{dst}")

    async def lossy(self, probability: float, *, clients: bool = False) -> None:
        """Every peer connection (``clients``: every client connection instead), both ways,
        loses each packet with ``probability``."""
        live = [name for name in self.cluster.members if name not in self.removed]
        self._net().lossy(probability, [self.cluster.client_port(name) for name in live] if clients else None)
        self.fault(f"packet loss {probability:.0%} on every {'client connection' if clients else 'peer link'}")

    async def heal(self) -> None:
        if self.net is not None and self.net.faulty:
            self.net.heal()
            self.fault("heal network")

    async def arm(self, member: str, failpoint: str, action: str) -> None:
        """Arm a failpoint in a member started with ``KVRAFT_FAILPOINTS`` (``Scenario.env``)."""
        self.fault(f"failpoint {member} {failpoint}={action}")
        await asyncio.to_thread(self.cluster.arm, member, failpoint, action)

    async def wait_exit(self, member: str, timeout_s: float = 30.0) -> int | None:
        """Wait for a member a failpoint should have stopped; its exit status (None: still up)."""
        process = self.cluster.members[member].process
        deadline = time.monotonic() + timeout_s
        while process is not None and process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        code = None if process is None else process.poll()
        self.fault(f"{member} exited with {code}" if code is not None else f"{member} still running")
        return code

    async def set_clock(self, offset: str) -> None:
        """Step m0's wall clock to ``offset`` from real time (``+90s``, ``-90s``, ``+0``)."""
        self.fault(f"clock of m0 {offset}")
        process = self.cluster.members["m0"].process
        if process is not None and process.poll() is None:
            with open(f"/proc/{process.pid}/maps") as maps:
                if "libfaketime" not in maps.read():
                    raise RuntimeError("m0 does not run under libfaketime: its clock cannot be stepped")
        (self.cluster.base_dir / "m0.faketime").write_text(offset + "\n")

    async def move_leader(self, name: str) -> None:
        self.fault(f"leadership -> {name}")
        await asyncio.to_thread(self.cluster.move_leader, name)

    async def compact(self, keep: int = 2) -> None:
        """Compact the keyspace at ``keep`` revisions below the current one, through the
        leader of the majority. Recorded in ``history.compactions`` before it is sent (an answer lost to a
        fault leaves its outcome unknown, and it may still have been applied)."""
        record: dict[str, Any] = {"revision": 0, "ok": None}
        leader = await self.majority_leader()  # (a partitioned member need not agree)
        try:
            await asyncio.to_thread(self.cluster.compact, leader, keep, record)
        except OSError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"[:200]
        if record["revision"]:
            self.history.compactions.append(record)
            self.fault(f"compact {record['revision']} via {leader}" + ("" if record["ok"] else " (refused or unknown)"))

    def expect_compacted_answers(self) -> None:
        """Note a problem unless some watch was resumed below a compaction and answered the
        way etcd answers it: a compaction scenario that never got there tested nothing."""
        answers = sum(len(v) for v in self.history.watch_compacted.values())
        self.fault(f"{answers} watches answered compacted")
        if not answers:
            self.problems.append("coverage: no watch was resumed below a compaction (no compacted answer)")

    async def defragment(self, name: str, *, expect_ok: bool = True) -> None:
        """``maintenance/defragment`` on ``name``; a refusal or a lost answer is a problem
        unless ``expect_ok`` is false (a failpoint stops the member mid-request)."""
        started = time.monotonic()
        try:
            code, doc = await asyncio.to_thread(post, self.cluster.url(name), "/v3/maintenance/defragment", {}, 120.0)
            what = f"HTTP {code}"
        except OSError as exc:
            code, doc, what = 0, None, f"{type(exc).__name__}"
        self.fault(f"defragment {name}: {what} in {time.monotonic() - started:.2f} s")
        if expect_ok and code != 200:
            self.problems.append(f"defragment {name}: {what} {str(doc)[:200]}")

    async def add_member(self, name: str) -> None:
        self.fault(f"member add {name}")
        await asyncio.to_thread(self.cluster.add_member, name)
        if self.net is not None:
            self.net.add_member(name, self.cluster.gids[name], self.cluster.peer_port(name))

    async def remove_member(self, name: str) -> None:
        self.fault(f"member remove {name}")
        await asyncio.to_thread(self.cluster.remove_member, name)
        self.removed.add(name)


NemesisFn = Callable[[Nemesis], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    members: int
    nemesis: NemesisFn
    needs_net: bool = False
    extra_args: tuple[str, ...] = ()
    about: str = ""
    failpoints: bool = False  # start members with KVRAFT_FAILPOINTS set
    clock_skew: bool = False  # start m0 under libfaketime (``Nemesis.set_clock``)
    lagging_watchers: int = 0  # watchers that go away until a compaction passes them (``Workload``)
    tags: frozenset[str] = field(default_factory=frozenset)


async def kill_leader(n: Nemesis) -> None:
    for _ in range(2):
        leader = await n.leader()
        await n.kill(leader)
        await n.sleep(3)
        await n.restart(leader)
        await n.sleep(3)


async def kill_follower(n: Nemesis) -> None:
    _, followers = await n.followers()
    await n.kill(followers[0])
    await n.sleep(3)
    await n.restart(followers[0])
    await n.sleep(3)


async def kill_majority(n: Nemesis) -> None:
    leader, followers = await n.followers()
    await n.kill(leader, followers[0])
    await n.sleep(3)
    await n.restart(followers[0])
    await n.sleep(1)
    await n.restart(leader)
    await n.sleep(3)


async def cold_restart(n: Nemesis) -> None:
    names = [m.name for m in n.cluster.running()]
    await n.kill(*names)
    await n.sleep(1)
    for name in names:
        await n.restart(name)
        await n.sleep(0.5)
    await n.sleep(4)


async def rolling_restart(n: Nemesis) -> None:
    """Each member in turn, the leader last, stopped by SIGTERM and started again on its data,
    twice over: an upgrade's rolling restart. A leader stopping hands its leadership over, so
    the writes must go on while it stops: no gap of half an election timeout (1 s) without an
    acknowledged write, where waiting for an election would leave one of 1-2 s."""
    for _ in range(2):
        leader, followers = await n.followers()
        for name in [*followers, leader]:
            began = time.monotonic()
            await n.stop(name)
            await n.restart(name)
            await n.sleep(1.5)
            n.expect_no_stall(began, 0.5, f"the restart of {name}" + (" (the leader)" if name == leader else ""))


async def remove_leader(n: Nemesis) -> None:
    """A fourth member added, then the live leader removed (``member remove`` sent to it). It
    hands its leadership over before its removal is proposed, so the writes must go on: no
    gap of half an election timeout without an acknowledged write (an election would leave
    1-2 s); and the removed member stops by itself."""
    await n.add_member("m3")
    await n.sleep(2)
    leader = await n.leader()
    began = time.monotonic()
    await n.remove_member(leader)
    await n.sleep(1.5)
    n.expect_no_stall(began, 0.5, f"the removal of {leader} (the leader)")
    if await n.wait_exit(leader, 5.0) is None:
        n.problems.append(f"{leader} went on running 5 s after its removal")


async def remove_partitioned(n: Nemesis) -> None:
    """A follower cut off from the others, then removed (it cannot get the commit of its
    removal), then the network healed: it must learn that it was removed when it next
    reaches a peer (the peers closed its connections: its redial is answered "removed", etcd's
    410 Gone) and stop by itself, not run on without a leader."""
    await n.add_member("m3")
    await n.sleep(2)
    _, followers = await n.followers()
    gone = next(f for f in followers if f != "m3")
    await n.partition([gone])
    await n.sleep(1)
    await n.remove_member(gone)
    await n.sleep(2)
    await n.heal()
    if await n.wait_exit(gone, 15.0) is None:
        n.problems.append(f"{gone}, removed while cut off, went on running 15 s after the heal")
    await n.expect_progress(3, "the removal of a cut-off member")


async def pause_leader(n: Nemesis) -> None:
    leader = await n.leader()
    await n.pause(leader)
    await n.sleep(1.5)  # a new leader after one to two election timeouts
    await n.expect_progress(3, "the old leader's pause")
    await n.resume(leader)
    await n.sleep(3)


async def leader_changes(n: Nemesis) -> None:
    """The leader killed and restarted, then the next one frozen and woken: two leader changes
    while the once clients (``kvraft.robustness.once``) retry their numbered writes."""
    leader = await n.leader()
    await n.kill(leader)
    await n.sleep(3)
    await n.restart(leader)
    await n.sleep(3)
    await pause_leader(n)


async def partition_leader(n: Nemesis) -> None:
    leader = await n.leader()
    await n.partition([leader])
    await n.sleep(1.5)
    await n.expect_progress(3, "the leader's isolation")
    await n.heal()
    await n.sleep(3)


async def partition_leader_minority(n: Nemesis) -> None:
    leader, followers = await n.followers()
    await n.partition([leader, followers[0]], followers[1:])
    await n.sleep(2)
    await n.expect_progress(4, "the minority partition")
    await n.heal()
    await n.sleep(3)


async def leader_deaf(n: Nemesis) -> None:
    """Asymmetric: the leader's sends arrive, nothing reaches it (check-quorum steps it down)."""
    leader, followers = await n.followers()
    for f in followers:
        await n.cut(f, leader)
    await n.sleep(1.5)
    await n.expect_progress(3, "the deaf leader")
    await n.heal()
    await n.sleep(3)


async def partial_connectivity(n: Nemesis) -> None:
    """Five members; two of them each reach only one other follower (not the leader, not
    each other): the Howard-Abraham / Cloudflare shapes. Writes must keep going."""
    leader, followers = await n.followers()
    a, b, c, d = followers[:4]
    for x, keep in ((c, a), (d, b)):
        for other in [leader, *followers]:
            if other not in (x, keep):
                n._net().cut_both(x, other)
    n.fault(f"partial connectivity: {c} reaches only {a}, {d} reaches only {b} (cuts {n._net().describe()})")
    await n.sleep(1)
    await n.expect_progress(5, "partial connectivity")
    await n.heal()
    await n.sleep(3)


async def lossy_network(n: Nemesis) -> None:
    """Every peer connection loses packets at random, 2 %, 5 % and then 10 % of them (both
    ways, acknowledgements too, dropped as they arrive), each for 8 s, with a heal between.
    TCP retransmits what is lost, so messages arrive late and in bursts rather than not at
    all: on loopback, with few packets in flight, most losses wait out a retransmission
    timeout (200 ms, doubling with each loss of the same packet), so heartbeats miss and
    elections may start. Writes must go on in each phase, with no gap of more than 5 s
    between acknowledged writes (an election or two, not a member that gave up on a
    stalled connection)."""
    for probability in (0.02, 0.05, 0.1):
        began = time.monotonic()
        await n.lossy(probability)
        await n.sleep(8)
        n.expect_no_stall(began, 5, f"{probability:.0%} packet loss on every peer link")
        await n.heal()
        await n.sleep(2)


async def lossy_clients(n: Nemesis) -> None:
    """Every client connection (requests, answers, watch and keepalive streams) loses 5 %, then
    10 % of its packets, 8 s each; in the first phase the leader is killed and restarted. The
    clients' requests time out and are sent again: the numbered writes must still be applied
    once, the watches must resume without a gap or a duplicate, the leases kept alive must
    stay, and the writes must go on (some acknowledged in every phase)."""
    began = time.monotonic()
    await n.lossy(0.05, clients=True)
    await n.sleep(2)
    leader = await n.leader()
    await n.kill(leader)
    await n.sleep(2)
    await n.restart(leader)
    await n.sleep(4)
    n.expect_no_stall(began, 8, "5 % loss on the client connections and the leader's kill")
    await n.heal()
    await n.sleep(2)
    began = time.monotonic()
    await n.lossy(0.1, clients=True)
    await n.sleep(8)
    n.expect_no_stall(began, 8, "10 % loss on the client connections")
    await n.heal()
    await n.sleep(2)


async def flapping_partitions(n: Nemesis) -> None:
    """For 30 s the network changes shape every 0.3-2 s (seeded): random halves, one member
    isolated, a bridge (two halves that one member connects), or random one-way cuts; a
    leader elected under one shape is cut off by the next. Then the network heals, and the
    writes must go on within 5 s."""
    net = n._net()
    names = [m for m in net.members if m not in n.removed]
    end = time.monotonic() + 30 * n.pace
    shapes = 0
    while time.monotonic() < end:
        what, links = random_shape(n.rng, names)
        net.reshape(links)
        shapes += 1
        n.fault(f"shape {shapes}: {what} (cuts {net.describe()})")
        await n.sleep(n.rng.uniform(0.3, 2.0))
    await n.heal()
    await n.expect_progress(5, f"the heal after {shapes} partition shapes")


async def membership_churn(n: Nemesis) -> None:
    await n.add_member("m3")
    await n.sleep(2)
    _, followers = await n.followers()
    isolated, removed = [f for f in followers if f != "m3"][:2]
    await n.partition([isolated])
    await n.remove_member(removed)
    await n.sleep(3)
    await n.heal()
    await n.sleep(3)
    await asyncio.to_thread(n.cluster.stop_member, removed)


async def snapshot_catchup(n: Nemesis) -> None:
    """A follower cut off while the leader compacts past it (its Raft log, and twice the
    key-value history), then healed, then killed in the middle of catching up (by snapshot)
    and restarted. The compact hash check cannot compare those two compactions on the member
    that got them in a snapshot (it recorded no hash), and must not blame it; a third
    compaction after the restart is compared on every member again."""
    _, followers = await n.followers()
    lagging = followers[0]
    await n.partition([lagging])
    for _ in range(2):
        await n.sleep(2)
        await n.compact()
    await n.sleep(2)
    await n.heal()
    await n.sleep(0.3)
    await n.kill(lagging)
    await n.sleep(1)
    await n.restart(lagging)
    await n.sleep(2)
    await n.compact()  # (one it applies itself: the check compares every member again)
    await n.sleep(2)
    # the point of the scenario: the lagging member needed a Raft snapshot (built from the
    # leader's live store as it was sent). With etcd's 5,000 entries kept for catch-up it
    # never did: the log still held what it missed (until session 52)
    sent = sum(m.log_path.read_text(errors="replace").count("sending a snapshot at")
               for m in n.cluster.members.values() if m.log_path.exists())
    n.fault(f"{sent} snapshot(s) sent")
    if not sent:
        n.problems.append("snapshot: the lagging member caught up without a Raft snapshot (nothing tested)")


async def power_loss(n: Nemesis) -> None:
    """A power cut on a follower, then on the leader: each dies between writing a WAL frame
    and its fdatasync, and the frame is torn (``crash``). Then both restart."""
    leader, followers = await n.followers()
    await n.arm(followers[0], "wal_before_fdatasync", "1*crash")
    await n.wait_exit(followers[0])
    await n.sleep(1)
    await n.arm(leader, "wal_before_fdatasync", "1*crash")
    await n.wait_exit(leader)
    await n.sleep(2)
    await n.restart(followers[0], leader)
    await n.sleep(3)


async def crash_after_apply(n: Nemesis) -> None:
    """The leader, then a follower, stops right after applying a batch to the state machine
    (``apply_after_commit``: the batch is published, and in the MVCC store's last LMDB
    commit when that group commit was due, but none of its clients is answered yet); the
    leader exits at once (``panic``), the follower in a power cut (``crash``). Each
    restarts and re-applies from its Raft log what its store lacks: a batch applied twice
    shows as a revision or ``hashkv`` apart from the others; a write lost, as a missing
    acknowledged write or an impossible read."""
    leader = await n.leader()
    await n.arm(leader, "apply_after_commit", "1*panic")
    await n.wait_exit(leader)
    await n.sleep(1.5)  # a new leader after one to two election timeouts
    await n.expect_progress(2, "the old leader's absence")
    await n.restart(leader)
    await n.sleep(3)
    _, followers = await n.followers()
    await n.arm(followers[0], "apply_after_commit", "1*crash")
    await n.wait_exit(followers[0])
    await n.sleep(1)
    await n.restart(followers[0])
    await n.sleep(3)


async def slow_disk_leader(n: Nemesis) -> None:
    leader = await n.leader()
    await n.arm(leader, "raft_before_save", "sleep(150)")
    await n.expect_progress(5, "the slow disk")
    await n.arm(leader, "raft_before_save", "off")
    await n.sleep(2)


async def failing_disk(n: Nemesis) -> None:
    """A follower's log write fails (EIO): it must stop rather than go on with a log it could
    not write; the others keep serving; restarted with a working disk it catches up. Then
    the same on the leader's apply (the state machine commit)."""
    leader, followers = await n.followers()
    await n.arm(followers[0], "raft_before_save", "1*error")
    await n.wait_exit(followers[0])
    await n.sleep(2)
    await n.restart(followers[0])
    await n.sleep(3)
    leader = await n.leader()
    await n.arm(leader, "apply_before_commit", "1*error")
    await n.wait_exit(leader)
    await n.sleep(2)
    await n.restart(leader)
    await n.sleep(3)


async def clock_jumps(n: Nemesis) -> None:
    """m0's wall clock steps 90 s ahead, then 90 s behind real time, then back; with m0
    leading during part of it (a leadership transfer is not forced: m0 leads in about one
    run of three)."""
    await n.set_clock("+90s")
    await n.sleep(4)
    await n.set_clock("-90s")
    await n.sleep(4)
    await n.set_clock("+0")
    await n.sleep(2)


async def lease_leader_clock_jump(n: Nemesis) -> None:
    """m0 is made the leader, then its wall clock steps 90 s ahead, back, 90 s behind and
    back, while leases are kept alive and others (TTL 3) expire: no lease may end early on
    any member (the primary's deadlines must not follow the wall clock), and each expired
    lease's key must be gone (``checks.check_leases``)."""
    for offset in ("+90s", "-90s"):
        await n.move_leader("m0")
        await n.set_clock(offset)
        await n.sleep(5)  # longer than the expiring leases' TTL: some expire in the window
        leader = await asyncio.to_thread(n.cluster.leader)
        n.fault(f"leader after the step: {leader}")
        await n.set_clock("+0")
        await n.sleep(2)


async def compaction_with_watches(n: Nemesis) -> None:
    """Compactions every second while the watchers run; the lagging watchers go away until
    a compaction passes their next revision and resume below it (etcd's answer: canceled,
    ``compact_revision`` set). The leader is killed in the middle, so resumed watches land
    on other members, some of them before they applied the newest compaction."""
    for _ in range(4):
        await n.compact()
        await n.sleep(1)
    leader = await n.leader()
    await n.kill(leader)
    for _ in range(3):
        await n.compact()
        await n.sleep(1)
    await n.restart(leader)
    for _ in range(4):
        await n.compact()
        await n.sleep(1)
    n.expect_compacted_answers()


async def defrag_under_load(n: Nemesis) -> None:
    """Every member defragmented in turn, the leader last, twice, with a compaction before
    each (free pages to squeeze out) while the traffic and the watches run; then the leader's
    copy is held 2 s (``defrag_after_copy``) and writes must still be acknowledged meanwhile;
    then a follower dies in the switch (``defrag_before_install``: writers paused, the new
    file whole but not live) and restarts on its old generation."""
    for _ in range(2):
        leader, followers = await n.followers()
        for name in [*followers, leader]:
            await n.compact(keep=20)
            await n.defragment(name)
            await n.sleep(0.5)
    leader = await n.leader()
    await n.arm(leader, "defrag_after_copy", "1*sleep(2000)")
    held = asyncio.create_task(n.defragment(leader))
    await n.sleep(0.2)
    await n.expect_progress(1.5, "the leader's defragmentation (its copy held 2 s)")
    await held
    _, followers = await n.followers()
    await n.arm(followers[0], "defrag_before_install", "1*panic")
    await n.defragment(followers[0], expect_ok=False)
    await n.wait_exit(followers[0])
    await n.sleep(1)
    await n.restart(followers[0])
    await n.sleep(3)


FILL_PREFIX = "rbfill/"  # outside the watched and checked prefixes
FILL_VALUE_BYTES = 64 * 1024
NOSPACE_QUOTA_BYTES = 6 * 1024 * 1024


def _alarms(cluster: RobustCluster, name: str) -> list[str] | None:
    """The alarms ``name`` lists (None: it did not answer)."""
    try:
        code, doc = post(cluster.url(name), "/v3/maintenance/alarm", {"action": "GET"}, timeout_s=5.0)
    except OSError:
        return None
    return sorted(a.get("alarm", "NONE") for a in doc.get("alarms", [])) if code == 200 else None


async def _every_member_lists(n: Nemesis, alarms: list[str], timeout_s: float = 30.0) -> bool:
    """Wait until every running member lists the same alarms, of exactly the types in
    ``alarms``; a problem if they do not. (One NOSPACE alarm per member that refused a write
    over its quota, as etcd raises it: a KV client writing through a follower at the moment
    the fill ran out gets a second one, for that follower.)"""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, list[str] | None] = {}
    while time.monotonic() < deadline:
        seen = {m.name: await asyncio.to_thread(_alarms, n.cluster, m.name) for m in n.cluster.running()}
        lists = list(seen.values())
        if all(v is not None and sorted(set(v)) == alarms and v == lists[0] for v in lists):
            n.fault(f"every member lists {lists[0] or 'no alarm'}")
            return True
        await asyncio.sleep(0.2)
    n.problems.append(f"alarms: members list {seen} after {timeout_s:g} s, not {alarms}")
    return False


def _acked_writes(history: History, start: float, end: float) -> list[str]:
    """The writes acknowledged in ``[start, end]`` that the NOSPACE alarm must refuse: puts and
    compare-and-swaps of the KV clients, the once clients' numbered writes, and transactions
    that appended (deletes go on under the alarm, as in etcd)."""
    out = [f"{op['op']} {op['key']}" for op in history.ops
           if op["op"] == "cas" or (op["op"] == "put" and not op.get("delete"))
           if op.get("ret") is not None and start <= op["ret"] <= end]
    out += [f"once {r['key']}" for r in history.once if r.get("status") == "ok" and start <= (r.get("ret") or 0) <= end]
    out += [f"txn {r.get('mops')}" for r in history.txns if r.get("status") == "ok" and start <= (r.get("ret") or 0) <= end
            and any(m[0] == "append" for m in r.get("mops", []))]
    return out


async def nospace_alarm(n: Nemesis) -> None:
    """The backend quota runs out under load: 64 KiB values under ``rbfill/`` through the
    leader until a put is refused with etcd's "database space exceeded". Every member must
    then list the NOSPACE alarm and refuse writes while reads go on; the leader is killed and
    restarted, and the alarm must still be there (it is replicated state, not memory). Then
    the operator's recovery, as etcd documents it: delete, compact, defragment every member,
    disarm; the writes must resume."""
    await n.sleep(2)
    leader = await n.leader()
    url = n.cluster.url(leader)
    filled, answer = 0, ""
    for i in range(4 * NOSPACE_QUOTA_BYTES // FILL_VALUE_BYTES):
        code, doc = await asyncio.to_thread(
            post, url, "/v3/kv/put", {"key": b64(f"{FILL_PREFIX}{i:04d}"), "value": b64("x" * FILL_VALUE_BYTES)}, 10.0)
        if code != 200:
            answer = f"HTTP {code} {doc}"
            break
        filled += 1
    n.fault(f"{filled} puts of 64 KiB through {leader}, then {answer[:120] or 'never refused'}")
    if "database space exceeded" not in answer:
        n.problems.append(f"quota: the fill was never refused with NOSPACE ({answer[:200] or f'{filled} puts taken'})")
        return
    if not await _every_member_lists(n, ["NOSPACE"]):
        return
    alarmed = time.monotonic()
    await n.sleep(2)
    await n.kill(leader)
    await n.sleep(1)
    await n.restart(leader)
    await n.leader()
    await _every_member_lists(n, ["NOSPACE"])  # the restarted member too: the alarm was applied, not remembered
    await n.sleep(2)
    before_disarm = time.monotonic()
    reads = sum(1 for op in n.history.ops if op["op"] == "get" and op.get("ret") is not None
                and alarmed <= op["ret"] <= before_disarm)
    writes = _acked_writes(n.history, alarmed + 0.5, before_disarm)
    n.fault(f"{reads} reads and {len(writes)} writes acknowledged under the alarm")
    if writes:
        n.problems.append(f"quota: {len(writes)} writes acknowledged under the NOSPACE alarm, e.g. {writes[:3]}")
    if not reads:
        n.problems.append("liveness: no read acknowledged under the NOSPACE alarm")
    # the recovery
    leader = await n.leader()
    end = FILL_PREFIX[:-1] + chr(ord(FILL_PREFIX[-1]) + 1)
    code, doc = await asyncio.to_thread(post, n.cluster.url(leader), "/v3/kv/deleterange",
                                        {"key": b64(FILL_PREFIX), "range_end": b64(end)}, 10.0)
    n.fault(f"delete {FILL_PREFIX}: HTTP {code}, {doc.get('deleted') if isinstance(doc, dict) else doc} deleted")
    await n.compact(keep=0)
    for m in n.cluster.running():
        await n.defragment(m.name)
    # disarmed as etcdctl does: every alarm listed, each with its member (the one that ran out)
    code, doc = await asyncio.to_thread(post, n.cluster.url(leader), "/v3/maintenance/alarm", {"action": "GET"}, 10.0)
    for alarm in doc.get("alarms", []) if code == 200 else []:
        code, _ = await asyncio.to_thread(post, n.cluster.url(leader), "/v3/maintenance/alarm",
                                          {"action": "DEACTIVATE", **alarm}, 10.0)
        n.fault(f"alarm disarm {alarm}: HTTP {code}")
    await _every_member_lists(n, [])
    await n.expect_progress(4, "the writes after the NOSPACE alarm was disarmed")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("kill-leader", 3, kill_leader, about="SIGKILL the leader twice, restart it"),
        Scenario("kill-follower", 3, kill_follower, about="SIGKILL a follower, restart it"),
        Scenario("kill-majority", 3, kill_majority, about="SIGKILL the leader and a follower (no quorum), restart"),
        Scenario("full-cluster-cold-restart-under-load", 3, cold_restart, about="SIGKILL every member mid-write, staggered restart"),
        Scenario("rolling-restart", 3, rolling_restart,
                 about="SIGTERM each member in turn, the leader last, and restart it, twice; writes go on throughout"),
        Scenario("remove-leader", 3, remove_leader,
                 about="add a member, then remove the live leader; writes go on throughout, the removed member stops"),
        Scenario("leader-pause", 3, pause_leader, about="SIGSTOP the leader for 3 election timeouts, SIGCONT"),
        Scenario("exactly-once-retries", 3, leader_changes,
                 about="numbered writes retried after forced timeouts while the leader is killed, then frozen"),
        Scenario("partitioned-leader", 3, partition_leader, needs_net=True, about="isolate the leader (symmetric), heal"),
        Scenario("partitioned-leader-minority-writes", 5, partition_leader_minority, needs_net=True,
                 about="leader + 1 follower vs 3 of 5, clients on both sides"),
        Scenario("asymmetric-deaf-leader", 3, leader_deaf, needs_net=True, about="nothing reaches the leader; its sends arrive"),
        Scenario("partial-connectivity-5node", 5, partial_connectivity, needs_net=True,
                 about="two of five members each reach only one follower"),
        Scenario("lossy-network", 3, lossy_network, needs_net=True,
                 about="every peer connection loses 2 %, 5 %, then 10 % of its packets at random; writes go on"),
        Scenario("lossy-clients", 3, lossy_clients, needs_net=True,
                 about="every client connection loses 5 %, then 10 % of its packets; the leader killed meanwhile"),
        Scenario("flapping-partitions", 5, flapping_partitions, needs_net=True,
                 about="the network changes shape every 0.3-2 s for 30 s (halves, isolation, bridge, random cuts)"),
        Scenario("membership-churn-under-faults", 3, membership_churn, needs_net=True,
                 about="add a member, remove another while a third is partitioned"),
        Scenario("remove-partitioned-member", 3, remove_partitioned, needs_net=True,
                 about="add a member, cut a follower off, remove it, heal: the removed member stops by itself"),
        Scenario("snapshot-catchup-with-crashes", 3, snapshot_catchup, needs_net=True, extra_args=("--snapshot-count", "100", "--snapshot-catchup-entries", "20"),
                 about="follower cut off past a compaction, healed, killed mid catch-up"),
        Scenario("power-loss-unsynced-data", 3, power_loss, failpoints=True,
                 about="follower, then leader, die between a WAL write and its fdatasync (torn frame)"),
        Scenario("crash-after-apply", 3, crash_after_apply, failpoints=True,
                 about="leader, then follower, die after applying a batch, before answering it"),
        Scenario("slow-disk-leader", 3, slow_disk_leader, failpoints=True, about="the leader's log writes take 150 ms more"),
        Scenario("failing-disk", 3, failing_disk, failpoints=True,
                 about="EIO on a follower's log write, then on the leader's state-machine commit"),
        Scenario("clock-jumps", 3, clock_jumps, clock_skew=True, about="one member's wall clock steps +90 s, -90 s, back"),
        Scenario("lease-leader-clock-jump", 3, lease_leader_clock_jump, clock_skew=True,
                 about="the leader's wall clock steps +90 s, then -90 s, while leases are kept alive and others expire"),
        Scenario("compaction-with-watches", 3, compaction_with_watches, lagging_watchers=2,
                 about="compact every second under watches; watches resumed below the compaction; leader killed"),
        Scenario("defrag-under-load", 3, defrag_under_load, failpoints=True,
                 about="every member defragmented twice under compactions and traffic; the leader's copy held 2 s; "
                       "a follower killed in the switch"),
        Scenario("nospace-alarm", 3, nospace_alarm, extra_args=("--quota-backend-bytes", str(NOSPACE_QUOTA_BYTES)),
                 about="the quota runs out under load: writes refused, reads go on, the alarm survives the "
                       "leader's restart; delete, compact, defragment, disarm"),
    ]
}  # fmt: skip
