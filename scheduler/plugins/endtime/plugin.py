"""EndTimeFit: a Score plugin that packs jobs by when they are expected to end.

A node comes free whole (for an 8-GPU gang) only when the last of its gangs ends. Best fit
(``topology``) packs small jobs by GPU count alone, so a long one-GPU job lands beside short
ones and keeps the node from freeing when they end; then a gang that needs the whole node
waits, or ``defrag`` moves small jobs out of its way (each move counts as a preemption). This
plugin scores, for a job that fits in one node, how well the node's expected free time agrees
with the job's own:

- the node's *horizon* h: the longest expected remaining run time of the gangs running on it
  (0 on an empty node; a gang being evicted does not count; nor does one with no estimate);
- the job's expected remaining run time R;
- ``mode = "cover"`` (default): score = MAX x min(1, h / R), the share of the job's run during
  which the node is busy anyway: a job that would keep the node busy past its horizon loses
  by how much, one that ends inside it (a short job beside long ones) loses nothing;
- ``mode = "match"``: score = MAX x min(h, R) / max(h, R): short with short, long with long
  (a short job beside long ones loses too).

An empty node scores 0 in both modes (taking it breaks a whole node), and so does every node
when R is unknown, or for a job larger than the largest node of its type (placed over several
nodes: the score is for jobs that fit in one). Combined with ``topology``'s best fit by the
profile's weights (both 0..100).

Expected remaining times are honest: ``estimate = "learned"`` (default) uses the plugin's own
``LearnedRemaining`` (``remaining``'s estimator, ``relative`` to the job's own estimate by
default) fed by ``job_finished`` with the run times of finished jobs only; ``"hint"`` uses
the job's own estimate minus its attained run (``JobInfo.remaining_hint_s``). A job's true
duration is never an input. Per pass (one ``now``), each job's expected remaining time is
computed once (memo cleared by ``begin_pass``, a new ``now`` or a finished job).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.framework.args import decode_args
from scheduler.framework.cycle_state import CycleState
from scheduler.framework.interfaces import MAX_SCORE, FinishPlugin, Handle, PassPlugin, ScorePlugin
from scheduler.plugins.remaining.history import LearnedRemaining
from scheduler.state import ClusterState, JobInfo, NodeInfo

__all__ = ["NAME", "EndTimeArgs", "EndTimeFit", "new"]

NAME = "endtime"


@dataclass(frozen=True)
class EndTimeArgs:
    mode: str = "cover"
    estimate: str = "learned"
    relative: bool = True
    min_samples: int = 10
    window: int = 500
    stat: str = "mean"
    overrun_factor: float = 1.0


class EndTimeFit:
    name = NAME

    def __init__(self, args: EndTimeArgs) -> None:
        if args.mode not in ("cover", "match"):
            raise ValueError(f"endtime: mode must be 'cover' or 'match', not {args.mode!r}")
        if args.estimate not in ("learned", "hint"):
            raise ValueError(f"endtime: estimate must be 'learned' or 'hint', not {args.estimate!r}")
        self.match = args.mode == "match"
        self.learned = LearnedRemaining(
            relative=args.relative, window=args.window, min_samples=args.min_samples, stat=args.stat,
            overrun_factor=args.overrun_factor,
        ) if args.estimate == "learned" else None
        self.overrun = args.overrun_factor
        self._memo: dict[str, float | None] = {}
        self._memo_now: float | None = None

    # --- learning ---------------------------------------------------------------------------

    def job_finished(self, info: JobInfo, at_s: float) -> None:
        if self.learned is not None:
            self.learned.job_finished(info, at_s)
            self._memo.clear()

    def begin_pass(self, state: ClusterState, now_s: float) -> None:
        self._memo.clear()
        self._memo_now = now_s

    # --- estimates --------------------------------------------------------------------------

    def remaining_s(self, info: JobInfo, now_s: float) -> float | None:
        """The job's expected remaining run time at ``now_s`` (None: unknown)."""
        if now_s != self._memo_now:
            self._memo.clear()
            self._memo_now = now_s
        key = info.job.job_id
        if key in self._memo:
            return self._memo[key]
        if self.learned is not None:
            left = self.learned.remaining_s(info, now_s)
        else:
            left = info.remaining_hint_s(now_s, self.overrun)
        self._memo[key] = left
        return left

    def horizon_s(self, state: ClusterState, node: NodeInfo, now_s: float) -> float:
        """The longest expected remaining run time of the gangs on ``node`` (0: none known)."""
        horizon = 0.0
        running = state.running
        for job_id in node.jobs:
            other = running.get(job_id)
            if other is None or other.evicting:
                continue
            left = self.remaining_s(other, now_s)
            if left is not None and left > horizon:
                horizon = left
        return horizon

    # --- Score ------------------------------------------------------------------------------

    def score(self, cs: CycleState, info: JobInfo, node: NodeInfo, tasks_here: int) -> int:
        job = info.job
        if not job.gpus_per_task or job.gpus > cs.state.largest_node_gpus(job.gpu_type):
            return 0
        own = self.remaining_s(info, cs.now_s)
        if own is None or own <= 0.0:
            return 0
        horizon = self.horizon_s(cs.state, node, cs.now_s)
        if horizon <= 0.0:
            return 0
        if self.match:
            share = min(horizon, own) / max(horizon, own)
        else:
            share = min(1.0, horizon / own)
        return round(MAX_SCORE * share)


def new(args: Mapping[str, Any], handle: Handle) -> EndTimeFit:
    return EndTimeFit(decode_args(EndTimeArgs, args))


_check_score: ScorePlugin = EndTimeFit(EndTimeArgs())
_check_finish: FinishPlugin = EndTimeFit(EndTimeArgs())
_check_pass: PassPlugin = EndTimeFit(EndTimeArgs())
