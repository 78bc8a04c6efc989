"""The key index, walked through the example of its docstring (and etcd's)."""

from __future__ import annotations

import random

import pytest

from kvraft.storage.mvcc.index import CHUNK, TreeIndex
from kvraft.storage.mvcc.key_index import KeyIndex
from kvraft.storage.revision import (
    Revision,
    bytes_to_rev,
    pack,
    rev_to_bytes,
    unpack,
)


def example() -> KeyIndex:
    ki = KeyIndex(b"foo")
    ki.put(pack(1, 0))
    ki.put(pack(2, 0))
    assert ki.tombstone(pack(3, 0))
    ki.put(pack(4, 0))
    assert ki.tombstone(pack(5, 0))
    return ki


def shape(ki: KeyIndex) -> list[list[int]]:
    return [[unpack(r).main for r in g.revs] for g in ki.generations]


def test_generations_of_the_docstring_example() -> None:
    ki = example()
    assert shape(ki) == [[1, 2, 3], [4, 5], []]
    assert not ki.tombstone(pack(6, 0))  # not alive: no change
    assert ki.get(1) == (pack(1, 0), pack(1, 0), 1)
    assert ki.get(2) == (pack(2, 0), pack(1, 0), 2)
    assert ki.get(3) is None and ki.get(6) is None and ki.get(0) is None
    assert ki.get(4) == (pack(4, 0), pack(4, 0), 1)


def test_compaction_of_the_docstring_example() -> None:
    for at, kept, dropped in [
        (1, [[1, 2, 3], [4, 5], []], []),
        (2, [[2, 3], [4, 5], []], [1]),
        (3, [[3], [4, 5], []], [1, 2]),
        (4, [[4, 5], []], [1, 2, 3]),
        (5, [[5], []], [1, 2, 3, 4]),
        (6, [[]], [1, 2, 3, 4, 5]),
    ]:
        ki = example()
        out: list[tuple[int, bool]] = []
        ki.compact(at, out)
        assert shape(ki) == kept, at
        assert [unpack(r).main for r, _ in out] == dropped, at
        assert [t for r, t in out] == [unpack(r).main in (3, 5) for r, _ in out]
        assert ki.is_empty() == (at == 6)


def test_version_survives_compaction() -> None:
    ki = KeyIndex(b"k")
    for main in range(1, 6):
        ki.put(pack(main, 0))
    ki.compact(4, [])
    assert ki.get(5) == (pack(5, 0), pack(1, 0), 5)
    assert ki.get(4) == (pack(4, 0), pack(1, 0), 4)


def test_truncate_undoes_appends() -> None:
    ki = example()
    before = ki.copy_shape()
    ki.put(pack(6, 0))
    ki.tombstone(pack(7, 0))
    ki.put(pack(8, 0))
    ki.truncate(before)
    assert shape(ki) == [[1, 2, 3], [4, 5], []]
    assert ki.generations[-1].ver == 0


def test_revision_bytes() -> None:
    assert rev_to_bytes(5, 2).hex() == "0000000000000005" + "5f" + "0000000000000002"
    assert rev_to_bytes(7, 0, tombstone=True).hex().endswith("74")
    assert bytes_to_rev(rev_to_bytes(7, 3, True)) == (7, 3, True)
    assert rev_to_bytes(2, 0) < rev_to_bytes(2, 0, True) < rev_to_bytes(2, 1) < rev_to_bytes(3, 0)
    assert unpack(pack(9, 4)) == Revision(9, 4)
    assert pack(1, 1 << 31) < pack(2, 0)


def test_tree_index_ranges_across_chunks() -> None:
    idx = TreeIndex()
    n = CHUNK * 2 + 17
    for i in range(n):
        idx.put(b"k%05d" % i, pack(i + 2, 0))
    idx.tombstone(b"k00003", pack(n + 2, 0))
    hits, total = idx.range(b"k", b"l", n + 2)
    assert total == n - 1 and len(hits) == n - 1
    assert [h[0] for h in hits] == sorted(b"k%05d" % i for i in range(n) if i != 3)
    hits, total = idx.range(b"k", b"", n + 2, limit=5)
    assert (len(hits), total) == (5, n - 1)
    assert idx.count(b"k00010", b"k00020", 5) == 0  # created later
    assert idx.count(b"k00010", b"k00020", n + 2) == 10
    assert idx.range(b"k00003", None, n + 1)[1] == 1
    assert idx.range(b"k00003", None, n + 2)[1] == 0
    assert idx.range(b"z", b"a", n)[1] == 0


@pytest.mark.parametrize("seed", range(20))
def test_put_returning_says_what_get_and_shape_said_before_the_put(seed: int) -> None:
    """``put_returning`` answers from the last generation without searching; it must agree
    with ``get`` at the put's revision and ``shape`` taken just before, whatever history the
    key has (puts, deletes, compactions, a key re-created after leaving the index)."""
    rng = random.Random(seed)
    index = TreeIndex()
    rev = 1
    for _ in range(400):
        key = b"k%d" % rng.randrange(4)
        rev += 1
        roll = rng.random()
        if roll < 0.2:
            index.tombstone(key, pack(rev, 0))
        elif roll < 0.25:
            index.compact(rev - rng.randrange(1, 5))
        else:
            expected = (index.get(key, rev), index.shape(key))
            sub = rng.randrange(3)
            assert index.put_returning(key, pack(rev, sub)) == expected
            created, version = (expected[0][1], expected[0][2] + 1) if expected[0] else (pack(rev, sub), 1)
            assert index.get(key, rev) == (pack(rev, sub), created, version)
            if index._map[key].is_compactable():
                assert key in index.compaction_keys()
