"""ConfChange encoding, config validation, errors and the canonical text of values."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvraft.raft.config import RaftConfig, ReadOnlyOption
from kvraft.raft.describe import (
    describe_conf_state,
    describe_entry,
    describe_hard_state,
    describe_message,
    describe_ready,
)
from kvraft.raft.errors import NotLeaderError, ProposalDroppedError
from kvraft.raft.types import (
    ConfChange,
    ConfChangeTransition,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    SoftState,
    StateRole,
)

changes = st.lists(
    st.tuples(st.sampled_from(list(ConfChangeType)), st.integers(1, 2**63)), max_size=5
)


@given(changes, st.booleans(), st.binary(max_size=20), st.sampled_from(list(ConfChangeTransition)))
def test_conf_change_round_trips(
    items: list[tuple[ConfChangeType, int]], leave: bool, ctx: bytes, tr: ConfChangeTransition
) -> None:
    cc = ConfChange(changes=tuple(items), leave_joint=leave, context=ctx, transition=tr)
    data = cc.encode()
    assert ConfChange.decode(data) == cc
    assert cc.encode() == data  # deterministic


@pytest.mark.parametrize(
    "junk", [b"", b"XX", b"CC1\x00\x00\x00\x05", b"CC1\x02\x00\x00\x00", b"ZZZ\x00\x00\x00\x00"]
)
def test_conf_change_decode_rejects_junk(junk: bytes) -> None:
    with pytest.raises(ValueError):
        ConfChange.decode(junk)


def test_config_validation_messages() -> None:
    rng = random.Random(0)
    RaftConfig(id=1, rng=rng).validate()
    bad = {
        "id must be a positive": dict(id=0),
        "heartbeat_ticks must be > 0": dict(heartbeat_ticks=0),
        "must be greater than heartbeat_ticks": dict(election_ticks=1),
        "max_inflight_msgs": dict(max_inflight_msgs=0),
        "max_size_per_msg": dict(max_size_per_msg=0),
        "max_uncommitted_entries_size": dict(max_uncommitted_entries_size=-1),
        "LEASE_BASED requires check_quorum": dict(
            read_only_option=ReadOnlyOption.LEASE_BASED, check_quorum=False
        ),
    }
    for fragment, override in bad.items():
        cfg = RaftConfig(**{"id": 1, "rng": rng, **override})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=fragment):
            cfg.validate()


def test_not_leader_error_names_the_leader() -> None:
    err = NotLeaderError(3)
    assert isinstance(err, ProposalDroppedError) and err.leader == 3
    assert str(err) == "not leader; leader is 3"
    assert str(NotLeaderError()) == "not leader; no leader known"


def test_describe_formats() -> None:
    e = Entry(term=1, index=11, data=b"x")
    m = Message(
        type=MessageType.APP, to=2, from_=1, term=1, log_term=1, index=10, commit=10, entries=(e,)
    )
    assert (
        describe_message(m)
        == '1->2 MsgApp Term:1 Log:1/10 Commit:10 Entries:[1/11 EntryNormal "x"]'
    )
    r = Message(
        type=MessageType.APP_RESP,
        to=1,
        from_=2,
        term=1,
        log_term=1,
        index=10,
        reject=True,
        reject_hint=7,
    )
    assert describe_message(r) == "2->1 MsgAppResp Term:1 Log:1/10 Rejected (Hint: 7)"
    cc = ConfChange(changes=((ConfChangeType.ADD_VOTER, 4), (ConfChangeType.REMOVE_NODE, 2)))
    assert (
        describe_entry(Entry(2, 5, EntryType.CONF_CHANGE, cc.encode()))
        == "2/5 EntryConfChange v4 r2"
    )
    assert describe_entry(Entry(2, 6, data=b'a"\x00')) == '2/6 EntryNormal "a\\"\\x00"'
    assert describe_hard_state(HardState(2, 1, 11)) == "Term:2 Vote:1 Commit:11"
    assert (
        describe_conf_state(ConfState(voters=frozenset({3, 1})))
        == "Voters:[1 3] VotersOutgoing:[] Learners:[] LearnersNext:[] AutoLeave:false"
    )
    rd = Ready(soft_state=SoftState(1, StateRole.LEADER), entries=(e,), must_sync=True)
    assert (
        describe_ready(rd)
        == 'Ready MustSync=true:\nLead:1 State:StateLeader\nEntries:\n1/11 EntryNormal "x"'
    )
