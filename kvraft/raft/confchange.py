"""Membership changes as a pure function: ``apply_change(conf, cc) -> ConfState``.

Three kinds of change (``ConfChange.transition``):

- simple: one change applied directly (C_old -> C_new). Safe because at most one voter
  differs, so every majority of C_old overlaps every majority of C_new.
- enter joint: any number of changes; the new configuration is joint, C_old,new, where
  decisions need a majority of both ``voters`` (incoming) and ``voters_outgoing``.
- leave joint: drop the outgoing half; learners parked in ``learners_next`` (voters being
  demoted, who must keep voting in the outgoing half) become learners.

Example: voters {1, 2, 3}; replace 3 with 4 in one joint step::

    enter joint [v4, r3]: voters {1, 2, 4}, voters_outgoing {1, 2, 3}, auto_leave
    leave joint:          voters {1, 2, 4}

Demoting voter 3 to learner while joint: 3 stays in ``voters_outgoing`` and waits in
``learners_next`` until the joint configuration is left.

Refused with ConfChangeError: a change naming node 0; removing every voter; a simple
change that alters more than one voter; entering a joint config while joint; leaving
when not joint; an empty change.
"""

from __future__ import annotations

from collections.abc import Sequence

from kvraft.raft.errors import ConfChangeError
from kvraft.raft.types import (
    NONE,
    ConfChange,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
)

__all__ = ["apply_change", "enter_joint", "is_joint", "leave_joint", "members", "simple"]

Change = tuple[ConfChangeType, int]


def is_joint(conf: ConfState) -> bool:
    return bool(conf.voters_outgoing)


def members(conf: ConfState) -> frozenset[int]:
    """Every node the configuration replicates to."""
    return conf.voters | conf.voters_outgoing | conf.learners | conf.learners_next


def apply_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after ``cc``; raises ConfChangeError if it is unsafe."""
    if cc.leave_joint:
        if cc.changes:
            raise ConfChangeError("a leave-joint change must not carry changes")
        return leave_joint(conf)
    if not cc.changes:
        raise ConfChangeError("empty conf change")
    if cc.transition == ConfChangeTransition.AUTO and len(cc.changes) == 1:
        return simple(conf, cc.changes)
    auto_leave = cc.transition != ConfChangeTransition.JOINT_EXPLICIT
    return enter_joint(conf, auto_leave, cc.changes)


def simple(conf: ConfState, changes: Sequence[Change]) -> ConfState:
    if is_joint(conf):
        raise ConfChangeError("cannot apply a simple change while in a joint configuration")
    voters, learners, _ = _apply(conf.voters, conf.learners, frozenset(), frozenset(), changes)
    if len(voters ^ conf.voters) > 1:
        raise ConfChangeError("more than one voter changed without entering a joint configuration")
    return _checked(ConfState(voters=voters, learners=learners))


def enter_joint(conf: ConfState, auto_leave: bool, changes: Sequence[Change]) -> ConfState:
    if is_joint(conf):
        raise ConfChangeError("already in a joint configuration")
    if not conf.voters:
        raise ConfChangeError("cannot enter a joint configuration from one with no voters")
    outgoing = conf.voters
    voters, learners, learners_next = _apply(
        conf.voters, conf.learners, outgoing, frozenset(), changes
    )
    return _checked(
        ConfState(
            voters=voters,
            learners=learners,
            voters_outgoing=outgoing,
            learners_next=learners_next,
            auto_leave=auto_leave,
        )
    )


def leave_joint(conf: ConfState) -> ConfState:
    if not is_joint(conf):
        raise ConfChangeError("cannot leave a configuration that is not joint")
    return _checked(ConfState(voters=conf.voters, learners=conf.learners | conf.learners_next))


def _apply(
    voters: frozenset[int],
    learners: frozenset[int],
    outgoing: frozenset[int],
    learners_next: frozenset[int],
    changes: Sequence[Change],
) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
    v, ln, lnext = set(voters), set(learners), set(learners_next)
    for kind, node in changes:
        if node == NONE or node < 0:
            raise ConfChangeError(f"invalid node id {node} in conf change")
        if kind == ConfChangeType.ADD_VOTER:
            ln.discard(node)
            lnext.discard(node)
            v.add(node)
        elif kind == ConfChangeType.ADD_LEARNER:
            v.discard(node)
            if node in outgoing:
                ln.discard(node)
                lnext.add(node)  # still votes in the outgoing half until we leave joint
            else:
                lnext.discard(node)
                ln.add(node)
        elif kind == ConfChangeType.REMOVE_NODE:
            v.discard(node)
            ln.discard(node)
            lnext.discard(node)
        else:  # pragma: no cover - exhaustive over the enum
            raise ConfChangeError(f"unknown conf change type {kind}")
    if not v:
        raise ConfChangeError("removing all voters is not allowed")
    return frozenset(v), frozenset(ln), frozenset(lnext)


def _checked(conf: ConfState) -> ConfState:
    """Assert the structural invariants every configuration must satisfy."""
    assert not (conf.learners & conf.voters), "a node is both learner and voter"
    assert not (conf.learners & conf.voters_outgoing), "a learner is an outgoing voter"
    assert conf.learners_next <= conf.voters_outgoing, "learners_next must be outgoing voters"
    assert not (conf.learners_next & conf.learners), "learners_next overlaps learners"
    if not is_joint(conf):
        assert not conf.learners_next and not conf.auto_leave, "non-joint with joint-only fields"
    return conf
