"""Run-time estimates the simulated users attach to their jobs.

- ``history`` (default): the median trace duration of the last ``window`` jobs of the same VC
  and GPU count that *finished before this job was submitted* (Helios/QSSF-style prediction
  from history); falls back to the same GPU count, then to all jobs, then to no estimate.
  Uses only the past: honest.
- ``oracle``: the true duration (an upper bound on what estimates can buy; not a baseline).
- ``oracle-gangs`` / ``oracle-single``: the true duration for multi-GPU jobs only / one-GPU jobs
  only, ``history`` for the others: which jobs' estimates the bound comes from (analysis).
- ``none``: no estimates (shortest-job-first degrades to FIFO; backfill only drains).
- ``progress``: ``history`` until a multi-GPU job first starts; from then on its true
  duration, as if it reported its progress (step / total steps) from its first step and ran
  to its planned length. An optimistic bound for a scheduler that reads the progress the
  ranks write under ``/jobs/<job>/``: Philly's killed and failed jobs would not run to a
  planned length, and the trace does not say which they are (analysis, not a baseline).
  ``--progress-noise S`` multiplies each such estimate by a log-normal error (sigma S, seeded
  per job).
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from statistics import median

__all__ = ["ESTIMATORS", "Estimator"]

ESTIMATORS = ("history", "oracle", "none", "oracle-gangs", "oracle-single", "progress")


class Estimator:
    def __init__(self, kind: str = "history", window: int = 20, *, noise_sigma: float = 0.0, seed: int = 0) -> None:
        if kind not in ESTIMATORS:
            raise ValueError(f"unknown estimator {kind!r}; use one of {ESTIMATORS}")
        if not 0.0 <= noise_sigma < 10.0:
            raise ValueError(f"a progress noise is a log-normal sigma in [0, 10), not {noise_sigma}")
        self.kind = kind
        self.noise_sigma = noise_sigma
        self.seed = seed
        self.window = window
        self._by_key: dict[tuple[str, int], deque[float]] = defaultdict(lambda: deque(maxlen=window))
        self._by_gpus: dict[int, deque[float]] = defaultdict(lambda: deque(maxlen=window * 5))
        self._all: deque[float] = deque(maxlen=window * 25)

    def estimate(self, vc: str, gpus: int, true_duration_s: float) -> float | None:
        if self.kind == "oracle" or (self.kind == "oracle-gangs" and gpus > 1) \
                or (self.kind == "oracle-single" and gpus <= 1):
            return true_duration_s
        if self.kind == "none":
            return None
        for history in (self._by_key.get((vc, gpus)), self._by_gpus.get(gpus), self._all):
            if history:
                return float(median(history))
        return None

    def on_start(self, job_id: str, gpus: int, true_duration_s: float) -> float | None:
        """A job starts for the first time: its new estimate (``progress``, multi-GPU jobs),
        or None to keep the one it has."""
        if self.kind != "progress" or gpus <= 1:
            return None
        if not self.noise_sigma:
            return true_duration_s
        return true_duration_s * random.Random(f"{self.seed}:{job_id}").lognormvariate(0.0, self.noise_sigma)

    def observe(self, vc: str, gpus: int, duration_s: float) -> None:
        """A job finished: learn its (ideal) duration."""
        self._by_key[(vc, gpus)].append(duration_s)
        self._by_gpus[gpus].append(duration_s)
        self._all.append(duration_s)
