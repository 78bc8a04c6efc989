"""PURE run-time history: what finished jobs ran, and what that says about a running job.

``RunTimeHistory.observe(tenant, gpus, run_s)`` records a finished job's run time (wall-clock
seconds it held its GPUs, over all its runs). ``remaining_s(tenant, gpus, attained_s)`` is the
run time a job that has already run ``attained_s`` is expected still to need, from the
conditional distribution of run time given "ran longer than ``attained_s``" (Tiresias'
Gittins-index policy conditions its discretised duration distribution the same way):

- ``stat = "mean"``: E[T - a | T > a];  ``stat = "median"``: the conditional median minus a
  (any ``quantile`` in (0, 1));  ``stat = "gittins"``: 1 / the Gittins index at a, i.e. the
  least, over quanta D, of E[min(T - a, D) | T > a] / P(T - a <= D | T > a): the expected
  service per job completed if the job is served for the best quantum (seconds). Computed
  from the runs longer than a, as if the job had run only max(the grid point at or below a,
  the longest run not longer than a) (grid: 0, then 30 s x 1.25^k), so that jobs between the
  same runs and grid points share one O(n) computation, cached until the history changes.
- The samples come from the most specific history that holds at least ``min_samples`` run
  times longer than ``a``: the same tenant and size class, else the size class, else all jobs.
- A job that has run longer than all but fewer than ``min_samples`` of the whole history is
  expected to run ``overrun_factor`` x as long again (heavy tails), at least the samples' say.
- With no history at all the answer is None (the caller falls back to the job's own estimate).

Size classes: 1 GPU (and CPU-only), 2, 3-4, 5-8, 9-16, 17-32, more. Each history keeps the
last ``window`` run times (the global one ``4 x window``), so it follows a drifting workload.
Nothing here reads a clock or sees a job before it finished: the history is the past only.

Worked example (one tenant, runs of 60, 120, 600, 3600 and 36000 s, ``min_samples`` 1):
a fresh job expects mean 8,076 s, median 600 s; after 700 s it is one of the two longest,
expected 19,800 - 700 = 19,100 s more (mean) or 36,000 - 700 = 35,300 s (median, upper).

Queries are O(log n): each history's sorted samples and suffix sums are rebuilt lazily, once
after any change, on the next query.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from itertools import accumulate
from typing import Any

import numpy as np

from scheduler.records import JobInfo

__all__ = ["LearnedRemaining", "RunTimeHistory", "size_class"]

_CLASSES = (1, 2, 4, 8, 16, 32)


def size_class(gpus: int) -> int:
    """The smallest of 1, 2, 4, 8, 16, 32 GPUs that holds ``gpus`` (64 for anything larger)."""
    for bound in _CLASSES:
        if gpus <= bound:
            return bound
    return 64


_GRID_STEP = 1.25
_LOG_STEP = math.log(_GRID_STEP)


def _grid_point(attained_s: float, first: float) -> tuple[int, float]:
    """The log grid's point at or below ``attained_s``: (number, value)."""
    if attained_s < first:
        return 0, 0.0
    k = int(math.log(attained_s / first) / _LOG_STEP) + 1
    return k, first * _GRID_STEP ** (k - 1)


def _inverse_gittins(longer: np.ndarray, at_s: float) -> float:
    """min over quanta ending at a sample t of ``longer`` (all > at_s) of
    E[min(T - a, t - a) | T > a] / P(T <= t | T > a), a = at_s. The best quantum ends at a
    sample: between samples the completion probability is flat and the service grows."""
    left = longer - at_s
    m = len(left)
    k = np.arange(1, m + 1, dtype=float)
    served = np.cumsum(left) + (m - k) * left  # m x E[min(T - a, t_k - a) | T > a]
    return float(np.min(served / k))


class _Samples:
    __slots__ = ("recent", "sorted", "suffix", "dirty", "array", "cache")

    def __init__(self, window: int) -> None:
        self.recent: deque[float] = deque(maxlen=window)
        self.sorted: list[float] = []
        self.suffix: list[float] = [0.0]  # suffix[i] = sum(sorted[i:])
        self.dirty = False
        self.array = np.zeros(0)
        self.cache: dict[tuple[int, int], float] = {}  # Gittins: (first longer sample, grid point) -> 1/index

    def add(self, run_s: float) -> None:
        self.recent.append(run_s)
        self.dirty = True

    def view(self) -> tuple[list[float], list[float]]:
        if self.dirty:
            self.sorted = sorted(self.recent)
            self.suffix = list(accumulate(reversed(self.sorted), initial=0.0))[::-1]
            self.array = np.asarray(self.sorted, dtype=float)
            self.cache.clear()
            self.dirty = False
        return self.sorted, self.suffix


class RunTimeHistory:
    def __init__(
        self, *, window: int = 500, min_samples: int = 10, stat: str = "mean", quantile: float = 0.5,
        overrun_factor: float = 1.0, grid_first: float = 30.0,
    ) -> None:
        if window < 1 or min_samples < 1:
            raise ValueError("window and min_samples must be >= 1")
        if stat not in ("mean", "median", "gittins"):
            raise ValueError(f"stat must be mean, median or gittins, not {stat!r}")
        if not 0.0 < quantile < 1.0:
            raise ValueError("quantile must be in (0, 1)")
        if overrun_factor < 0:
            raise ValueError("overrun_factor must be >= 0")
        self.window = window
        self.min_samples = min_samples
        self.stat = stat
        self.gittins = stat == "gittins"
        self.quantile = quantile
        self.overrun = overrun_factor
        self.grid_first = grid_first
        self._keyed: dict[tuple[str, int], _Samples] = {}
        self._sized: dict[int, _Samples] = {}
        self._all = _Samples(4 * window)
        self.observed = 0

    def observe(self, tenant: str, gpus: int, run_s: float) -> None:
        """A job finished after running ``run_s`` seconds in all."""
        if run_s < 0:
            raise ValueError("run time must be >= 0")
        cls = size_class(gpus)
        keyed = self._keyed.get((tenant, cls))
        if keyed is None:
            keyed = self._keyed[(tenant, cls)] = _Samples(self.window)
        sized = self._sized.get(cls)
        if sized is None:
            sized = self._sized[cls] = _Samples(self.window)
        keyed.add(run_s)
        sized.add(run_s)
        self._all.add(run_s)
        self.observed += 1

    def _samples_at(self, tenant: str, gpus: int, attained_s: float) -> tuple[_Samples, int] | None:
        """The most specific history with at least ``min_samples`` runs longer than
        ``attained_s`` (tenant and size class, else class, else all), and where those runs
        start in its sorted samples; None when even the whole history has too few."""
        cls = size_class(gpus)
        for samples in (self._keyed.get((tenant, cls)), self._sized.get(cls), self._all):
            if samples is None:
                continue
            ordered, _ = samples.view()
            at = bisect_right(ordered, attained_s)
            if len(ordered) - at >= self.min_samples:
                return samples, at
        return None

    def remaining_s(self, tenant: str, gpus: int, attained_s: float) -> float | None:
        """Expected run time still to come for a job that has run ``attained_s`` seconds (None
        before any job finished)."""
        if not self.observed:
            return None
        found = self._samples_at(tenant, gpus, attained_s)
        if found is not None:
            return self._stat(found[0], found[1], attained_s)
        ordered, _ = self._all.view()
        at = bisect_right(ordered, attained_s)
        guess = self.overrun * attained_s
        if at < len(ordered):
            guess = max(guess, self._stat(self._all, at, attained_s))
        return guess

    def p_end_within(self, tenant: str, gpus: int, attained_s: float, within_s: float) -> float | None:
        """P(T <= attained_s + within_s | T > attained_s): the chance that a job that has run
        ``attained_s`` ends within ``within_s`` more, from the same history ``remaining_s``
        reads (None before any job finished; 0 past all but fewer than ``min_samples`` runs)."""
        if not self.observed:
            return None
        found = self._samples_at(tenant, gpus, attained_s)
        if found is None:
            return 0.0
        samples, at = found
        ordered = samples.sorted
        return (bisect_right(ordered, attained_s + within_s) - at) / (len(ordered) - at)

    def _stat(self, samples: _Samples, at: int, attained_s: float) -> float:
        ordered = samples.sorted
        longer = len(ordered) - at
        if self.stat == "mean":
            return samples.suffix[at] / longer - attained_s
        if self.stat == "median":
            return ordered[at + int(self.quantile * longer)] - attained_s
        k, point = _grid_point(attained_s, self.grid_first)
        got = samples.cache.get((at, k))
        if got is None:
            at_s = max(point, ordered[at - 1] if at else 0.0)
            got = samples.cache[(at, k)] = _inverse_gittins(samples.array[at:], at_s)
        return got


class LearnedRemaining:
    """A job's expected remaining run time from what finished jobs ran (what the ``remaining``
    QueueSort and ``las`` with ``within: learned`` use).

    ``relative = False``: from their run times (``RunTimeHistory`` in seconds).
    ``relative = True``: from their run times *over their own estimates* (``runtime_hint_s``):
    a job with estimate E that has run a expects E x (the ratio history's remaining at a / E),
    so the estimate's recency (a user's or a recent-history guess) and the attained service
    both count; jobs without an estimate use the run-time history. Either way, with no history
    yet: the estimate minus what ran (None without an estimate)."""

    def __init__(self, *, relative: bool = False, **history: Any) -> None:
        self.absolute = RunTimeHistory(**history)
        self.relative = RunTimeHistory(**{**history, "grid_first": 0.01}) if relative else None

    def job_finished(self, info: JobInfo, at_s: float) -> None:
        job = info.job
        if not job.gpus:
            return
        run_s = info.attained_at(at_s) / job.gpus
        self.absolute.observe(job.tenant, job.gpus, run_s)
        hint = job.runtime_hint_s
        if self.relative is not None and hint:
            self.relative.observe(job.tenant, job.gpus, run_s / hint)

    def p_end_within(self, info: JobInfo, now_s: float, within_s: float) -> float | None:
        """The chance that the job ends within ``within_s`` of ``now_s`` (``RunTimeHistory.
        p_end_within``, on the ratio history when the job has an estimate and ``relative``);
        None with no history yet."""
        job = info.job
        if not job.gpus:
            return None
        done = info.attained_at(now_s) / job.gpus
        hint = job.runtime_hint_s
        if self.relative is not None and hint:
            p = self.relative.p_end_within(job.tenant, job.gpus, done / hint, within_s / hint)
            if p is not None:
                return p
        return self.absolute.p_end_within(job.tenant, job.gpus, done, within_s)

    def remaining_s(self, info: JobInfo, now_s: float) -> float | None:
        job = info.job
        done = info.attained_at(now_s) / job.gpus if job.gpus else 0.0
        hint = job.runtime_hint_s
        if self.relative is not None and hint:
            ratio = self.relative.remaining_s(job.tenant, job.gpus, done / hint)
            if ratio is not None:
                return ratio * hint
        left = self.absolute.remaining_s(job.tenant, job.gpus, done)
        if left is not None:
            return left
        return None if hint is None else max(hint - done, 0.0)
