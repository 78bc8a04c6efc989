"""Inflights against a naive list (Hypothesis) and Progress state transitions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvraft.raft.progress import Inflights, Progress, ProgressState

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 5)),
        st.tuples(st.just("free_le"), st.integers(0, 200)),
        st.tuples(st.just("free_first"), st.just(0)),
        st.tuples(st.just("reset"), st.just(0)),
    ),
    max_size=60,
)


@given(st.integers(1, 8), ops)
def test_inflights_match_naive_list(capacity: int, operations: list[tuple[str, int]]) -> None:
    ring = Inflights(capacity)
    naive: list[int] = []
    last = 0
    for op, arg in operations:
        if op == "add":
            if len(naive) >= capacity:
                assert ring.full()
                continue
            last += arg
            ring.add(last)
            naive.append(last)
        elif op == "free_le":
            ring.free_le(arg)
            naive = [i for i in naive if i > arg]
        elif op == "free_first":
            ring.free_first_one()
            naive = naive[1:]
        else:
            ring.reset()
            naive = []
        assert ring.items() == naive
        assert ring.count() == len(naive)
        assert ring.full() == (len(naive) >= capacity)


def test_inflights_refuse_misuse() -> None:
    with pytest.raises(ValueError):
        Inflights(0)
    ring = Inflights(1)
    ring.add(5)
    with pytest.raises(AssertionError):
        ring.add(6)


def test_probe_sends_one_then_waits() -> None:
    pr = Progress(match=0, next_index=11, max_inflight=4)
    assert pr.state == ProgressState.PROBE and not pr.is_paused()
    pr.sent_entries(3, 13)
    assert pr.is_paused() and pr.next == 11  # probe does not advance next
    assert pr.maybe_update(13)
    pr.become_replicate()
    assert (pr.match, pr.next, pr.is_paused()) == (13, 14, False)


def test_replicate_pipelines_up_to_the_window() -> None:
    pr = Progress(match=10, next_index=11, max_inflight=2)
    pr.become_replicate()
    pr.sent_entries(2, 12)
    pr.sent_entries(3, 15)
    assert pr.next == 16 and pr.is_paused()
    pr.maybe_update(12)
    pr.inflights.free_le(12)
    assert not pr.is_paused() and pr.inflights.items() == [15]


def test_rejections_move_next_back_and_ignore_stale_ones() -> None:
    pr = Progress(match=5, next_index=20, max_inflight=4)
    pr.sent_entries(1, 20)
    assert not pr.maybe_decr_to(rejected=15, match_hint=3)  # not the outstanding probe
    assert pr.maybe_decr_to(rejected=19, match_hint=8)
    assert pr.next == 9 and not pr.probe_sent
    assert pr.maybe_decr_to(rejected=8, match_hint=1)
    assert pr.next == 6  # never below match + 1
    pr.maybe_update(7)
    pr.become_replicate()
    pr.sent_entries(3, 10)
    assert not pr.maybe_decr_to(rejected=6, match_hint=0)  # at or below match: stale
    assert pr.maybe_decr_to(rejected=9, match_hint=0)
    assert pr.next == 8


def test_snapshot_state_pauses_and_resumes_after_it() -> None:
    pr = Progress(match=3, next_index=4, max_inflight=4)
    pr.become_snapshot(50)
    assert pr.is_paused() and pr.pending_snapshot == 50
    pr.become_probe()
    assert pr.state == ProgressState.PROBE and pr.next == 51 and pr.pending_snapshot == 0


def test_maybe_update_is_monotonic() -> None:
    pr = Progress(match=8, next_index=9, max_inflight=4)
    assert not pr.maybe_update(5)
    assert pr.match == 8 and pr.next == 9
