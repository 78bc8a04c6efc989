"""Property test: the LMDB store and the reference model agree on random operation
sequences (puts with every flag, deletes, ranges with every option at past revisions,
txns with all compare kinds and nested txns, compaction, hashes, history, lease revoke,
the NOSPACE alarm), including batches of several revisions per commit, closing and
reopening the store (index rebuild), online defragmentation and restoring the store from
its own snapshot.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from hypo import STORAGE
from hypothesis import given
from hypothesis import strategies as st

from kvraft.storage.mvcc import (
    Compare,
    DeleteRangeRequest,
    MemoryKV,
    MVCCError,
    MVCCStore,
    PutRequest,
    RangeRequest,
    TxnRequest,
)

KEYS = [b"a", b"a\x00", b"ab", b"abc", b"b", b"ba", b"c", b"\x00", b"\xff"]
keys = st.sampled_from(KEYS)
values = st.sampled_from([b"", b"0", b"1", b"x", b"xy", b"\x00"])
leases = st.sampled_from([0, 0, 1, 2])
range_ends = st.one_of(st.just(b""), st.just(b"\x00"), keys, st.sampled_from([b"b", b"abd", b"c\x00"]))
# relative revisions: resolved against the model's revision when the op runs
rel_revs = st.one_of(st.just(("abs", 0)), st.tuples(st.just("back"), st.integers(0, 8)),
                     st.just(("future", 1)))

puts = st.builds(PutRequest, key=keys, value=values, lease=leases, prev_kv=st.booleans())


@st.composite
def put_ops(draw: Any) -> PutRequest:
    p = draw(puts)
    flag = draw(st.sampled_from(["none", "none", "value", "lease", "bad"]))
    if flag == "value":
        return PutRequest(p.key, b"", p.lease, p.prev_kv, ignore_value=True)
    if flag == "lease":
        return PutRequest(p.key, p.value, 0, p.prev_kv, ignore_lease=True)
    if flag == "bad":
        return PutRequest(p.key, b"v", 1, p.prev_kv, ignore_value=True, ignore_lease=True)
    return p


deletes = st.builds(DeleteRangeRequest, key=keys, range_end=range_ends, prev_kv=st.booleans())


@st.composite
def range_ops(draw: Any) -> tuple[str, Any, Any]:
    r = RangeRequest(
        key=draw(keys), range_end=draw(range_ends), limit=draw(st.sampled_from([0, 0, 1, 2, 3])),
        sort_order=draw(st.integers(0, 2)), sort_target=draw(st.integers(0, 4)),
        keys_only=draw(st.booleans()), count_only=draw(st.sampled_from([False, False, False, True])),
        min_mod_revision=draw(st.sampled_from([0, 0, 3, 6])), max_mod_revision=draw(st.sampled_from([0, 0, 5, 9])),
        min_create_revision=draw(st.sampled_from([0, 0, 2, 4])), max_create_revision=draw(st.sampled_from([0, 0, 6])),
    )
    return "range", r, draw(rel_revs)


compares = st.builds(
    Compare, result=st.integers(0, 3), target=st.integers(0, 4), key=keys,
    version=st.integers(0, 3), create_revision=st.integers(0, 8), mod_revision=st.integers(0, 10),
    value=values, lease=leases, range_end=st.one_of(st.just(b""), st.just(b""), range_ends),
)


def txn_ops(depth: int) -> Any:
    ranges = st.builds(lambda t, rev: RangeRequest(**{f: getattr(t[1], f) for f in RangeRequest._fields} | {"revision": rev}),
                       range_ops(), st.sampled_from([0, 0, 0, 1, 3, 40]))
    leaf = st.one_of(put_ops(), deletes, ranges)
    op = leaf if depth == 0 else st.one_of(leaf, leaf, txn_ops(depth - 1))
    return st.builds(
        TxnRequest, compare=st.lists(compares, max_size=2).map(tuple),
        success=st.lists(op, max_size=3).map(tuple), failure=st.lists(op, max_size=3).map(tuple),
    )


no_compact = st.one_of(
    put_ops().map(lambda p: ("req", p)),
    put_ops().map(lambda p: ("req", p)),
    put_ops().map(lambda p: ("req", p)),
    deletes.map(lambda d: ("req", d)),
    range_ops(),
    txn_ops(2).map(lambda t: ("req", t)),
    st.tuples(st.just("hash"), rel_revs),
    st.tuples(st.just("events"), rel_revs),
    st.tuples(st.just("revoke"), leases),
)
compactions = st.tuples(
    st.just("compact"), st.one_of(rel_revs, st.tuples(st.just("back"), st.integers(0, 2))), st.booleans()
)
operations = st.one_of(
    no_compact, no_compact, no_compact, no_compact, no_compact, no_compact, compactions, compactions,
    st.tuples(st.just("batch"), st.lists(no_compact, min_size=1, max_size=5)),
    st.tuples(st.just("alarm"), st.sampled_from([True, False, False])),
    st.sampled_from([("reopen",), ("defrag",), ("snapshot",)]),
)


def resolve(rel: tuple[str, int], model: MemoryKV) -> int:
    kind, n = rel
    if kind == "abs":
        return n
    if kind == "future":
        return model.rev + n
    return max(1, model.rev - n)


def outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except MVCCError as exc:
        return ("error", type(exc).__name__)


def run_one(op: tuple[Any, ...], store: MVCCStore, model: MemoryKV, in_batch: bool) -> None:
    kind = op[0]
    if kind == "req":
        a = outcome(lambda: store.request(op[1]))
        b = outcome(lambda: model.request(op[1]))
    elif kind == "range":
        r = RangeRequest(**{f: getattr(op[1], f) for f in RangeRequest._fields} | {"revision": resolve(op[2], model)})
        a, b = outcome(lambda: store.range_request(r)), outcome(lambda: model.range_request(r))
    elif kind == "compact":
        rev, physical = resolve(op[1], model), op[2] and not in_batch
        a = outcome(lambda: (store.compact(rev, physical=physical), None)[1])
        b = outcome(lambda: model.compact(rev))
    elif kind == "hash":
        rev = resolve(op[1], model)
        a, b = outcome(lambda: store.hash_kv(rev)), outcome(lambda: model.hash_kv(rev))
    elif kind == "events":
        rev = resolve(op[1], model)
        a, b = outcome(lambda: store.events(rev)), outcome(lambda: model.events(rev))
    elif kind == "revoke":
        a = outcome(lambda: store.delete_keys(store.keys_by_lease(op[1])))
        b = outcome(lambda: model.delete_keys(model.keys_by_lease(op[1])))
    else:  # pragma: no cover
        raise AssertionError(op)
    assert a == b, (op, a, b)


def check_state(store: MVCCStore, model: MemoryKV) -> None:
    assert store.rev == model.rev
    assert store.compact_revision == model.compact_revision
    for rev in range(max(1, model.compact_revision), model.rev + 1):
        everything = RangeRequest(b"\x00", b"\x00", revision=rev)
        assert store.range_request(everything) == model.range_request(everything), rev
    assert store.hash_kv() == model.hash_kv()
    for lease in (1, 2):
        assert store.keys_by_lease(lease) == model.keys_by_lease(lease)


_dirs = itertools.count()


@STORAGE
@given(st.lists(operations, min_size=10, max_size=50))
def test_store_agrees_with_model(tmp_path: Path, program: list[tuple[Any, ...]]) -> None:
    path = tmp_path / f"kv{next(_dirs)}"
    store = MVCCStore(path, map_size=1 << 26, compaction_batch=3)
    model = MemoryKV()
    try:
        for op in program:
            if op[0] == "reopen":
                store.close()
                store = MVCCStore(path, map_size=1 << 26, compaction_batch=3)
            elif op[0] == "defrag":
                store.defragment()
            elif op[0] == "snapshot":  # replace the state by a snapshot of itself
                store.restore(list(store.snapshot(chunk_bytes=64)))
            elif op[0] == "alarm":
                store.set_nospace_alarm(op[1])
                model.nospace_alarm = op[1]
            elif op[0] == "batch":
                with store.batch():
                    for inner in op[1]:
                        run_one(inner, store, model, in_batch=True)
            else:
                run_one(op, store, model, in_batch=False)
        check_state(store, model)
        if store.last_job is not None:
            store.last_job.wait()
        store.close()
        store = MVCCStore(path, map_size=1 << 26)  # rebuilt from disk: same answers
        check_state(store, model)
        assert store.verify()["hash"] == model.hash_kv().hash
    finally:
        store.close()
