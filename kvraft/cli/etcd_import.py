"""An etcd 3 snapshot (bbolt) as a kvraft snapshot stream: what lets ``kvctl snapshot
restore`` start a kvraft cluster from an etcd cluster's data, offline, with the key history
intact (kvraft's answer to ``etcdctl migrate``, which only converts etcd v2 stores).

etcd's backend and kvraft's share the MVCC model and the revision key encoding (``main |
'_' | sub [| 't']``), so the conversion is record by record:

    etcd bucket   record                                  kvraft
    key           rev -> mvccpb.KeyValue (protobuf)       key: rev -> crc | msgpack [key, create, mod, version, value, lease]
                  rev+'t' -> KeyValue{key} (a delete)     key: rev+'t' -> [key, 0, main, 0, b"", 0]
    meta          finishedCompactRev / scheduledCompactRev (revision bytes)
                                                          meta: the same names as int64 records, plus currentRev
    lease         id -> leasepb.Lease{ID, TTL, RemainingTTL}   lease: id -> msgpack [ttl, remaining]
    auth, authUsers, authRoles                           auth: b"state" -> the AuthState record (users keep
                                                          their bcrypt hashes, so passwords carry over)

The cluster buckets (members, alarms, the consistent index) are not carried: the restore
makes a new cluster, as etcd's own restore does. The output is the framed stream of
``kvraft.storage.snapshot`` (header, bucket frames in key order, trailer with SHA-256), so
the restore path verifies and installs it like any kvraft snapshot.

A file saved by ``etcdctl snapshot save`` ends with the SHA-256 of the database; it is
checked (as etcd's restore does) unless ``skip_hash_check`` (a ``db`` file copied from a
data dir has none, and etcd asks for ``--skip-hash-check`` then too).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack

from kvraft.cli.bbolt import _BUCKET_LEAF, BoltError, _Bolt
from kvraft.storage.schema import (
    BUCKET_KEY,
    BUCKET_META,
    META_CURRENT_REV,
    META_FINISHED_COMPACT,
    META_SCHEDULED_COMPACT,
    encode_int,
    encode_kv,
)

__all__ = ["EtcdImportError", "frames_from_etcd_snapshot"]

LEASE_BUCKET = b"lease"
AUTH_BUCKET = b"auth"
AUTH_STATE_KEY = b"state"
_HEAD = struct.Struct(">II")
_FRAME_RECORDS = 4096


class EtcdImportError(Exception):
    """The file is not an etcd snapshot this conversion can read."""


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf):
            raise EtcdImportError("truncated protobuf varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> dict[int, list[Any]]:
    """A protobuf message's fields: number -> values (ints for varints, bytes otherwise)."""
    out: dict[int, list[Any]] = {}
    i = 0
    while i < len(buf):
        tag, i = _varint(buf, i)
        number, wire = tag >> 3, tag & 7
        value: Any
        if wire == 0:
            value, i = _varint(buf, i)
            if value >= 1 << 63:
                value -= 1 << 64  # int64
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = bytes(buf[i : i + size]), i + size
        elif wire == 1:
            value, i = bytes(buf[i : i + 8]), i + 8
        elif wire == 5:
            value, i = bytes(buf[i : i + 4]), i + 4
        else:
            raise EtcdImportError(f"unsupported protobuf wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _one(fields: dict[int, list[Any]], number: int, default: Any) -> Any:
    values = fields.get(number)
    return values[-1] if values else default


def _frame(payload: Any) -> bytes:
    body: bytes = msgpack.packb(payload, use_bin_type=True)
    return _HEAD.pack(len(body), zlib.crc32(body)) + body


def _check_hash(data: Any, skip_hash_check: bool) -> None:
    """``data``: the file, mapped. Its trailing SHA-256 (if any) lies past bbolt's last
    page, so the pages are read from the same mapping either way."""
    if len(data) % 512 == hashlib.sha256().digest_size:
        with memoryview(data) as view:
            if not skip_hash_check and hashlib.sha256(view[:-32]).digest() != view[-32:]:
                raise EtcdImportError("expected sha256 [...], got [...] (the snapshot file is damaged)")
        return
    if not skip_hash_check:
        raise EtcdImportError("snapshot missing hash but --skip-hash-check=false")


def _main_of(rev_bytes: bytes) -> int:
    if len(rev_bytes) < 8:
        raise EtcdImportError("bad revision bytes in the meta bucket")
    main: int = struct.unpack_from(">Q", rev_bytes)[0]
    return main


def _key_records(bolt: _Bolt, bucket: bytes) -> Iterator[tuple[bytes, bytes, int]]:
    """(rev key, kvraft record, main revision) for each record of etcd's key bucket."""
    for rev_key, raw, _flags in bolt.bucket(bucket):
        if len(rev_key) not in (17, 18) or rev_key[8:9] != b"_":
            raise EtcdImportError(f"unexpected key in etcd's key bucket: {rev_key!r}")
        main = _main_of(rev_key)
        kv = _fields(raw)
        key = _one(kv, 1, b"")
        if len(rev_key) == 18:  # a tombstone: etcd keeps only the key
            yield rev_key, encode_kv(rev_key, key, 0, main, 0, b"", 0), main
        else:
            record = encode_kv(rev_key, key, _one(kv, 2, 0), _one(kv, 3, 0), _one(kv, 4, 0), _one(kv, 5, b""), _one(kv, 6, 0))
            yield rev_key, record, main


def _auth_record(buckets: dict[bytes, bytes], bolt: _Bolt) -> bytes | None:
    if not any(name in buckets for name in (b"auth", b"authUsers", b"authRoles")):
        return None
    enabled, revision = False, 0
    if b"auth" in buckets:
        for key, value, _ in bolt.bucket(buckets[b"auth"]):
            if key == b"authEnabled":
                enabled = value == b"\x01"
            elif key == b"authRevision" and len(value) == 8:
                revision = struct.unpack(">Q", value)[0]
    users = []
    for _name, value, _ in bolt.bucket(buckets[b"authUsers"]) if b"authUsers" in buckets else ():
        user = _fields(value)
        options = _fields(_one(user, 4, b""))
        users.append([_one(user, 1, b"").decode(), _one(user, 2, b""), [r.decode() for r in user.get(3, [])],
                      bool(_one(options, 1, 0))])
    roles = []
    for _name, value, _ in bolt.bucket(buckets[b"authRoles"]) if b"authRoles" in buckets else ():
        role = _fields(value)
        perms = []
        for raw in role.get(2, []):
            perm = _fields(raw)
            perms.append([_one(perm, 1, 0), _one(perm, 2, b""), _one(perm, 3, b"")])
        roles.append([_one(role, 1, b"").decode(), perms])
    record = {"enabled": enabled, "revision": revision, "users": users, "roles": roles}
    return bytes(msgpack.packb(record, use_bin_type=True))


def frames_from_etcd_snapshot(path: str, *, skip_hash_check: bool = False) -> Iterator[bytes]:
    """The kvraft snapshot stream (see the module docstring) of an etcd snapshot file."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise EtcdImportError("snapshot file is empty")
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)  # pages are read as needed
    try:
        _check_hash(data, skip_hash_check)
        yield from _frames(data)
    finally:
        data.close()


def _frames(data: Any) -> Iterator[bytes]:
    try:
        bolt = _Bolt(data)
        buckets = {name: value for name, value, flags in bolt.walk(bolt.root) if flags & _BUCKET_LEAF}
    except (BoltError, struct.error) as exc:
        raise EtcdImportError(str(exc)) from None
    if BUCKET_KEY not in buckets:
        raise EtcdImportError("not an etcd v3 backend (no key bucket)")
    digest = hashlib.sha256()
    records = 0

    def emit(payload: Any) -> bytes:
        frame = _frame(payload)
        digest.update(frame)
        return frame

    revision = 1
    meta: dict[bytes, int] = {}
    lease_pairs: list[bytes] = []
    for lease_id, raw, _ in bolt.bucket(buckets[LEASE_BUCKET]) if LEASE_BUCKET in buckets else ():
        lease = _fields(raw)
        lease_pairs += [lease_id, msgpack.packb([_one(lease, 2, 0), _one(lease, 3, 0)])]
    for name, raw, _ in bolt.bucket(buckets[BUCKET_META]) if BUCKET_META in buckets else ():
        if name == b"finishedCompactRev":
            meta[META_FINISHED_COMPACT] = _main_of(raw)
        elif name == b"scheduledCompactRev":
            meta[META_SCHEDULED_COMPACT] = _main_of(raw)
    # the revision: the last record's main revision (etcd keeps no counter), at least the compaction point
    for rev_key, _raw, _ in bolt.bucket(buckets[BUCKET_KEY]):
        revision = max(revision, _main_of(rev_key))
    revision = max([revision, *meta.values()])
    meta[META_CURRENT_REV] = revision
    auth = _auth_record(buckets, bolt)
    names = [BUCKET_KEY, BUCKET_META, LEASE_BUCKET, AUTH_BUCKET]
    yield emit({"magic": "kvraft-snapshot", "version": 1, "buckets": names, "revision": revision,
                "consistent_index": [0, 0], "source": "etcd"})
    flat: list[bytes] = []
    for rev_key, record, _main in _key_records(bolt, buckets[BUCKET_KEY]):
        flat += [rev_key, record]
        if len(flat) >= 2 * _FRAME_RECORDS:
            records += len(flat) // 2
            yield emit([BUCKET_KEY, flat])
            flat = []
    if flat:
        records += len(flat) // 2
        yield emit([BUCKET_KEY, flat])
    meta_flat = [item for name in sorted(meta) for item in (name, encode_int(name, meta[name]))]
    records += len(meta_flat) // 2
    yield emit([BUCKET_META, meta_flat])
    if lease_pairs:
        records += len(lease_pairs) // 2
        yield emit([LEASE_BUCKET, lease_pairs])
    if auth is not None:
        records += 1
        yield emit([AUTH_BUCKET, [AUTH_STATE_KEY, auth]])
    yield _frame({"end": True, "records": records, "sha256": digest.hexdigest()})
