"""The Elle-style list-append checker: hand-made anomalies, valid histories, random serial ones."""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kvraft.testing.elle import Anomaly, Mop, Txn, check, problems, txn_from_dict, txn_to_dict

MopSpec = tuple[str, str, int | list[int] | None]


def txn(
    i: int, call: float, ret: float | None, *mops: MopSpec, status: str = "ok", client: int = -1
) -> Txn:
    out = []
    for f, key, v in mops:
        if f == "a":
            assert isinstance(v, int)
            out.append(Mop("append", key, v))
        else:
            out.append(Mop("r", key, None if v is None or isinstance(v, int) else tuple(v)))
    return Txn(i, i if client < 0 else client, call, ret, status, tuple(out))


def types(found: list[Anomaly]) -> list[str]:
    return [a.type for a in found]


# --- valid histories --------------------------------------------------------------------------


def test_serial_history_passes() -> None:
    h = [
        txn(1, 0, 1, ("a", "x", 1), ("a", "y", 2)),
        txn(2, 2, 3, ("r", "x", [1]), ("a", "x", 3), ("r", "x", [1, 3])),
        txn(3, 4, 5, ("r", "x", [1, 3]), ("r", "y", [2]), ("r", "z", [])),
    ]
    assert check(h, {"x": [1, 3], "y": [2], "z": []}) == []
    assert problems(h) == []


def test_concurrent_history_passes() -> None:
    # Serial order T2, T1, T3, every pair overlapping in time.
    h = [
        txn(1, 0, 10, ("a", "x", 1)),
        txn(2, 1, 5, ("r", "x", []), ("a", "y", 2)),
        txn(3, 2, 8, ("r", "x", [1]), ("r", "y", [2])),
    ]
    assert check(h, {"x": [1], "y": [2]}) == []


def test_unseen_info_appends_pass() -> None:
    h = [
        txn(1, 0, None, ("a", "x", 5), ("r", "y", None), status="info"),
        txn(2, 1, 2, ("r", "x", [])),
        txn(3, 3, 4, ("r", "x", []), ("a", "y", 6)),
        txn(4, 5, 6, ("a", "x", 7), status="fail"),
    ]
    assert check(h, {"x": [], "y": [6]}) == []


def test_seen_info_append_is_committed() -> None:
    info = txn(1, 0, None, ("a", "x", 1), ("a", "y", 2), status="info")
    good = [info, txn(2, 1, 2, ("r", "x", [1]), ("r", "y", [2]))]
    assert check(good, {"x": [1], "y": [2]}) == []
    # T2 saw T1's append to x but not to y: T1 committed, so that is read skew.
    bad = [info, txn(2, 1, 2, ("r", "x", [1]), ("r", "y", []))]
    (a,) = check(bad, {"x": [1], "y": [2]})
    assert a.type == "G-single" and set(a.txns) == {1, 2}
    assert "T1 (client 1, info)" in a.text


# --- element anomalies ------------------------------------------------------------------------


def test_incompatible_order() -> None:
    h = [
        txn(1, 0, 1, ("a", "x", 1)),
        txn(2, 0, 1, ("a", "x", 2)),
        txn(3, 2, 3, ("r", "x", [1, 2])),
        txn(4, 2, 3, ("r", "x", [2, 1])),
    ]
    (a,) = check(h)
    assert a.type == "incompatible-order" and set(a.txns) == {3, 4}
    assert "key x" in a.text and "[1, 2]" in a.text and "[2, 1]" in a.text


def test_incompatible_order_abbreviates_long_lists() -> None:
    long = list(range(1, 41))
    h = [txn(i, 0, 1, ("a", "x", i)) for i in long]
    h += [txn(50, 2, 3, ("r", "x", long)), txn(51, 2, 3, ("r", "x", [*long[:20], 40, 21]))]
    (a,) = check(h)
    assert a.type == "incompatible-order" and "position 20" in a.text
    assert "..., 18, 19, 20, 21, 22" in a.text and "(40 elements)" in a.text


def test_duplicate_elements() -> None:
    h = [txn(1, 0, 1, ("a", "x", 1)), txn(2, 2, 3, ("r", "x", [1, 1]))]
    assert types(check(h)) == ["duplicate-elements"]


def test_garbage_read() -> None:
    h = [txn(1, 0, 1, ("a", "x", 1)), txn(2, 2, 3, ("r", "x", [1, 9]))]
    (a,) = check(h)
    assert a.type == "garbage-read" and a.txns == (2,) and "9" in a.text


def test_aborted_read() -> None:
    h = [txn(1, 0, 1, ("a", "x", 1), status="fail"), txn(2, 2, 3, ("r", "x", [1]))]
    (a,) = check(h)
    assert a.type == "G1a" and a.txns == (2, 1) and "failed" in a.text


def test_intermediate_read() -> None:
    h = [txn(1, 0, 1, ("a", "x", 1), ("a", "x", 2)), txn(2, 2, 3, ("r", "x", [1]))]
    (a,) = check(h)
    assert a.type == "G1b" and a.txns == (2, 1) and "its last to x was 2" in a.text


def test_internal() -> None:
    own = [txn(1, 0, 1, ("a", "x", 1), ("r", "x", []))]
    changed = [txn(1, 0, 1, ("a", "x", 7)), txn(2, 0, 2, ("r", "x", []), ("r", "x", [7]))]
    future = [txn(1, 0, 1, ("r", "x", [3]), ("a", "x", 3))]
    for h in (own, changed, future):
        assert types(check(h)) == ["internal"], h


def test_lost_append() -> None:
    h = [txn(1, 0, 1, ("a", "x", 1)), txn(2, 2, 3, ("a", "x", 2))]
    (a,) = check(h, {"x": [2]})
    assert a.type == "lost-append" and a.txns == (1,)


# --- dependency cycles ------------------------------------------------------------------------


def test_g0_write_cycle() -> None:
    h = [
        txn(1, 0, 10, ("a", "x", 1), ("a", "y", 2)),
        txn(2, 0, 10, ("a", "x", 3), ("a", "y", 4)),
        txn(3, 11, 12, ("r", "x", [1, 3]), ("r", "y", [4, 2])),
    ]
    (a,) = check(h)
    assert a.type == "G0" and set(a.txns) == {1, 2}
    assert "-ww x->" in a.text and "-ww y->" in a.text


def test_g1c_circular_information_flow() -> None:
    h = [
        txn(1, 0, 10, ("a", "x", 1), ("r", "y", [2])),
        txn(2, 0, 10, ("a", "y", 2), ("r", "x", [1])),
    ]
    assert types(check(h)) == ["G1c"]


def test_g_single_read_skew() -> None:
    h = [
        txn(1, 0, 10, ("a", "x", 1), ("a", "y", 2), client=7),
        txn(2, 0, 10, ("r", "x", []), ("r", "y", [2]), client=3),
    ]
    (a,) = check(h, {"x": [1], "y": [2]})
    assert a.type == "G-single"
    assert "T2 (client 3) -rw x-> T1 (client 7) -wr y-> T2" in a.text


def test_g_single_lost_update() -> None:
    h = [
        txn(1, 0, 10, ("r", "x", []), ("a", "x", 1)),
        txn(2, 0, 10, ("r", "x", []), ("a", "x", 2)),
        txn(3, 11, 12, ("r", "x", [1, 2])),
    ]
    (a,) = check(h)
    assert a.type == "G-single" and set(a.txns) == {1, 2}


def test_g2_write_skew() -> None:
    h = [
        txn(1, 0, 10, ("r", "x", []), ("r", "y", []), ("a", "x", 1)),
        txn(2, 0, 10, ("r", "x", []), ("r", "y", []), ("a", "y", 2)),
    ]
    (a,) = check(h, {"x": [1], "y": [2]})
    assert a.type == "G2" and "-rw x->" in a.text and "-rw y->" in a.text


def test_realtime_only_violation() -> None:
    h = [
        txn(1, 0, 1, ("a", "x", 1)),
        txn(2, 2, 3, ("r", "x", [])),  # began after T1 returned, missed its append
        txn(3, 4, 5, ("r", "x", [1])),
    ]
    (a,) = check(h)
    assert a.type == "G-single-realtime" and set(a.txns) == {1, 2}
    assert "T1 (client 1) -rt-> T2 (client 2) -rw x-> T1" in a.text
    assert check(h, realtime=False) == []  # serializable: T2, T1, T3


def test_realtime_edges_are_transitive() -> None:
    # T1 -rt-> T3 is only implied through T2 by the reduction.
    h = [
        txn(1, 0, 1, ("a", "x", 1)),
        txn(2, 2, 3, ("a", "y", 5)),
        txn(3, 4, 5, ("r", "x", [])),
    ]
    (a,) = check(h, {"x": [1], "y": [5]})
    assert a.type == "G-single-realtime" and set(a.txns) == {1, 2, 3}


def test_cycle_without_realtime_edges_is_preferred() -> None:
    # A lost update between txns also ordered in real time: one G-single, no -realtime twin.
    h = [
        txn(1, 0, 1, ("r", "x", []), ("a", "x", 1)),
        txn(2, 2, 3, ("r", "x", []), ("a", "x", 2)),
        txn(3, 4, 5, ("r", "x", [1, 2])),
    ]
    assert types(check(h)) == ["G-single"]


# --- helpers ----------------------------------------------------------------------------------


def test_json_round_trip() -> None:
    for t in (
        txn(1, 0.5, 1.5, ("a", "x", 1), ("r", "x", [1]), ("r", "y", [])),
        txn(2, 2.0, None, ("a", "x", 2), ("r", "y", None), status="info"),
    ):
        assert txn_from_dict(json.loads(json.dumps(txn_to_dict(t)))) == t
    assert txn_to_dict(txn(3, 0, 1, ("r", "x", [4])))["mops"] == [["r", "x", [4]]]


def test_problems_are_capped() -> None:
    h = [txn(i, 0, 1, ("r", f"k{i}", [i])) for i in range(60)]
    out = problems(h)
    assert len(out) == 51 and out[0].startswith("garbage-read: on key k0")
    assert out[-1] == "... and 10 more (10 garbage-read); 60 anomalies in all"


# --- random serial executions -----------------------------------------------------------------

# One txn: its micro-ops (append?, key index), its fate (0: info, applied; 1: info, not
# applied; 2: fail; else ok), and how far its call and return lie from its commit point.
Spec = tuple[list[tuple[bool, int]], int, float, float]


def simulate(specs: list[Spec], nkeys: int) -> tuple[list[Txn], dict[str, list[int]]]:
    """A serial database: txn i commits at time i, inside its [call, ret]."""
    db: dict[str, list[int]] = {f"k{i}": [] for i in range(nkeys)}
    txns, elem = [], 0
    for i, (ops, fate, before, after) in enumerate(specs):
        status = "info" if fate < 2 else "fail" if fate == 2 else "ok"
        staged: dict[str, list[int]] = {}
        mops = []
        for append, ki in ops:
            k = f"k{ki % nkeys}"
            if append:
                elem += 1
                staged.setdefault(k, []).append(elem)
                mops.append(Mop("append", k, elem))
            else:
                seen = (*db[k], *staged.get(k, ())) if status == "ok" else None
                mops.append(Mop("r", k, seen))
        if status == "ok" or fate == 0:
            for k, es in staged.items():
                db[k].extend(es)
        ret = None if status == "info" else i + after
        txns.append(Txn(i, i % 7, i - before, ret, status, tuple(mops)))
    return txns, db


mop_specs = st.lists(st.tuples(st.booleans(), st.integers(0, 4)), min_size=1, max_size=4)
gap = st.floats(0, 3)
txn_specs = st.tuples(mop_specs, st.integers(0, 9), gap, gap)


@st.composite
def histories(draw: st.DrawFn, min_size: int = 0) -> tuple[list[Txn], dict[str, list[int]]]:
    nkeys = draw(st.integers(1, 5))
    return simulate(draw(st.lists(txn_specs, min_size=min_size, max_size=30)), nkeys)


@given(histories())
def test_serial_executions_pass(h: tuple[list[Txn], dict[str, list[int]]]) -> None:
    txns, final = h
    assert check(txns, final) == []
    assert check(txns) == []


def mutate(txns: list[Txn], t: Txn, j: int, value: tuple[int, ...]) -> list[Txn]:
    mops = list(t.mops)
    mops[j] = replace(mops[j], value=value)
    return [replace(t, mops=tuple(mops)) if u is t else u for u in txns]


@settings(max_examples=150)
@given(histories(min_size=6), st.data())
def test_dropping_a_reads_last_element_is_caught(
    h: tuple[list[Txn], dict[str, list[int]]], data: st.DataObject
) -> None:
    txns, final = h
    writer = {(m.key, m.value): t for t in txns for m in t.mops if m.f == "append"}
    cands = []  # reads whose last element was appended by the reader or returned before it
    for t in txns:
        for j, m in enumerate(t.mops):
            if m.f == "r" and isinstance(m.value, tuple) and m.value:
                w = writer[(m.key, m.value[-1])]
                if w is t or (w.status == "ok" and w.ret is not None and w.ret < t.call):
                    cands.append((t, j, m.value[:-1]))
    assume(cands)
    t, j, value = data.draw(st.sampled_from(cands))
    found = check(mutate(txns, t, j, value), final)
    assert any(t.id in a.txns for a in found), found


@given(histories(min_size=2), st.data())
def test_swapping_two_read_elements_is_caught(
    h: tuple[list[Txn], dict[str, list[int]]], data: st.DataObject
) -> None:
    txns, final = h
    cands = [
        (t, j, m.value)
        for t in txns
        for j, m in enumerate(t.mops)
        if m.f == "r" and isinstance(m.value, tuple) and len(m.value) >= 2
    ]
    assume(cands)
    t, j, value = data.draw(st.sampled_from(cands))
    a = data.draw(st.integers(0, len(value) - 2))
    b = data.draw(st.integers(a + 1, len(value) - 1))
    swapped = list(value)
    swapped[a], swapped[b] = swapped[b], swapped[a]
    found = check(mutate(txns, t, j, tuple(swapped)), final)
    assert "incompatible-order" in types(found) or "internal" in types(found), found


def test_ten_thousand_txns() -> None:
    rng = random.Random(20240607)
    specs: list[Spec] = [
        (
            [(rng.random() < 0.5, rng.randrange(5)) for _ in range(rng.randint(1, 4))],
            rng.randrange(10),
            rng.uniform(0, 3),
            rng.uniform(0, 3),
        )
        for _ in range(10_000)
    ]
    txns, final = simulate(specs, 5)
    start = time.perf_counter()
    found = check(txns, final)
    elapsed = time.perf_counter() - start
    print(f"elle: checked {len(txns)} txns in {elapsed:.2f} s")
    assert found == []
