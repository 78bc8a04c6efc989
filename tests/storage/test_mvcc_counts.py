"""``MVCCStore.counts``: what etcd 3.4's ``etcd_mvcc_{range,put,delete,txn}_total`` and
``etcd_debugging_mvcc_total_put_size_in_bytes`` count, request by request. The expected
figures were captured from etcd 3.4.23 with the same requests through its JSON gateway
(``tests/observability/test_mvcc_metrics_compat_etcd.py`` compares them live)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvraft.storage.mvcc import (
    Compare,
    CompareResult,
    CompareTarget,
    DeleteRangeRequest,
    MVCCError,
    MVCCStore,
    PutRequest,
    RangeRequest,
    TxnRequest,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MVCCStore]:
    kv = MVCCStore(tmp_path / "kv", map_size=1 << 26, lease_check=lambda lease: lease == 500)
    yield kv
    kv.close()


def value_is(key: bytes, value: bytes) -> Compare:
    return Compare(key=key, target=CompareTarget.VALUE, result=CompareResult.EQUAL, value=value)


def txn(compare: tuple[Compare, ...] = (), success: tuple[Any, ...] = (), failure: tuple[Any, ...] = ()) -> TxnRequest:
    return TxnRequest(compare, success, failure)


# (request, (ranges, puts, deletes, txns, put bytes)) in order, one store
SCRIPT: list[tuple[Any, tuple[int, int, int, int, int]]] = [
    (PutRequest(b"a", b"1"), (0, 1, 0, 0, 2)),
    (PutRequest(b"a", b"22", prev_kv=True), (1, 1, 0, 1, 3)),  # the read of the old value: a txn
    (PutRequest(b"a", ignore_value=True), (1, 1, 0, 1, 3)),  # the old value's size
    (PutRequest(b"zz", ignore_value=True), (1, 0, 0, 0, 0)),  # key not found after the read
    (RangeRequest(b"a"), (1, 0, 0, 0, 0)),
    (RangeRequest(b"a", revision=99), (1, 0, 0, 0, 0)),  # a future revision still counts
    (DeleteRangeRequest(b"q"), (0, 0, 1, 0, 0)),  # nothing deleted still counts
    (DeleteRangeRequest(b"a", prev_kv=True), (1, 0, 1, 1, 0)),
    # the first compare is false: the second is not evaluated; an empty failure branch
    (txn((value_is(b"a", b"1"), value_is(b"b", b"2")), (PutRequest(b"x", b"1"),)), (1, 0, 0, 0, 0)),
    # compares in a read txn (1 range), then the write txn: a put and a range (a txn)
    (txn((value_is(b"a", b"1"),), (), (PutRequest(b"x", b"1"), RangeRequest(b"x"))), (2, 1, 0, 1, 2)),
    (txn((), (RangeRequest(b"x"),)), (1, 0, 0, 0, 0)),
    (txn((value_is(b"a", b"1"),), (RangeRequest(b"x"),)), (1, 0, 0, 0, 0)),  # read-only, false
    # read txn: 2 compares + the ignore_value check (a txn); write txn: put with its read,
    # delete with its prev_kv read (a txn)
    (txn((value_is(b"x", b"1"), value_is(b"x", b"1")),
         (PutRequest(b"x", ignore_value=True), DeleteRangeRequest(b"y", prev_kv=True))), (5, 1, 1, 2, 2)),
    # nested: the outer compare fails; only the chosen branch's nested compares are read
    (txn((value_is(b"x", b"0"),),
         (txn((value_is(b"x", b"1"), value_is(b"x", b"1")), (RangeRequest(b"x"),)),),
         (txn((value_is(b"x", b"1"),), (PutRequest(b"y", b"v"),)),)), (2, 1, 0, 1, 2)),
    (txn((), (PutRequest(b"zz", ignore_value=True),)), (1, 0, 0, 0, 0)),  # refused in its check
    (txn((), (PutRequest(b"x", b"1", lease=77),)), (0, 0, 0, 0, 0)),  # lease: no read
    (PutRequest(b"x", b"1", lease=77), (0, 0, 0, 0, 0)),  # looked up before the MVCC txn
    (PutRequest(b"l1", b"1", lease=500), (0, 1, 0, 0, 3)),
    (PutRequest(b"l2", b"1", lease=500), (0, 1, 0, 0, 3)),
]


def snapshot(kv: MVCCStore) -> tuple[int, int, int, int, int]:
    c = kv.counts
    return c.ranges, c.puts, c.deletes, c.txns, c.put_bytes


def test_each_request_counts_what_etcd_counts(store: MVCCStore) -> None:
    for request, expected in SCRIPT:
        before = snapshot(store)
        with contextlib.suppress(MVCCError):
            store.request(request)
        after = snapshot(store)
        assert tuple(a - b for a, b in zip(after, before, strict=True)) == expected, request


def test_a_lease_revocation_is_one_delete_per_key_in_one_txn(store: MVCCStore) -> None:
    store.put(b"l1", b"1", lease=500)
    store.put(b"l2", b"1", lease=500)
    before = snapshot(store)
    store.delete_keys(store.keys_by_lease(500))
    assert tuple(a - b for a, b in zip(snapshot(store), before, strict=True)) == (0, 0, 2, 1, 0)


def test_plain_puts_in_a_batch_count_as_puts(store: MVCCStore) -> None:
    with store.batch():
        results = store.put_many([PutRequest(b"k1", b"v"), PutRequest(b"k22", b"vv"), PutRequest(b"", b"v")])
    assert [type(r).__name__ for r in results] == ["PutResult", "PutResult", "EmptyKeyError"]
    assert snapshot(store) == (0, 2, 0, 0, 3 + 5)
