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
