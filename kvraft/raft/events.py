"""Trace events: notable decisions of the core, reported through ``RaftConfig.trace``.

They exist for people (interaction transcripts, simulator traces); nothing in the core
depends on them. ``describe.describe_event`` renders one as a line of text.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RaftEvent"]


@dataclass(frozen=True, slots=True)
class RaftEvent:
    node: int
    term: int
    text: str
    """What happened, e.g. ``became leader`` or ``ignored MsgVote from 2: lease not expired``."""
