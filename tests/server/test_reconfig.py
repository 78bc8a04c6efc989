"""--strict-reconfig-check's rules (kvraft/server/reconfig.py), table-driven, without a cluster.

Each case names the registry (members, started or not, learners), which peers this member
(id 1) has been connected to and since when, and the change; the expected answer is etcd
3.4's, as captured from a real etcd cluster through its JSON gateway (code 2 "not enough
started members", code 14 "unhealthy cluster")."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from kvraft.apply.errors import Unavailable, Unknown
from kvraft.server.membership import Member, Membership
from kvraft.server.reconfig import HEALTH_INTERVAL_S, NOT_ENOUGH_STARTED, UNHEALTHY, ReconfigCheck

NOW = 1000.0
LONG_AGO = NOW - HEALTH_INTERVAL_S - 1
JUST_NOW = NOW - 1  # connected, but not for the health interval yet


@dataclass
class Case:
    name: str
    members: str
    """One letter per member, ids 1, 2, ...: ``S`` started voter, ``U`` voter never started,
    ``L`` started learner."""
    up: dict[int, float] = field(default_factory=dict)
    """Peers this member (1) is connected to, and since when."""
    change: tuple[str, object] = ("add", False)
    error: str | None = None


def _check(case: Case) -> ReconfigCheck:
    membership = Membership()
    for i, kind in enumerate(case.members, start=1):
        membership.members[i] = Member(i, "" if kind == "U" else f"m{i}", [f"http://127.0.0.1:{9000 + i}"],
                                       is_learner=kind == "L")
    return ReconfigCheck(membership, 1, case.up.get, clock=lambda: NOW)


ALL_UP = {2: LONG_AGO, 3: LONG_AGO}

CASES = [
    Case("add a voter, all connected", "SSS", ALL_UP),
    Case("add a learner, all connected", "SSS", ALL_UP, ("add", True)),
    Case("add a voter with one voter down", "SSS", {2: LONG_AGO}, error=UNHEALTHY),
    Case("add a learner with one voter down", "SSS", {2: LONG_AGO}, ("add", True), error=UNHEALTHY),
    Case("add while a connection is younger than the interval", "SSS", {2: LONG_AGO, 3: JUST_NOW}, error=UNHEALTHY),
    Case("a down learner does not count for add", "SSSL", ALL_UP),
    Case("one-member cluster adds its second", "S", {}),
    Case("second voter never started, add a third", "SU", {2: LONG_AGO}, error=NOT_ENOUGH_STARTED),
    Case("not started is checked before connections", "SU", {}, error=NOT_ENOUGH_STARTED),
    Case("a learner may be added beside an unstarted voter, if connected", "SSSU",
         {2: LONG_AGO, 3: LONG_AGO, 4: LONG_AGO}, ("add", True)),
    Case("four voters, one never started: a fifth is fine (3 of 5 started)", "SSSU",
         {2: LONG_AGO, 3: LONG_AGO, 4: LONG_AGO}),
    Case("remove a down voter", "SSS", {2: LONG_AGO}, ("remove", 3)),
    Case("remove an up voter while another is down", "SSS", {2: LONG_AGO}, ("remove", 2), error=UNHEALTHY),
    Case("remove itself while another is down", "SSS", {2: LONG_AGO}, ("remove", 1), error=UNHEALTHY),
    Case("remove an up voter, all connected", "SSS", ALL_UP, ("remove", 2)),
    Case("remove itself, all connected", "SSS", ALL_UP, ("remove", 1)),
    Case("remove a voter connected only just now while another is down (counts as not connected)", "SSS",
         {2: JUST_NOW}, ("remove", 2), error=UNHEALTHY),
    Case("remove a learner is never checked", "SSL", {}, ("remove", 3)),
    Case("remove the only started voter but one of three", "SUU", {}, ("remove", 1), error=NOT_ENOUGH_STARTED),
    Case("remove an unstarted voter", "SSU", {2: LONG_AGO}, ("remove", 3)),
    Case("remove an unknown id (NotFound is answered earlier)", "SSS", ALL_UP, ("remove", 99)),
    Case("promote a learner", "SSSL", ALL_UP, ("promote", 4)),
    Case("promote beside two unstarted voters", "SUUL", {}, ("promote", 4), error=NOT_ENOUGH_STARTED),
    Case("promote ignores connections", "SSSL", {}, ("promote", 4)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_strict_reconfig_rules(case: Case) -> None:
    check = _check(case)
    kind, arg = case.change
    call = {"add": lambda: check.may_add(bool(arg)), "remove": lambda: check.may_remove(int(arg)),  # type: ignore[call-overload]
            "promote": lambda: check.may_promote(int(arg))}[kind]  # type: ignore[call-overload]
    if case.error is None:
        call()
        return
    expected = Unknown if case.error == NOT_ENOUGH_STARTED else Unavailable
    with pytest.raises(expected) as info:
        call()
    assert str(info.value) == case.error
    assert info.value.code == (2 if expected is Unknown else 14)
