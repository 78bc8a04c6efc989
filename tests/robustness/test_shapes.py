"""The random partition shapes of ``flapping-partitions`` and the loss rule of ``lossy-network``
(pure parts; the scenarios themselves run against real members: ``python -m kvraft.robustness``)."""

from __future__ import annotations

import random

import pytest

from kvraft.robustness.netfault import NetFaults
from kvraft.robustness.scenarios import SCENARIOS
from kvraft.robustness.shapes import SYMMETRIC_SHAPES, random_shape

NAMES = ["m0", "m1", "m2", "m3", "m4"]


def _reach(links: list[tuple[str, str]]) -> dict[str, set[str]]:
    cut = set(links)
    return {a: {b for b in NAMES if b != a and (a, b) not in cut} for a in NAMES}


def test_the_same_seed_gives_the_same_shapes() -> None:
    first = [random_shape(random.Random(7), NAMES) for _ in range(20)]
    again = [random_shape(random.Random(7), NAMES) for _ in range(20)]
    assert first == again


def test_every_shape_cuts_only_links_between_distinct_members() -> None:
    rng = random.Random(1)
    kinds = set()
    for _ in range(400):
        what, links = random_shape(rng, NAMES)
        kinds.add(what.split()[0])
        assert all(a != b and a in NAMES and b in NAMES for a, b in links)
        assert len(set(links)) == len(links)
    assert kinds == {"halves", "isolate", "bridge", "random-links"}


def test_symmetric_shapes_cut_both_ways_and_keep_a_majority_side() -> None:
    rng = random.Random(3)
    seen = 0
    for _ in range(200):
        what, links = random_shape(rng, NAMES)
        if what.startswith("random-links"):
            continue
        seen += 1
        assert {(b, a) for a, b in links} == set(links), what
        reach = _reach(links)
        # some member reaches a majority (itself and at least two others of five)
        assert max(len(r) for r in reach.values()) >= 2, what
        if what.startswith("bridge"):
            bridge = what.split()[-1]
            assert reach[bridge] == set(NAMES) - {bridge}, what
            assert all(len(reach[m]) < 4 for m in NAMES if m != bridge), what
        if what.startswith("isolate"):
            alone = [m for m in NAMES if not reach[m]]
            assert len(alone) == 1, what
    assert seen > 100


def test_a_loss_probability_outside_0_1_is_refused() -> None:
    net = NetFaults.__new__(NetFaults)  # no iptables needed to refuse the argument
    net.members = {"m0": (1, 2380), "m1": (2, 2381)}
    net.losses = {}
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="loss probability"):
            net.lossy(bad)


def test_the_new_scenarios_are_registered_and_need_the_network() -> None:
    assert SCENARIOS["lossy-network"].needs_net and SCENARIOS["lossy-network"].members == 3
    assert SCENARIOS["flapping-partitions"].needs_net and SCENARIOS["flapping-partitions"].members == 5
    assert SCENARIOS["lossy-clients"].needs_net and SCENARIOS["lossy-clients"].members == 3


def test_only_the_kinds_asked_for() -> None:
    rng = random.Random(5)
    shapes = [random_shape(rng, NAMES, SYMMETRIC_SHAPES)[0].split()[0] for _ in range(100)]
    assert set(shapes) == {"halves", "isolate", "bridge"}
