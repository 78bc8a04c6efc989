"""``ProgressTracker``: the configuration in force, a ``Progress`` per member, and the
votes of the current election. Iteration is always in ascending id order, so messages
come out in a deterministic order."""

from __future__ import annotations

from kvraft.raft.confchange import members
from kvraft.raft.progress import Progress
from kvraft.raft.quorum import VoteResult, joint_committed_index, joint_vote_result
from kvraft.raft.types import ConfState

__all__ = ["ProgressTracker"]


class ProgressTracker:
    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.conf = ConfState()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    # -- configuration ----------------------------------------------------------------

    def set_conf(self, conf: ConfState, next_index: int) -> None:
        """Switch to ``conf``: members new to the tracker get a fresh Progress (PROBE at
        ``next_index``, counted as recently active so check-quorum gives them a full
        election timeout); members no longer in ``conf`` are dropped."""
        self.conf = conf
        wanted = members(conf)
        for node in [n for n in self.progress if n not in wanted]:
            del self.progress[node]
        for node in sorted(wanted):
            pr = self.progress.get(node)
            if pr is None:
                pr = Progress(0, next_index, self.max_inflight)
                pr.recent_active = True
                self.progress[node] = pr
            pr.is_learner = node in conf.learners
        self.progress = dict(sorted(self.progress.items()))

    def voter_ids(self) -> frozenset[int]:
        return self.conf.voters | self.conf.voters_outgoing

    def is_voter(self, node: int) -> bool:
        return node in self.conf.voters or node in self.conf.voters_outgoing

    def is_singleton(self) -> bool:
        return len(self.conf.voters) == 1 and not self.conf.voters_outgoing

    def ids(self) -> list[int]:
        return list(self.progress)

    def reset_progress(self, last_index: int, self_id: int, self_match: int) -> None:
        """Fresh progress for every member, as a new term starts."""
        for node, old in list(self.progress.items()):
            pr = Progress(0, last_index + 1, self.max_inflight, old.is_learner)
            if node == self_id:
                pr.match = self_match
                pr.next = max(pr.next, self_match + 1)
            self.progress[node] = pr

    # -- quorum -----------------------------------------------------------------------

    def committed(self) -> int:
        match = {node: pr.match for node, pr in self.progress.items()}
        return joint_committed_index(self.conf.voters, self.conf.voters_outgoing, match)

    def quorum_active(self, self_id: int) -> bool:
        active = {node: pr.recent_active or node == self_id for node, pr in self.progress.items()}
        return (
            joint_vote_result(self.conf.voters, self.conf.voters_outgoing, active) == VoteResult.WON
        )

    def reset_recent_active(self, self_id: int) -> None:
        for node, pr in self.progress.items():
            pr.recent_active = node == self_id

    def quorum_of(self, acks: set[int] | frozenset[int]) -> bool:
        votes = dict.fromkeys(acks, True)
        return (
            joint_vote_result(self.conf.voters, self.conf.voters_outgoing, votes) == VoteResult.WON
        )

    # -- votes ------------------------------------------------------------------------

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node: int, granted: bool) -> None:
        self.votes.setdefault(node, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = rejected = 0
        for node in self.voter_ids():
            vote = self.votes.get(node)
            if vote is True:
                granted += 1
            elif vote is False:
                rejected += 1
        result = joint_vote_result(self.conf.voters, self.conf.voters_outgoing, self.votes)
        return granted, rejected, result
