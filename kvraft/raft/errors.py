"""Expected outcomes the Raft core reports as exceptions.

Bugs (broken invariants) are ``AssertionError``; misuse of the API (a local message type
passed to ``step``, a second ``ready()`` before ``advance()``) is ``ValueError`` or
``RuntimeError``. Everything here is an outcome a correct caller must handle::

    RaftError
     +-- ProposalDroppedError      the proposal (or read, or transfer) was not accepted;
     |    |                        ``leader`` names the leader when one is known
     |    +-- NotLeaderError       this node is not the leader (the core never forwards
     |                             proposals; send it to ``leader`` instead)
     +-- ConfChangeError           the membership change is unsafe or malformed

``ProposalDroppedError`` (not ``NotLeaderError``) is raised by a leader that refuses:
a leadership transfer is in progress, the uncommitted log would exceed
``max_uncommitted_entries_size``, a conf change is already pending, or the leader has been
removed from the configuration.
"""

from __future__ import annotations

from kvraft.raft.types import NONE

__all__ = ["ConfChangeError", "NotLeaderError", "ProposalDroppedError", "RaftError"]


class RaftError(Exception):
    """Base of the expected outcomes of the Raft core."""


class ProposalDroppedError(RaftError):
    """The core did not accept a proposal. ``leader`` is the leader's id, or NONE (0)."""

    def __init__(self, reason: str, leader: int = NONE) -> None:
        super().__init__(reason)
        self.reason = reason
        self.leader = leader


class NotLeaderError(ProposalDroppedError):
    """This node is not the leader; retry at ``leader`` (NONE when no leader is known)."""

    def __init__(self, leader: int = NONE) -> None:
        reason = (
            f"not leader; leader is {leader}" if leader != NONE else "not leader; no leader known"
        )
        super().__init__(reason, leader)


class ConfChangeError(RaftError):
    """A ConfChange that would produce an invalid or unsafe configuration (for example
    removing every voter, or changing two voters without joint consensus)."""
