"""Buckets (LMDB sub-databases) of the state-machine backend, meta keys, and the
checksummed record encoding of the MVCC ``key`` bucket.

Buckets::

    key    revision bytes (see revision.py) -> KV record       (MVCC history)
    meta   name -> crc32(name || value) | value                 (see META_* below)
    lease, auth, alarm, members                                 reserved for the layers above

KV record (the value stored under a revision)::

    crc32 (u32 BE) | msgpack [key, create_revision, mod_revision, version, value, lease]
    crc32 = zlib.crc32(revision bytes || msgpack payload)

A tombstone (delete) stores ``[key, 0, mod_revision, 0, b"", 0]`` under the revision key
with the ``t`` mark. The checksum covers the revision key, so an intact record under the
wrong key is caught too. Encoding is deterministic: replicas holding the same history hold
the same bytes, which is what ``hash_kv`` hashes.
"""

from __future__ import annotations

import struct
import zlib

import msgpack

from kvraft.storage.errors import KVCorruptionError, StorageCorruptionError
from kvraft.storage.revision import bytes_to_rev

__all__ = [
    "ALARM_CORRUPT",
    "ALARM_NOSPACE",
    "BUCKET_ALARM",
    "BUCKET_KEY",
    "BUCKET_META",
    "DEFAULT_BUCKETS",
    "META_CONSISTENT_INDEX",
    "META_CURRENT_REV",
    "META_FINISHED_COMPACT",
    "META_NOSPACE_ALARM",
    "META_SCHEDULED_COMPACT",
    "alarm_from_record",
    "alarm_record",
    "decode_int",
    "decode_kv",
    "decode_consistent_index",
    "decode_meta",
    "encode_consistent_index",
    "encode_int",
    "encode_kv",
    "encode_meta",
]

BUCKET_KEY = b"key"
BUCKET_META = b"meta"
BUCKET_ALARM = b"alarm"
DEFAULT_BUCKETS = (BUCKET_KEY, BUCKET_META, b"lease", b"auth", b"alarm", b"members")

META_CURRENT_REV = b"currentRev"
META_SCHEDULED_COMPACT = b"scheduledCompactRev"
META_FINISHED_COMPACT = b"finishedCompactRev"
META_CONSISTENT_INDEX = b"consistentIndex"  # u64 index | u64 term
META_NOSPACE_ALARM = b"alarmNoSpace"  # b"\x01" when raised: before the alarm bucket (read, then replaced)

ALARM_NOSPACE, ALARM_CORRUPT = 1, 2  # etcd's AlarmType numbers
_ALARM = struct.Struct(">QI")

_CRC = struct.Struct(">I")
_pack = msgpack.Packer(use_bin_type=True).pack  # packb builds a Packer per call
_I64 = struct.Struct(">q")

KVTuple = tuple[bytes, int, int, int, bytes, int]
"""(key, create_revision, mod_revision, version, value, lease)"""


def encode_kv(rev_key: bytes, key: bytes, create: int, mod: int, version: int, value: bytes, lease: int) -> bytes:
    payload: bytes = _pack([key, create, mod, version, value, lease])
    return _CRC.pack(zlib.crc32(payload, zlib.crc32(rev_key))) + payload


def decode_kv(rev_key: bytes, raw: bytes) -> KVTuple:
    """Check and decode a KV record; ``KVCorruptionError`` names the revision."""
    if len(raw) < 5 or _CRC.unpack_from(raw)[0] != zlib.crc32(rev_key + raw[4:]):
        raise KVCorruptionError(_where(rev_key), "checksum mismatch")
    try:
        key, create, mod, version, value, lease = msgpack.unpackb(raw[4:])
    except (ValueError, TypeError, msgpack.ExtraData) as exc:  # pragma: no cover - crc passed
        raise KVCorruptionError(_where(rev_key), f"undecodable record: {exc}") from None
    return key, create, mod, version, value, lease


def _where(rev_key: bytes) -> tuple[int, int]:
    try:
        main, sub, _ = bytes_to_rev(rev_key)
    except ValueError:
        return (0, 0)
    return main, sub


def encode_meta(name: bytes, payload: bytes) -> bytes:
    """A meta value: ``crc32(name || payload) | payload``."""
    return _CRC.pack(zlib.crc32(name + payload)) + payload


def encode_consistent_index(index: int, term: int) -> bytes:
    """The ``META_CONSISTENT_INDEX`` value: u64 index | u64 term, as a meta value."""
    return encode_meta(META_CONSISTENT_INDEX, index.to_bytes(8, "big") + term.to_bytes(8, "big"))


def decode_consistent_index(raw: bytes | None) -> tuple[int, int]:
    """``(index, term)`` from a ``META_CONSISTENT_INDEX`` value (None: never recorded, (0, 0))."""
    if raw is None:
        return 0, 0
    payload = decode_meta(META_CONSISTENT_INDEX, raw)
    return int.from_bytes(payload[:8], "big"), int.from_bytes(payload[8:], "big")


def decode_meta(name: bytes, raw: bytes) -> bytes:
    if len(raw) < 4 or _CRC.unpack_from(raw)[0] != zlib.crc32(name + raw[4:]):
        raise StorageCorruptionError(f"corrupt mvcc meta record {name.decode()!r}")
    return bytes(raw[4:])


def alarm_record(member_id: int, alarm: int) -> tuple[bytes, bytes]:
    """An alarm bucket record (as etcd's ``alarm`` bucket: one per raised ``(member, type)``):
    key ``member_id u64 | type u32``, value the checksum of the key."""
    key = _ALARM.pack(member_id, alarm)
    return key, encode_meta(BUCKET_ALARM, key)


def alarm_from_record(key: bytes, raw: bytes) -> tuple[int, int]:
    """``(member_id, type)`` of an alarm record; ``StorageCorruptionError`` if damaged."""
    if len(key) != _ALARM.size or decode_meta(BUCKET_ALARM, raw) != key:
        raise StorageCorruptionError(f"corrupt alarm record {key.hex()}")
    member_id, alarm = _ALARM.unpack(key)
    return member_id, alarm


def encode_int(name: bytes, value: int) -> bytes:
    return encode_meta(name, _I64.pack(value))


def decode_int(name: bytes, raw: bytes) -> int:
    value: int = _I64.unpack(decode_meta(name, raw))[0]
    return value
