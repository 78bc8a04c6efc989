from hypothesis import given, settings
from hypothesis import strategies as st

from kvraft.watch import IntervalIndex

keys = st.binary(min_size=0, max_size=3)


def test_worked_example() -> None:
    idx: IntervalIndex[str] = IntervalIndex()
    idx.add(b"a", b"c", "a")
    idx.add(b"b", None, "b")
    idx.add(b"x", b"y", "c")
    assert sorted(idx.stab(b"a")) == ["a"]
    assert sorted(idx.stab(b"b")) == ["a", "b"]
    assert sorted(idx.stab(b"c")) == ["b"]
    assert sorted(idx.stab(b"x")) == ["b", "c"]
    assert sorted(idx.stab(b"y")) == ["b"]
    idx.remove("b")
    assert idx.stab(b"y") == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(keys, st.one_of(st.none(), keys)), max_size=40),
    st.lists(keys, max_size=20),
    st.data(),
)
def test_matches_naive_scan(ranges, probes, data) -> None:
    idx: IntervalIndex[int] = IntervalIndex()
    live = {}
    for i, (start, end) in enumerate(ranges):
        if end is not None and end <= start:
            continue
        idx.add(start, end, i)
        live[i] = (start, end)
    removals = data.draw(st.lists(st.sampled_from(sorted(live)), max_size=5)) if live else []
    for i in removals:
        idx.remove(i)
        live.pop(i, None)
    for k in probes:
        want = {i for i, (s, e) in live.items() if s <= k and (e is None or k < e)}
        assert set(idx.stab(k)) == want
        assert len(idx.stab(k)) == len(want)


def test_interleaved_adds_removes_and_readds_match_a_naive_scan() -> None:
    """Many more ops than the side tables hold, so answers mix the tree, the ranges added
    since its rebuild and the values removed since (re-adding a value with another range
    included)."""
    import random

    rng = random.Random(15)
    pool = [bytes([a]) + bytes([b]) for a in range(97, 107) for b in range(97, 107)]
    idx: IntervalIndex[int] = IntervalIndex()
    live: dict[int, tuple[bytes, bytes | None]] = {}
    rebuilds = 0
    for step in range(6000):
        op = rng.random()
        value = rng.randrange(400)
        if op < 0.45:
            start = rng.choice(pool)
            end = None if rng.random() < 0.1 else start + b"\xff" * rng.randrange(1, 3)
            idx.add(start, end, value)
            live[value] = (start, end)
        elif op < 0.75:
            idx.remove(value)
            live.pop(value, None)
        else:
            was_dirty = idx._dirty
            key = rng.choice(pool) + rng.choice([b"", b"a", b"\xff\xff"])
            got = idx.stab(key)
            want = {i for i, (s, e) in live.items() if s <= key and (e is None or key < e)}
            assert set(got) == want, (step, key)
            assert len(got) == len(want), (step, key)
            rebuilds += was_dirty
        assert len(idx) == len(live)
    assert 3 < rebuilds < 300  # the tree is rebuilt now and then, not on every change
