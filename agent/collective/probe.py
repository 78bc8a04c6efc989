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
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from agent.collective.fusion import FusionPolicy, policy_for
from agent.collective.interface import Backend

__all__ = ["Probe", "probe_policy"]


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
