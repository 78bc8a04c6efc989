"""ManualClock, SimNetwork and buggify."""

from __future__ import annotations

import random

import pytest

from kvraft.testing import buggify as bug
from kvraft.testing.clock import ManualClock
from kvraft.testing.simnet import NetFaults, SimNetwork


def test_manual_clock() -> None:
    c = ManualClock()
    assert c.now_us == 0 and c.monotonic() == 0.0
    c.advance(0.25)
    assert c.now_us == 250_000 and c.monotonic() == 0.25
    c.advance_us(5)
    c.set_us(300_000)
    assert c.now_us == 300_000
    with pytest.raises(ValueError):
        c.set_us(1)
    with pytest.raises(ValueError):
        c.advance_us(-1)


def _drain(net: SimNetwork) -> list[tuple[int, int, object]]:
    out = []
    while (t := net.next_delivery_us()) is not None:
        out.extend(net.deliver_due(t))
    return out


def test_delivery_order_is_by_time_then_send_order() -> None:
    net = SimNetwork(random.Random(1), NetFaults(delay_min_us=10, delay_max_us=10))
    for i in range(5):
        net.send(1, 2, i, now_us=0)
    net.send(2, 1, "early", now_us=-5)
    assert [p for _s, _d, p in _drain(net)] == ["early", 0, 1, 2, 3, 4]


def test_same_seed_same_fates() -> None:
    faults = NetFaults(drop_p=0.2, dup_p=0.2, delay_min_us=1, delay_max_us=1000, reorder_p=0.3)

    def run(seed: int) -> list[tuple[int, int, object]]:
        net = SimNetwork(random.Random(seed), faults)
        for i in range(200):
            net.send(i % 3 + 1, (i + 1) % 3 + 1, i, now_us=i * 10)
        return _drain(net)

    a, b, c = run(7), run(7), run(8)
    assert a == b
    assert a != c
    payloads = [p for _s, _d, p in a]
    assert len(payloads) != 200  # some dropped or duplicated
    assert payloads != sorted(payloads)  # some reordered


def test_drop_duplicate_probabilities() -> None:
    net = SimNetwork(random.Random(3), NetFaults(drop_p=0.5, dup_p=0.5))
    for i in range(1000):
        net.send(1, 2, i, 0)
    assert 400 < net.stats.dropped < 600
    assert 150 < net.stats.duplicated < 350
    assert net.in_flight() == 1000 - net.stats.dropped + net.stats.duplicated


def test_cut_is_one_directional() -> None:
    net = SimNetwork(random.Random(0))
    net.cut(1, 2)
    assert not net.connected(1, 2)
    assert net.connected(2, 1)
    assert net.send(1, 2, "x", 0) == 0
    assert net.send(2, 1, "y", 0) == 1
    assert [p for *_x, p in _drain(net)] == ["y"]
    assert net.stats.blocked == 1
    net.heal()
    assert net.connected(1, 2) and net.is_healed()


def test_isolate_partition_and_partial() -> None:
    net = SimNetwork(random.Random(0))
    net.isolate(3)
    assert not net.connected(3, 1) and not net.connected(1, 3) and net.connected(1, 2)
    net.heal()
    net.partition([{1, 2}, {3, 4, 5}])
    assert net.connected(1, 2) and net.connected(4, 5)
    assert not net.connected(1, 3) and not net.connected(5, 2)
    assert not net.connected(1, 9) and not net.connected(9, 3)  # unnamed nodes: their own group
    assert "groups=1,2|3,4,5" in net.describe()
    net.heal()
    net.reach_only(4, [1])  # node 4 reaches only node 1
    assert net.connected(4, 1) and net.connected(1, 4)
    assert not net.connected(4, 2) and not net.connected(3, 4)
    assert net.connected(2, 3)
    with pytest.raises(ValueError):
        net.partition([{1}, {1, 2}])


def test_messages_in_flight_across_a_new_partition_are_lost() -> None:
    net = SimNetwork(random.Random(0), NetFaults(delay_min_us=100, delay_max_us=100))
    net.send(1, 2, "a", 0)
    net.send(2, 3, "b", 0)
    net.isolate(2)
    assert _drain(net) == []
    assert net.stats.blocked == 2


def test_drop_all_to() -> None:
    net = SimNetwork(random.Random(0))
    for i in range(4):
        net.send(1, 2 + i % 2, i, 0)
    assert net.drop_all_to(2) == 2
    assert sorted(p for *_x, p in _drain(net)) == [1, 3]


def test_netfaults_validate() -> None:
    with pytest.raises(ValueError):
        NetFaults(drop_p=1.5)
    with pytest.raises(ValueError):
        NetFaults(delay_min_us=10, delay_max_us=5)


def test_buggify_is_a_no_op_unless_activated() -> None:
    assert not bug.is_active()
    assert not any(bug.buggify("site") for _ in range(1000))


def test_buggify_is_seeded_and_per_site() -> None:
    def run(seed: int) -> list[tuple[str, bool]]:
        with bug.activated(random.Random(seed), site_p=0.5, fire_p=0.5):
            return [(s, bug.buggify(s)) for s in ["a", "b", "c", "d"] * 50]

    assert run(1) == run(1)
    assert not bug.is_active()
    fired_sites = {s for s, f in run(1) if f}
    with bug.activated(random.Random(1), site_p=0.5, fire_p=0.5) as st:
        for s in ["a", "b", "c", "d"] * 50:
            bug.buggify(s)
    assert fired_sites == {s for s, on in st.sites.items() if on} == set(st.fired)
    with bug.activated(random.Random(2), site_p=1.0, fire_p=1.0):
        assert bug.buggify("x")
        assert not bug.buggify("x", fire_p=0.0)
