"""KV and txn behaviour, the same assertions on etcd 3.4 and on kvraft."""

from __future__ import annotations

import pytest

from kvraft.client import (
    Client,
    CompactedError,
    Compare,
    DeleteResponse,
    FutureRevisionError,
    GetResponse,
    InvalidArgumentError,
    Op,
    PutResponse,
)


async def test_put_get_roundtrip_and_revisions(client: Client, prefix: str) -> None:
    first = await client.put(prefix + "a", b"1")
    second = await client.put(prefix + "a", b"2", prev_kv=True)
    assert second.header.revision == first.header.revision + 1
    assert second.prev_kv is not None and second.prev_kv.value == b"1"
    got = await client.get(prefix + "a")
    assert got.count == 1
    kv = got.kvs[0]
    assert (kv.key, kv.value, kv.version) == ((prefix + "a").encode(), b"2", 2)
    assert kv.create_revision == first.header.revision and kv.mod_revision == second.header.revision


async def test_binary_keys_and_values_survive_the_wire(client: Client, prefix: str) -> None:
    key = prefix.encode() + bytes([0, 255, 10, 13])
    value = bytes(range(256))
    await client.put(key, value)
    got = await client.get(key)
    assert got.kvs[0].key == key and got.kvs[0].value == value


async def test_range_options(client: Client, prefix: str) -> None:
    for name, value in (("b", "2"), ("a", "3"), ("c", "1")):
        await client.put(prefix + name, value)
    everything = await client.get(prefix, prefix=True)
    assert [kv.key for kv in everything.kvs] == [(prefix + n).encode() for n in "abc"]
    limited = await client.get(prefix, prefix=True, limit=1, sort_order="DESCEND", sort_target="KEY")
    assert limited.more and limited.count == 3 and limited.kvs[0].key == (prefix + "c").encode()
    by_value = await client.get(prefix, prefix=True, sort_target="VALUE", sort_order="ASCEND")
    assert [kv.value for kv in by_value.kvs] == [b"1", b"2", b"3"]
    keys_only = await client.get(prefix, prefix=True, keys_only=True)
    assert all(kv.value == b"" for kv in keys_only.kvs) and len(keys_only.kvs) == 3
    counted = await client.get(prefix, prefix=True, count_only=True)
    assert counted.count == 3 and counted.kvs == ()
    ranged = await client.get(prefix + "a", range_end=prefix + "c")
    assert [kv.key for kv in ranged.kvs] == [(prefix + n).encode() for n in "ab"]
    from_b = await client.get(prefix + "b", from_key=True)
    assert [kv.key for kv in from_b.kvs][:2] == [(prefix + n).encode() for n in "bc"]


async def test_historical_read_and_revision_errors(client: Client, prefix: str) -> None:
    old = await client.put(prefix + "k", b"old")
    await client.put(prefix + "k", b"new")
    then = await client.get(prefix + "k", revision=old.header.revision)
    assert then.kvs[0].value == b"old"
    with pytest.raises(FutureRevisionError) as info:
        await client.get(prefix + "k", revision=then.header.revision + 1000)
    assert info.value.code == 11 and "future revision" in info.value.message


async def test_compaction_then_old_revision_is_compacted(client: Client, prefix: str) -> None:
    old = await client.put(prefix + "k", b"v1")
    now = await client.put(prefix + "k", b"v2")
    await client.compact(now.header.revision, physical=True)
    with pytest.raises(CompactedError) as info:
        await client.get(prefix + "k", revision=old.header.revision)
    assert info.value.message == "etcdserver: mvcc: required revision has been compacted"


async def test_delete_range_with_prev_kv(client: Client, prefix: str) -> None:
    await client.put(prefix + "x1", b"1")
    await client.put(prefix + "x2", b"2")
    deleted = await client.delete(prefix + "x", prefix=True, prev_kv=True)
    assert deleted.deleted == 2 and sorted(kv.value for kv in deleted.prev_kvs) == [b"1", b"2"]
    nothing = await client.delete(prefix + "none")
    assert nothing.deleted == 0 and nothing.header.revision == deleted.header.revision


async def test_txn_compare_and_swap(client: Client, prefix: str) -> None:
    key = prefix + "cas"
    await client.put(key, b"v1")
    swap = client.txn().if_(Compare.value(key, "=", b"v1")).then(Op.put(key, b"v2"), Op.get(key)).else_(Op.get(key))
    won = await swap.commit()
    assert won.succeeded
    assert isinstance(won.responses[0], PutResponse) and isinstance(won.responses[1], GetResponse)
    assert won.responses[1].kvs[0].value == b"v2"
    lost = await client.txn().if_(Compare.value(key, "=", b"v1")).then(Op.put(key, b"v3")).else_(Op.get(key)).commit()
    assert not lost.succeeded
    assert isinstance(lost.responses[0], GetResponse) and lost.responses[0].kvs[0].value == b"v2"


async def test_txn_create_if_absent_and_version_guards(client: Client, prefix: str) -> None:
    key = prefix + "once"
    create = client.txn().if_(Compare.create(key, "=", 0)).then(Op.put(key, b"first"))
    assert (await create.commit()).succeeded
    again = client.txn().if_(Compare.create(key, "=", 0)).then(Op.put(key, b"second"))
    assert not (await again.commit()).succeeded
    guarded = await (
        client.txn()
        .if_(Compare.version(key, ">", 0), Compare.mod(key, "<", 10**9))
        .then(Op.delete(key, prev_kv=True))
        .commit()
    )
    assert guarded.succeeded and isinstance(guarded.responses[0], DeleteResponse)
    assert guarded.responses[0].prev_kvs[0].value == b"first"


async def test_value_compare_on_missing_key_is_false(client: Client, prefix: str) -> None:
    result = await client.txn().if_(Compare.value(prefix + "missing", "!=", b"x")).then(Op.put(prefix + "y", b"1")).commit()
    assert not result.succeeded


async def test_duplicate_key_in_txn_is_invalid_argument(client: Client, prefix: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await client.txn().then(Op.put(prefix + "d", b"1"), Op.put(prefix + "d", b"2")).commit()
    assert info.value.message == "etcdserver: duplicate key given in txn request"


async def test_empty_key_is_rejected(client: Client) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        await client.put(b"", b"v")
    assert info.value.message == "etcdserver: key is not provided"


async def test_do_runs_single_ops(client: Client, prefix: str) -> None:
    put = await client.do(Op.put(prefix + "d", b"v"))
    assert isinstance(put, PutResponse)
    got = await client.do(Op.get(prefix + "d"))
    assert isinstance(got, GetResponse) and got.kvs[0].value == b"v"


async def test_encoding_is_msgpack_on_kvraft_and_json_on_etcd(client: Client, runtime) -> None:  # type: ignore[no-untyped-def]
    expected = "msgpack" if runtime.name == "kvraft" else "json"
    assert client.encoding == expected
    assert ("kvraft" in client.server_version) == (runtime.name == "kvraft")


async def test_json_on_request_works_on_both(runtime, prefix: str) -> None:  # type: ignore[no-untyped-def]
    async with Client(runtime.endpoints, encoding="json") as c:
        assert c.encoding == "json"
        await c.put(prefix + "j", b"\x00json")
        assert (await c.get(prefix + "j")).kvs[0].value == b"\x00json"


async def test_scan_pages_through_a_range_at_one_revision(client: Client, prefix: str) -> None:
    for i in range(25):
        await client.put(f"{prefix}{i:03d}", str(i))
    seen = []
    async for kv in client.scan(prefix, prefix=True, page_size=7):
        if len(seen) == 3:
            await client.put(prefix + "999", b"late")  # written mid-scan: not part of the snapshot
        seen.append(kv.key)
    assert seen == [f"{prefix}{i:03d}".encode() for i in range(25)]
    assert [kv.key async for kv in client.scan(prefix + "010", range_end=prefix + "013", page_size=2)] == [
        f"{prefix}{i:03d}".encode() for i in (10, 11, 12)]
    assert [kv.value async for kv in client.scan(prefix + "005")] == [b"5"]
