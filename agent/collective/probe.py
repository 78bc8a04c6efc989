"""Measure a backend's per-call latency (alpha) and bandwidth (beta) and derive its fusion policy.

The fixed per-backend policies (``fusion.py``) are constants measured on the development
machine. ``init(fusion="probe")`` (or ``KVRAFT_COLLECTIVE_FUSION=probe``) replaces them with
``fusion.policy_for(alpha, beta)`` measured at start-up on the job's own transport:

* alpha: median time of ``small_reps`` allreduces of ``small_bytes`` (float32);
* beta: ``big_bytes / (t_big - alpha)`` with ``t_big`` the median of ``big_reps`` allreduces of
  ``big_bytes``.

Every rank must derive the same policy (the fusion plan decides which collectives run), so the
two medians are averaged over the ranks with one more allreduce, whose result is bitwise the
same everywhere. Cost: about ``small_reps + big_reps + 3`` collectives (tens of milliseconds).
The result moves with the load on the machine when it is measured; that is the price of
measuring, and why it is opt-in.

The same-host ring also probes which *data path* to use per call size (``probe_links``,
run by ``tcp.TCPBackend`` at its first call of at least ``tcp.LINK_LADDER[0]`` bytes): a
cross-memory-attach link copies once but pays a pull and an acknowledgement per range, so
it wins for big calls and loses to plain sockets for small ones. The ladder's sizes are
timed both ways in CPU time of the process (all threads, user + system: the copies, the
syscalls, the adds; neither path busy-waits), which foreign load hardly moves, unlike wall
time (at load 16 a wall-clock probe once saw CMA lose at 16 MiB and turned it off), best of
``reps``, summed over the ranks by one allreduce, so every rank gets the same answer, and ``link_threshold`` picks the smallest size from which the
attach path won at every larger size of the ladder. This choice changes no result, only
the speed, so it is on by default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agent.collective.fusion import FusionPolicy, policy_for
from agent.collective.interface import Backend

__all__ = ["LinkProbe", "Probe", "link_threshold", "probe_links", "probe_policy"]


@dataclass(frozen=True, slots=True)
class Probe:
    latency_s: float  # alpha, averaged over ranks
    bandwidth_bytes_s: float  # beta (algorithm bandwidth of the big allreduce)
    policy: FusionPolicy


def _median_time(backend: Backend, buf: np.ndarray, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        backend.allreduce(buf)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def probe_policy(backend: Backend, *, small_bytes: int = 4 << 10, big_bytes: int = 4 << 20, small_reps: int = 9, big_reps: int = 3) -> Probe:
    """Collective: every rank of ``backend`` must call it; all get the same ``Probe``."""
    small = np.zeros(max(1, small_bytes // 4), np.float32)
    big = np.zeros(max(1, big_bytes // 4), np.float32)
    backend.allreduce(small)  # warm-up: connections, buffers, page faults
    backend.allreduce(big)
    alpha = _median_time(backend, small, small_reps)
    t_big = _median_time(backend, big, big_reps)
    agreed = np.array([alpha, t_big], np.float64)
    backend.allreduce(agreed)  # bitwise identical on every rank: the same policy everywhere
    alpha, t_big = (float(x) / backend.size for x in agreed)
    beta = big.nbytes / max(t_big - alpha, 1e-9)
    return Probe(alpha, beta, policy_for(alpha, beta))


# -- data path per call size (same-host ring links) ---------------------------------------
@dataclass(frozen=True, slots=True)
class LinkProbe:
    sizes: tuple[int, ...]  # bytes per call, ascending
    socket_s: tuple[float, ...]  # best CPU time per call over plain sockets, summed over ranks
    attach_s: tuple[float, ...]  # the same over the cross-memory-attach links
    #: calls of at least this many bytes use the attach links; None: never
    threshold: int | None


def link_threshold(sizes: Sequence[int], socket_s: Sequence[float], attach_s: Sequence[float]) -> int | None:
    """PURE. The smallest ladder size from which the attach path was faster at that size and
    every larger one; None when it lost at the largest size (then sockets everywhere).

    Between two ladder sizes the crossover is unknown, so the sizes below the first winning
    one stay on sockets: the ring is never slower than the socket ring at a measured size.
    """
    if not (len(sizes) == len(socket_s) == len(attach_s)) or list(sizes) != sorted(sizes):
        raise ValueError("link_threshold: sizes must be ascending, with one time of each kind per size")
    threshold = None
    for size, ts, ta in reversed(list(zip(sizes, socket_s, attach_s, strict=True))):
        if not ta < ts:
            break
        threshold = size
    return threshold


def probe_links(run: Callable[[str, np.ndarray], None], agree: Callable[[np.ndarray], None], sizes: Sequence[int], reps: int = 3) -> LinkProbe:
    """Collective: CPU-time ``run(kind, buf)`` (an allreduce of ``buf`` over the ``"socket"`` or
    ``"attach"`` links) at every size, ``reps`` times each, alternating the two kinds; each
    rank keeps its best time per (size, kind), ``agree`` sums them over the ranks (an
    allreduce whose result is bitwise the same everywhere)."""
    buf = np.zeros(max(sizes) // 4, np.float32)
    best = np.full((2, len(sizes)), np.inf)
    for i, size in enumerate(sizes):
        view = buf[: max(1, size // 4)]
        for rep in range(reps + 1):
            for k in ((0, 1) if rep % 2 == 0 else (1, 0)):
                t0 = time.process_time()
                run(("socket", "attach")[k], view)
                if rep:  # the first of each is a warm-up (page faults, scratch buffers)
                    best[k, i] = min(best[k, i], time.process_time() - t0)
    agreed = best.reshape(-1).copy()
    agree(agreed)
    socket_s, attach_s = tuple(float(x) for x in agreed[: len(sizes)]), tuple(float(x) for x in agreed[len(sizes) :])
    return LinkProbe(tuple(sizes), socket_s, attach_s, link_threshold(sizes, socket_s, attach_s))
