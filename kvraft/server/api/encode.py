"""Response bodies in etcd's shape: proto field names, default values omitted.

Every function takes an ``Out`` (JSON: base64 bytes and decimal-string integers; msgpack:
raw values) and an MVCC result (``kvraft.storage.mvcc.types``), and returns a dict ready for
``out.dumps``. Nested txn responses carry a header with only ``revision`` (and ``{}`` for
a nested txn), as etcd's gateway answers.
"""

from __future__ import annotations

from typing import Any

from kvraft.server.api.codec import Out
from kvraft.storage.mvcc.types import DeleteRangeResult, PutResult, RangeResult, TxnResult

__all__ = ["encode_delete", "encode_header", "encode_kv", "encode_put", "encode_range", "encode_txn"]


def encode_header(out: Out, cluster_id: int, member_id: int, revision: int, raft_term: int) -> dict[str, Any]:
    header: dict[str, Any] = {}
    if cluster_id:
        header["cluster_id"] = out.i(cluster_id)
    if member_id:
        header["member_id"] = out.i(member_id)
    if revision:
        header["revision"] = out.i(revision)
    if raft_term:
        header["raft_term"] = out.i(raft_term)
    return header


def encode_kv(out: Out, kv: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if kv.key:
        doc["key"] = out.b(kv.key)
    if kv.create_revision:
        doc["create_revision"] = out.i(kv.create_revision)
    if kv.mod_revision:
        doc["mod_revision"] = out.i(kv.mod_revision)
    if kv.version:
        doc["version"] = out.i(kv.version)
    if kv.value:
        doc["value"] = out.b(kv.value)
    if kv.lease:
        doc["lease"] = out.i(kv.lease)
    return doc


def encode_range(out: Out, header: dict[str, Any], result: RangeResult) -> dict[str, Any]:
    doc: dict[str, Any] = {"header": header}
    if result.kvs:
        doc["kvs"] = [encode_kv(out, kv) for kv in result.kvs]
    if result.more:
        doc["more"] = True
    if result.count:
        doc["count"] = out.i(result.count)
    return doc


def encode_put(out: Out, header: dict[str, Any], result: PutResult) -> dict[str, Any]:
    doc: dict[str, Any] = {"header": header}
    if result.prev_kv is not None:
        doc["prev_kv"] = encode_kv(out, result.prev_kv)
    return doc


def encode_delete(out: Out, header: dict[str, Any], result: DeleteRangeResult) -> dict[str, Any]:
    doc: dict[str, Any] = {"header": header}
    if result.deleted:
        doc["deleted"] = out.i(result.deleted)
    if result.prev_kvs:
        doc["prev_kvs"] = [encode_kv(out, kv) for kv in result.prev_kvs]
    return doc


def _nested_header(out: Out, revision: int) -> dict[str, Any]:
    return {"revision": out.i(revision)} if revision else {}


def encode_txn(out: Out, header: dict[str, Any], result: TxnResult) -> dict[str, Any]:
    doc: dict[str, Any] = {"header": header}
    if result.succeeded:
        doc["succeeded"] = True
    responses = []
    for item in result.responses:
        if isinstance(item, RangeResult):
            responses.append({"response_range": encode_range(out, _nested_header(out, item.revision), item)})
        elif isinstance(item, PutResult):
            responses.append({"response_put": encode_put(out, _nested_header(out, item.revision), item)})
        elif isinstance(item, DeleteRangeResult):
            responses.append(
                {"response_delete_range": encode_delete(out, _nested_header(out, item.revision), item)}
            )
        else:
            responses.append({"response_txn": encode_txn(out, {}, item)})
    if responses:
        doc["responses"] = responses
    return doc
