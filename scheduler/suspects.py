"""PURE: nodes whose agent may be dead although its lease is still live.

When a machine is lost (``kvraft-local kill-node``) the MPI world of a gang on it aborts
within ~1 s, long before the dead agent's lease runs out (TTL 10 s). Without more, the job's
``OnFailure`` restart binds the gang onto the same nodes again -- the dead one still looks
Ready -- and at lease expiry it is ``Lost`` and restarted a second time. Kubernetes has the
same window (the unreachable taint comes only after ``node-monitor-grace-period``).

The daemon narrows it with evidence it already has: when a gang's run ends with a failed
task, every node of the gang whose agent reported none of that run's task endings
(``Failed``/``Succeeded`` for the run's assignment revision) is **suspect**: a live agent
reports its tasks' exit, a dead one cannot. While suspect, the node is fed to the core as
NotReady (``ClusterView.unreachable``), like a node with the unreachable taint. It stops
being suspect when

- a **renewal of its lease** is seen: ``LeaseTimeToLive`` answers whole seconds rounded up
  (``ceil``), so without a renewal an answer ``r2`` sent ``d`` seconds after an earlier answer
  ``r1`` arrived is at most ``r1 - floor(d)`` (the server's interval between the two reads is
  at least ``d``); an answer above that for any earlier answer proves a renewal. A live agent
  renews every ``renew_interval_s`` (2 s), so it is cleared within about one interval plus
  one probe;
- its heartbeat key is deleted (the lease expired: the node is NotReady anyway, and its
  gangs are ``Lost``) or replaced (another lease: the agent registered again);
- the give-up time passes: granted TTL + 2 renew intervals + 2 s after the suspicion, by
  when a lease that was not renewed has expired (a leader change extends leases by the
  election timeout; the 2 s cover it), so a lease still there was renewed and we missed it.

What can go wrong, and its cost: a live agent that had not yet reported its tasks' exit when
the first failure was seen is kept out of placement until its next renewal (~2 s here); a
renewal wrongly inferred (a follower's checkpoint of an unrenewed lease may move its deadline
up by up to 1 s; a new Raft leader extends every lease) clears a dead node early: the old
behaviour, a second restart at lease expiry. Neither strands a job for good.

Times are the caller's monotonic clock; the class does no I/O (the daemon sends the probes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["PROBE_INTERVAL_S", "Suspect", "Suspects"]

PROBE_INTERVAL_S = 0.5  # LeaseTimeToLive of each suspect node at most this often


@dataclass(slots=True)
class Suspect:
    node: str
    lease_id: int
    heartbeat_revision: int  # create revision of /registry/leases/<node> when suspected
    since: float
    give_up_at: float
    reason: str
    next_probe: float
    answers: list[tuple[int, float]] = field(default_factory=list)  # (TTL, when it arrived)


class Suspects:
    """The suspect nodes and the evidence that clears them."""

    def __init__(self, probe_interval_s: float = PROBE_INTERVAL_S) -> None:
        self.probe_interval_s = probe_interval_s
        self._nodes: dict[str, Suspect] = {}

    def __contains__(self, node: object) -> bool:
        return node in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def names(self) -> set[str]:
        return set(self._nodes)

    def get(self, node: str) -> Suspect | None:
        return self._nodes.get(node)

    def suspect(self, node: str, *, lease_id: int, heartbeat_revision: int, ttl_s: float, renew_interval_s: float,
                now: float, reason: str) -> bool:
        """Suspect ``node``; False when it already was (its evidence is kept)."""
        if node in self._nodes:
            return False
        give_up = now + ttl_s + 2 * renew_interval_s + 2.0
        self._nodes[node] = Suspect(node, lease_id, heartbeat_revision, now, give_up, reason, now)
        return True

    def due(self, now: float) -> list[tuple[str, int]]:
        """``(node, lease id)`` of every suspect whose lease should be asked about now."""
        return [(s.node, s.lease_id) for s in self._nodes.values() if s.next_probe <= now and s.lease_id]

    def observe(self, node: str, ttl: int, sent: float, received: float) -> bool:
        """A LeaseTimeToLive answer ``ttl`` to a request sent at ``sent`` arrived at
        ``received``. True when it proves a renewal (the node is cleared)."""
        s = self._nodes.get(node)
        if s is None:
            return False
        s.next_probe = received + self.probe_interval_s
        if ttl <= 0:  # gone or expiring: the heartbeat's deletion follows (``heartbeats``)
            return False
        if any(ttl > r - math.floor(max(0.0, sent - at)) for r, at in s.answers):
            del self._nodes[node]
            return True
        s.answers.append((ttl, received))
        if len(s.answers) > 64:  # the first (longest interval) and the latest matter most
            del s.answers[1:-32]
        return False

    def probe_failed(self, node: str, now: float) -> None:
        s = self._nodes.get(node)
        if s is not None:
            s.next_probe = now + self.probe_interval_s

    def heartbeats(self, current: dict[str, int]) -> list[str]:
        """Drop suspects whose heartbeat key is gone or was created again (``current``: node
        -> create revision of its heartbeat key). Returns the dropped nodes."""
        out = [n for n, s in self._nodes.items() if current.get(n) != s.heartbeat_revision]
        for n in out:
            del self._nodes[n]
        return out

    def expire(self, now: float) -> list[str]:
        """Drop suspects past their give-up time. Returns the dropped nodes."""
        out = [n for n, s in self._nodes.items() if now >= s.give_up_at]
        for n in out:
            del self._nodes[n]
        return out

    def next_wakeup(self) -> float | None:
        """When the daemon should run again for a probe or a give-up, or None."""
        times = [min(s.next_probe, s.give_up_at) for s in self._nodes.values()]
        return min(times) if times else None
