"""The simulated state machine, the seed-derived plan, and the trace formats."""

from __future__ import annotations

from dataclasses import fields

import pytest

from kvraft.raft.types import Entry, EntryType, Message, MessageType
from kvraft.sim.model import Command, KvStateMachine, decode_command, encode_command
from kvraft.sim.plan import SimPlan, derive_rng
from kvraft.sim.trace import Trace, describe_entries, describe_message


def test_commands_round_trip() -> None:
    for cmd in [
        Command("put", 7, "k1", "v7"),
        Command("cas", 8, "k2", "v8", "v3"),
        Command("cas", 9, "k2", "v9", None),
    ]:
        assert decode_command(encode_command(cmd)) == cmd
    assert encode_command(Command("cas", 9, "k", "v9", None)) == b"cas|9|k||v9"
    with pytest.raises(ValueError):
        decode_command(b"get|1|k")


def test_state_machine_and_snapshots() -> None:
    sm = KvStateMachine()
    assert sm.apply(Command("put", 1, "a", "v1")) is None
    assert sm.apply(Command("cas", 2, "a", "v2", "v0")) is False
    assert sm.apply(Command("cas", 3, "a", "v3", "v1")) is True
    assert sm.apply(Command("cas", 4, "b", "v4", None)) is True
    assert sm.get("a") == "v3" and sm.get("b") == "v4" and sm.get("c") is None
    blob = sm.snapshot()
    assert blob == b"a=v3\nb=v4\n"
    twin = KvStateMachine.restore(blob)
    assert twin.data == sm.data and twin.digest() == sm.digest()
    assert KvStateMachine.restore(b"").data == {}


def test_plan_is_derived_from_the_seed() -> None:
    a, b = SimPlan.from_seed(11), SimPlan.from_seed(11)
    assert a == b
    assert any(SimPlan.from_seed(s) != a for s in range(12, 20))
    text = a.describe()
    for f in fields(SimPlan):
        assert (f"{f.name}=" in text) or (f.name == "net" and "net.drop_p=" in text)
    assert SimPlan.from_seed(11, safety_us=123).safety_us == 123
    # named streams are independent and reproducible
    assert derive_rng(1, "x").random() == derive_rng(1, "x").random()
    assert derive_rng(1, "x").random() != derive_rng(1, "y").random()


def test_plans_cover_the_fault_space() -> None:
    plans = [SimPlan.from_seed(s) for s in range(300)]
    assert {p.members for p in plans} == {1, 3, 5}
    for kind in ("partition", "crash", "pause", "churn", "transfer"):
        assert sum(kind in p.faults for p in plans) > 100
    assert any(p.net.drop_p > 0 for p in plans) and any(p.net.dup_p > 0 for p in plans)
    assert any(p.net.reorder_p > 0 for p in plans) and any(p.torn_p > 0 for p in plans)
    assert any(not p.step_while_busy for p in plans) and any(p.snapshot_every for p in plans)


def test_trace_format() -> None:
    tr = Trace(on=True)
    m = Message(
        MessageType.APP,
        to=2,
        from_=1,
        term=3,
        log_term=2,
        index=5,
        commit=4,
        entries=(Entry(3, 6, data=b"x"), Entry(3, 7, EntryType.CONF_CHANGE, b"c")),
    )
    tr.emit(1234, "n1", "send", describe_message(m))
    tr.emit(99, "nem", "crash", "member 2")
    assert tr.lines == [
        "      1234 n1   send      App 1>2 t=3 lt=2 i=5 c=4 e=[6/3,7/3c]",
        "        99 nem  crash     member 2",
    ]
    off = Trace()
    off.emit(1, "n1", "x")
    assert off.lines == []
    many = [Entry(1, i) for i in range(1, 20)]
    assert describe_entries(many) == "[1/1n,2/1n,3/1n,..13..,17/1n,18/1n,19/1n]"


def test_liveness_bound_grows_with_a_longer_safety_phase() -> None:
    """Seed 44180 at --safety-ms 12000 failed "probe not applied on [9]" at 150 ticks: a
    learner added 0.65 s before the heal had 1,817 entries to replay, one 64-byte message
    each, with no snapshot; it was catching up steadily and converged at 166 ticks."""
    assert SimPlan.from_seed(44180).liveness_ticks == 150
    assert SimPlan.from_seed(44180, safety_us=1_000_000).liveness_ticks == 150
    assert SimPlan.from_seed(44180, safety_us=12_000_000).liveness_ticks == 600


@pytest.mark.slow
def test_seed_44180_long_safety_phase_converges() -> None:
    from kvraft.sim.runner import run_seed

    res = run_seed(44180, safety_us=12_000_000)
    assert res.ok, res.message
