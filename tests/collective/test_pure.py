"""PURE modules: ring schedules, hierarchy and the fusion plan."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.collective.fusion import FusionPolicy, TensorSpec, plan, policy_for
from agent.collective.probe import link_threshold, probe_links
from agent.collective.schedule import (
    chain_role,
    chunk_bounds,
    hierarchy,
    ring_allgather_steps,
    ring_allreduce_steps,
    segment_bounds,
)


@given(st.integers(0, 10_000), st.integers(1, 64))
def test_chunk_bounds_cover_exactly_and_are_balanced(count: int, parts: int) -> None:
    b = chunk_bounds(count, parts)
    assert len(b) == parts and b[0][0] == 0 and b[-1][1] == count
    assert all(b[i][1] == b[i + 1][0] for i in range(parts - 1))
    sizes = [hi - lo for lo, hi in b]
    assert max(sizes) - min(sizes) <= 1


@given(st.integers(0, 1000), st.integers(0, 1000), st.integers(1, 100))
def test_segments_cover_the_range(lo: int, extra: int, seg: int) -> None:
    segs = segment_bounds(lo, lo + extra, seg)
    assert segs[0][0] == lo and segs[-1][1] == lo + extra
    assert all(hi - lo_ <= seg for lo_, hi in segs)


def simulate_ring_allreduce(values: list[list[int]]) -> list[list[int]]:
    """Walk the schedule with one chunk per list element and exact integer sums."""
    n = len(values)
    data = [list(v) for v in values]
    steps = [ring_allreduce_steps(r, n) for r in range(n)]
    for s in range(2 * (n - 1)):
        sent = [data[r][steps[r][s].send_chunk] for r in range(n)]
        for r in range(n):
            step = steps[r][s]
            incoming = sent[(r - 1) % n]
            # the left neighbour sends exactly the chunk we expect to receive
            assert steps[(r - 1) % n][s].send_chunk == step.recv_chunk
            if step.phase == "reduce-scatter":
                data[r][step.recv_chunk] += incoming
            else:
                data[r][step.recv_chunk] = incoming
    return data


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8])
def test_ring_schedule_sums_every_chunk_on_every_rank(n: int) -> None:
    rng = np.random.default_rng(n)
    values = [[int(x) for x in rng.integers(0, 1000, n)] for _ in range(n)]
    out = simulate_ring_allreduce(values)
    want = [sum(v[c] for v in values) for c in range(n)]
    assert all(row == want for row in out)


def test_ring_allreduce_steps_worked_example() -> None:
    steps = [(s.phase, s.send_chunk, s.recv_chunk) for s in ring_allreduce_steps(0, 3)]
    assert steps == [
        ("reduce-scatter", 0, 2),
        ("reduce-scatter", 2, 1),
        ("allgather", 1, 0),
        ("allgather", 0, 2),
    ]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_allgather_steps_deliver_every_block(n: int) -> None:
    have = [{r} for r in range(n)]
    for s in range(n - 1):
        steps = [ring_allgather_steps(r, n)[s] for r in range(n)]
        for r in range(n):
            assert steps[(r - 1) % n].send_chunk in have[(r - 1) % n]
            have[r].add(steps[(r - 1) % n].send_chunk)
            assert steps[r].recv_chunk == steps[(r - 1) % n].send_chunk
    assert all(h == set(range(n)) for h in have)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("root", [0, 1, 3])
def test_chains_visit_every_rank_once(n: int, root: int) -> None:
    root %= n
    for kind in ("reduce", "broadcast"):
        roles = [chain_role(r, n, root, kind) for r in range(n)]
        if n == 1:
            assert roles == [(False, False)]
            continue
        # a link r -> r+1 is used iff r sends and r+1 receives
        for r in range(n):
            assert roles[r][1] == roles[(r + 1) % n][0]
        senders = sum(1 for _, s in roles if s)
        assert senders == n - 1
        if kind == "reduce":
            assert roles[root] == (True, False)
        else:
            assert roles[root] == (False, True)


def test_hierarchy_from_placement() -> None:
    h = hierarchy(["a", "a", "b", "b", "b", "c"])
    assert h.nodes == ("a", "b", "c")
    assert h.node_index == (0, 0, 1, 1, 1, 2)
    assert h.local_rank == (0, 1, 0, 1, 2, 0)
    assert h.local_size == (2, 2, 3, 3, 3, 1)
    assert h.leaders == (0, 2, 5)
    assert h.useful
    assert not hierarchy(["a", "a"]).useful
    assert not hierarchy(["a", "b", "c"]).useful


def spec(count: int, dtype: str = "<f4", inplace: bool = True, wire: str | None = None) -> TensorSpec:
    size = np.dtype(dtype).itemsize
    return TensorSpec(count, dtype, dtype, wire or dtype, size, inplace)


specs_strategy = st.lists(
    st.builds(
        spec,
        st.integers(0, 5000),
        st.sampled_from(["<f4", "<f8", "<i4"]),
        st.booleans(),
    ),
    max_size=40,
)


@settings(max_examples=200)
@given(specs_strategy, st.integers(0, 8000), st.integers(1, 20000))
def test_plan_covers_every_tensor_once_and_respects_the_policy(specs: list[TensorSpec], inplace_min: int, bucket: int) -> None:
    policy = FusionPolicy(inplace_min, bucket)
    buckets = plan(specs, policy)
    seen = sorted(e.tensor for b in buckets for e in b.entries)
    assert seen == [i for i, s in enumerate(specs) if s.count > 0]
    for b in buckets:
        assert all(specs[e.tensor].acc_dtype == b.acc_dtype for e in b.entries)
        if b.inplace:
            assert len(b.entries) == 1 and specs[b.entries[0].tensor].inplace_ok
        else:
            # packed entries are laid out back to back
            off = 0
            for e in b.entries:
                assert e.offset == off and e.count == specs[e.tensor].count
                off += e.count
            assert off == b.count
            if len(b.entries) > 1:
                assert b.count * np.dtype(b.acc_dtype).itemsize <= bucket
    firsts = [min(e.tensor for e in b.entries) for b in buckets]
    assert firsts == sorted(firsts)  # deterministic order, the same on every rank


def test_plan_worked_example() -> None:
    policy = FusionPolicy(inplace_min_bytes=256 << 10, bucket_bytes=1 << 20)
    buckets = plan([spec(1024), spec(1 << 18), spec(2048)], policy)
    assert [(b.inplace, [e.tensor for e in b.entries]) for b in buckets] == [(False, [0, 2]), (True, [1])]


def test_compressed_tensors_do_not_share_a_bucket_with_plain_ones() -> None:
    policy = FusionPolicy(1 << 30, 1 << 30)
    buckets = plan([spec(10), spec(10, wire="<f2"), spec(10)], policy)
    assert sorted(len(b.entries) for b in buckets) == [1, 2]


def test_policy_follows_latency_and_bandwidth() -> None:
    shm = policy_for(3e-6, 3e9)
    tcp = policy_for(300e-6, 1.8e9)
    assert shm.inplace_min_bytes < tcp.inplace_min_bytes
    assert tcp.bucket_bytes > shm.bucket_bytes


# -- data path per call size (probe.link_threshold) ----------------------------------------------
def test_link_threshold_is_the_first_size_from_which_attach_always_won() -> None:
    sizes = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20]
    # the quiet baseline's shape: sockets ahead up to 1 MiB, the attach link from 4 MiB
    assert link_threshold(sizes, [55, 80, 540, 2600, 10800], [73, 96, 860, 1900, 4400]) == 4 << 20
    # a win below a loss does not count: the crossover must hold for every larger size
    assert link_threshold(sizes, [55, 80, 540, 2600, 10800], [50, 96, 600, 1900, 4400]) == 4 << 20
    assert link_threshold(sizes, [9, 9, 9, 9, 9], [1, 1, 1, 1, 1]) == 64 << 10
    # lost (or tied) at the largest size: never attach
    assert link_threshold(sizes, [9, 9, 9, 9, 9], [1, 1, 1, 1, 9]) is None
    assert link_threshold([], [], []) is None
    with pytest.raises(ValueError, match="ascending"):
        link_threshold([2, 1], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="one time"):
        link_threshold([1, 2], [1], [1, 1])


@given(st.lists(st.tuples(st.floats(0.1, 10), st.floats(0.1, 10)), min_size=1, max_size=8))
def test_link_threshold_never_picks_attach_where_it_measured_slower(times: list[tuple[float, float]]) -> None:
    sizes = [1 << (10 + i) for i in range(len(times))]
    t = link_threshold(sizes, [s for s, _ in times], [a for _, a in times])
    for size, (ts, ta) in zip(sizes, times, strict=True):
        if t is not None and size >= t:
            assert ta < ts
    if t is not None:  # and it is the smallest such suffix
        i = sizes.index(t)
        assert i == 0 or not times[i - 1][1] < times[i - 1][0]


def test_probe_links_alternates_kinds_keeps_the_best_and_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes, cost = [4096, 65536], {"socket": 2.0, "attach": 1.0}  # seconds per KiB (fake clock)
    calls: list[tuple[str, int]] = []
    clock = [0.0]

    def run(kind: str, buf: np.ndarray) -> None:
        rep = sum(1 for k, n in calls if (k, n) == (kind, buf.nbytes))
        calls.append((kind, buf.nbytes))
        # warm-up (rep 0) slow, then rep 1 the best, reps 2 and 3 a little slower
        clock[0] += cost[kind] * buf.nbytes / 1024 + (5.0 if rep == 0 else abs(rep - 1) * 0.5)

    agreed: list[np.ndarray] = []

    def agree(a: np.ndarray) -> None:
        a *= 2  # a 2-rank sum of identical times
        agreed.append(a)

    monkeypatch.setattr(time, "process_time", lambda: clock[0])
    got = probe_links(run, agree, sizes, reps=3)
    assert [k for k, _ in calls[:4]] == ["socket", "attach", "attach", "socket"]  # alternating
    assert len(calls) == 2 * 4 * len(sizes) and {n for _, n in calls} == set(sizes)
    assert got.socket_s == (2 * 2.0 * 4, 2 * 2.0 * 64)  # best timed rep; warm-up ignored
    assert got.attach_s == (2 * 1.0 * 4, 2 * 1.0 * 64)
    assert got.threshold == 4096 and len(agreed) == 1 and got.sizes == (4096, 65536)
