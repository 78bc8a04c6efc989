"""confchange.apply_change: table of changes and the configurations they give, and the
changes that are refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kvraft.raft.confchange import apply_change
from kvraft.raft.errors import ConfChangeError
from kvraft.raft.types import ConfChange, ConfChangeTransition, ConfChangeType, ConfState

V, L, R = ConfChangeType.ADD_VOTER, ConfChangeType.ADD_LEARNER, ConfChangeType.REMOVE_NODE
AUTO, IMPLICIT, EXPLICIT = (
    ConfChangeTransition.AUTO,
    ConfChangeTransition.JOINT_IMPLICIT,
    ConfChangeTransition.JOINT_EXPLICIT,
)


def cs(
    voters: set[int],
    learners: set[int] | None = None,
    outgoing: set[int] | None = None,
    learners_next: set[int] | None = None,
    auto_leave: bool = False,
) -> ConfState:
    return ConfState(
        voters=frozenset(voters),
        learners=frozenset(learners or ()),
        voters_outgoing=frozenset(outgoing or ()),
        learners_next=frozenset(learners_next or ()),
        auto_leave=auto_leave,
    )


@dataclass(frozen=True)
class Case:
    name: str
    start: ConfState
    cc: ConfChange
    want: ConfState | str  # the configuration, or a fragment of the error


def change(
    *items: tuple[ConfChangeType, int], transition: ConfChangeTransition = AUTO
) -> ConfChange:
    return ConfChange(changes=tuple(items), transition=transition)


CASES = [
    Case("add voter", cs({1}), change((V, 2)), cs({1, 2})),
    Case("add voter again is a no-op", cs({1, 2}), change((V, 2)), cs({1, 2})),
    Case("add learner", cs({1}), change((L, 2)), cs({1}, {2})),
    Case("promote learner", cs({1}, {2}), change((V, 2)), cs({1, 2})),
    Case("demote voter (simple)", cs({1, 2, 3}), change((L, 3)), cs({1, 2}, {3})),
    Case("remove voter", cs({1, 2, 3}), change((R, 3)), cs({1, 2})),
    Case("remove learner", cs({1}, {2}), change((R, 2)), cs({1})),
    Case("remove unknown is a no-op", cs({1}), change((R, 7)), cs({1})),
    Case(
        "joint replace (auto leave)",
        cs({1, 2, 3}),
        change((V, 4), (R, 3)),
        cs({1, 2, 4}, outgoing={1, 2, 3}, auto_leave=True),
    ),
    Case(
        "joint demotion parks in learners_next",
        cs({1, 2, 3}),
        change((L, 3), transition=EXPLICIT),
        cs({1, 2}, outgoing={1, 2, 3}, learners_next={3}),
    ),
    Case(
        "single change made joint on request",
        cs({1, 2}),
        change((V, 3), transition=IMPLICIT),
        cs({1, 2, 3}, outgoing={1, 2}, auto_leave=True),
    ),
    Case(
        "leave joint turns learners_next into learners",
        cs({1, 2}, outgoing={1, 2, 3}, learners_next={3}),
        ConfChange(leave_joint=True),
        cs({1, 2}, {3}),
    ),
    Case("remove all voters", cs({1}), change((R, 1)), "removing all voters"),
    Case("remove all voters joint", cs({1, 2}), change((R, 1), (R, 2)), "removing all voters"),
    Case("node id 0", cs({1}), change((V, 0)), "invalid node id"),
    Case("empty change", cs({1}), ConfChange(), "empty conf change"),
    Case("leave when not joint", cs({1}), ConfChange(leave_joint=True), "not joint"),
    Case(
        "enter joint twice",
        cs({1, 2}, outgoing={1}),
        change((V, 3), (V, 4)),
        "already in a joint configuration",
    ),
    Case(
        "simple change while joint",
        cs({1, 2}, outgoing={1}),
        change((V, 3)),
        "while in a joint configuration",
    ),
    Case(
        "leave with changes",
        cs({1, 2}, outgoing={1}),
        ConfChange(changes=((V, 3),), leave_joint=True),
        "must not carry changes",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_apply_change(case: Case) -> None:
    if isinstance(case.want, str):
        with pytest.raises(ConfChangeError, match=case.want):
            apply_change(case.start, case.cc)
    else:
        assert apply_change(case.start, case.cc) == case.want


def test_simple_change_of_two_voters_is_refused() -> None:
    from kvraft.raft.confchange import simple

    with pytest.raises(ConfChangeError, match="more than one voter"):
        simple(cs({1, 2, 3}), [(V, 4), (R, 3)])
    # two changes touching one voter are fine
    assert simple(cs({1, 2, 3}), [(L, 4), (V, 5)]) == cs({1, 2, 3, 5}, {4})
