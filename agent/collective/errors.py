"""Exceptions raised by the gradient exchange.

    CollectiveError                 base class; the communicator is unusable after any of these
     +-- PeerFailure                another rank crashed, hung or closed its connections
     +-- CollectiveTimeout          an operation or a rendezvous did not finish in time
     +-- MismatchError              ranks submitted different shapes / dtypes / ops
     +-- DuplicateRank              two processes were given the same rank

A ``PeerFailure`` is raised on every surviving rank; ``ranks`` names the failed ranks and
``reason`` says how it was seen (connection closed, no heartbeat for N s, ...).
"""

from __future__ import annotations

__all__ = ["CollectiveError", "CollectiveTimeout", "DuplicateRank", "MismatchError", "PeerFailure",
           "PEER_FAILURE_EXIT_CODE"]

#: exit status used when a rank has to leave because a peer failed while it was blocked
#: inside a non-interruptible transport call (MPI); see docs/design/collective.md.
PEER_FAILURE_EXIT_CODE = 75


class CollectiveError(RuntimeError):
    """Base class of every gradient-exchange failure."""


class PeerFailure(CollectiveError):
    def __init__(self, ranks: list[int], reason: str, seen_by: int | None = None) -> None:
        self.ranks = sorted(set(ranks))
        self.reason = reason
        self.seen_by = seen_by
        who = ", ".join(str(r) for r in self.ranks) or "?"
        where = f" (seen by rank {seen_by})" if seen_by is not None else ""
        super().__init__(f"peer failure: rank {who}: {reason}{where}")


class CollectiveTimeout(CollectiveError):
    pass


class MismatchError(CollectiveError):
    pass


class DuplicateRank(CollectiveError):
    pass

