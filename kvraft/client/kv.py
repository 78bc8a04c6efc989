"""Keys, ranges, operations and the txn builder.

Keys and values are ``bytes``; ``str`` is accepted and encoded as UTF-8. A range is
``[key, range_end)``: ``prefix=True`` sets ``range_end`` to the prefix's end,
``from_key=True`` to ``b"\\0"`` (every key >= key), and an empty key with either means all
keys, as etcd does.

Example::

    txn = (client.txn()
           .if_(Compare.value("cfg", "=", b"v1"))
           .then(Op.put("cfg", b"v2"))
           .else_(Op.get("cfg")))
    result = await txn.commit()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvraft.client._transport import Transport

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kvraft.client.errors import ServerError
from kvraft.client.types import DeleteResponse, GetResponse, KeyValue, PutResponse, TxnResponse

__all__ = ["Compare", "Key", "Op", "Txn", "prefix_range_end", "to_bytes"]

Key = str | bytes

SORT_ORDERS = ("NONE", "ASCEND", "DESCEND")
SORT_TARGETS = ("KEY", "VERSION", "CREATE", "MOD", "VALUE")
_RESULTS = {"=": "EQUAL", "==": "EQUAL", ">": "GREATER", "<": "LESS", "!=": "NOT_EQUAL"}


def to_bytes(value: Key) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def prefix_range_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every byte 0xff (or empty): no upper bound


def range_fields(key: Key, range_end: Key | None, prefix: bool, from_key: bool) -> dict[str, bytes]:
    """The ``key``/``range_end`` pair for the given range options."""
    if prefix and from_key:
        raise ValueError("prefix and from_key are mutually exclusive")
    k = to_bytes(key)
    doc: dict[str, bytes] = {}
    if prefix or from_key:
        if not k:
            k = b"\0"
            doc["range_end"] = b"\0"
        else:
            doc["range_end"] = prefix_range_end(k) if prefix else b"\0"
    elif range_end is not None:
        doc["range_end"] = to_bytes(range_end)
    doc["key"] = k
    return doc


@dataclass(frozen=True)
class Op:
    """One request inside a txn (or a plain request): build with ``Op.get/put/delete/txn``."""

    kind: str  # "range", "put", "delete_range", "txn"
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        if self.kind == "txn":
            return any(op.writes for part in ("success", "failure") for op in self.body.get(part, ()))
        return self.kind != "range"

    @classmethod
    def get(
        cls,
        key: Key,
        *,
        range_end: Key | None = None,
        prefix: bool = False,
        from_key: bool = False,
        revision: int = 0,
        limit: int = 0,
        sort_order: str = "NONE",
        sort_target: str = "KEY",
        serializable: bool = False,
        keys_only: bool = False,
        count_only: bool = False,
        min_mod_revision: int = 0,
        max_mod_revision: int = 0,
        min_create_revision: int = 0,
        max_create_revision: int = 0,
    ) -> Op:
        if sort_order not in SORT_ORDERS:
            raise ValueError(f"sort_order must be one of {SORT_ORDERS}")
        if sort_target not in SORT_TARGETS:
            raise ValueError(f"sort_target must be one of {SORT_TARGETS}")
        body: dict[str, Any] = range_fields(key, range_end, prefix, from_key)
        options = {
            "revision": revision,
            "limit": limit,
            "serializable": serializable,
            "keys_only": keys_only,
            "count_only": count_only,
            "min_mod_revision": min_mod_revision,
            "max_mod_revision": max_mod_revision,
            "min_create_revision": min_create_revision,
            "max_create_revision": max_create_revision,
        }
        body.update({k: v for k, v in options.items() if v})
        if sort_order != "NONE":
            body["sort_order"] = sort_order
        if sort_target != "KEY":
            body["sort_target"] = sort_target
        return cls("range", body)

    @classmethod
    def put(
        cls,
        key: Key,
        value: Key = b"",
        *,
        lease: int = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
    ) -> Op:
        body: dict[str, Any] = {"key": to_bytes(key)}
        if value:
            body["value"] = to_bytes(value)
        options = {"lease": lease, "prev_kv": prev_kv, "ignore_value": ignore_value, "ignore_lease": ignore_lease}
        body.update({k: v for k, v in options.items() if v})
        return cls("put", body)

    @classmethod
    def delete(
        cls,
        key: Key,
        *,
        range_end: Key | None = None,
        prefix: bool = False,
        from_key: bool = False,
        prev_kv: bool = False,
    ) -> Op:
        body: dict[str, Any] = range_fields(key, range_end, prefix, from_key)
        if prev_kv:
            body["prev_kv"] = True
        return cls("delete_range", body)

    @classmethod
    def txn(cls, compare: list[Compare], success: list[Op], failure: list[Op]) -> Op:
        """A nested txn (etcd 3.3+)."""
        return cls("txn", {"compare": list(compare), "success": list(success), "failure": list(failure)})

    def to_request_op(self) -> dict[str, Any]:
        if self.kind == "txn":
            return {"request_txn": txn_body(self.body["compare"], self.body["success"], self.body["failure"])}
        return {"request_" + self.kind: dict(self.body)}


@dataclass(frozen=True)
class Compare:
    """One txn guard. ``op`` is ``=``, ``!=``, ``>`` or ``<``. A VALUE compare on a missing
    key is false; VERSION/CREATE/MOD/LEASE compare a missing key as 0."""

    target: str  # VERSION, CREATE, MOD, VALUE, LEASE
    key: bytes
    result: str
    operand: int | bytes
    range_end: bytes = b""

    @classmethod
    def _make(cls, target: str, key: Key, op: str, operand: int | bytes, range_end: Key | None) -> Compare:
        if op not in _RESULTS:
            raise ValueError(f"compare operator must be one of =, !=, >, <; got {op!r}")
        end = to_bytes(range_end) if range_end is not None else b""
        return cls(target, to_bytes(key), _RESULTS[op], operand, end)

    @classmethod
    def value(cls, key: Key, op: str, value: Key, range_end: Key | None = None) -> Compare:
        return cls._make("VALUE", key, op, to_bytes(value), range_end)

    @classmethod
    def version(cls, key: Key, op: str, version: int, range_end: Key | None = None) -> Compare:
        return cls._make("VERSION", key, op, int(version), range_end)

    @classmethod
    def create(cls, key: Key, op: str, revision: int, range_end: Key | None = None) -> Compare:
        return cls._make("CREATE", key, op, int(revision), range_end)

    @classmethod
    def mod(cls, key: Key, op: str, revision: int, range_end: Key | None = None) -> Compare:
        return cls._make("MOD", key, op, int(revision), range_end)

    @classmethod
    def lease(cls, key: Key, op: str, lease_id: int, range_end: Key | None = None) -> Compare:
        return cls._make("LEASE", key, op, int(lease_id), range_end)

    def to_wire(self) -> dict[str, Any]:
        field_name = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision",
                      "VALUE": "value", "LEASE": "lease"}[self.target]
        doc: dict[str, Any] = {"key": self.key, "target": self.target, "result": self.result}
        doc[field_name] = self.operand
        if self.range_end:
            doc["range_end"] = self.range_end
        return doc


def txn_body(compare: list[Compare], success: list[Op], failure: list[Op]) -> dict[str, Any]:
    return {
        "compare": [c.to_wire() for c in compare],
        "success": [op.to_request_op() for op in success],
        "failure": [op.to_request_op() for op in failure],
    }


class Txn:
    """A transaction builder: ``if_`` (all compares must hold), ``then``, ``else_``, ``commit``."""

    def __init__(self, commit: Callable[[Txn], Awaitable[TxnResponse]]) -> None:
        self.compares: list[Compare] = []
        self.success: list[Op] = []
        self.failure: list[Op] = []
        self._commit = commit

    def if_(self, *compares: Compare) -> Txn:
        self.compares.extend(compares)
        return self

    def then(self, *ops: Op) -> Txn:
        self.success.extend(ops)
        return self

    def else_(self, *ops: Op) -> Txn:
        self.failure.extend(ops)
        return self

    @property
    def writes(self) -> bool:
        return any(op.writes for op in self.success + self.failure)

    def to_wire(self) -> dict[str, Any]:
        return txn_body(self.compares, self.success, self.failure)

    async def commit(self) -> TxnResponse:
        return await self._commit(self)


UNIMPLEMENTED = 12
"""The gRPC code a client error for a 404 carries: the store has no such route."""


class KVMixin:
    """Range, Put, DeleteRange, Txn, Compaction."""

    _transport: Transport
    _no_stream_range = False

    async def get(self, key: Key, **options: Any) -> GetResponse:
        """Read a key or range; options as ``Op.get``. Linearizable unless ``serializable``."""
        op = Op.get(key, **options)
        return GetResponse.from_wire(await self._transport.unary("/kv/range", op.body, safe=True))

    async def get_stream(self, key: Key, *, page_size: int = 0, **options: Any) -> AsyncGenerator[GetResponse, None]:
        """A range in pages (kvraft's ``/v3/kvraft/kv/rangestream``; not etcd's): one
        ``GetResponse`` per page of ``page_size`` keys (0: the server's 1000), every page
        read at the revision of the first, ``more`` on all but the last; the member holds
        one page at a time. ``options`` as ``get`` but sorting, ``count_only`` and the
        revision filters (refused). Breaking out of the loop closes the stream."""
        async for page in self.stream_range(Op.get(key, **options), page_size=page_size):
            yield page

    async def stream_range(self, op: Op, *, page_size: int = 0) -> AsyncGenerator[GetResponse, None]:
        """``get_stream`` of a range already built as ``Op.get``."""
        body = dict(op.body)
        if page_size:
            body["page_size"] = page_size
        async for message in self._transport.stream("/kvraft/kv/rangestream", body):
            yield GetResponse.from_wire(message)

    async def get_all(self, key: Key, *, page_size: int = 0, **options: Any) -> GetResponse:
        """A whole range as one ``GetResponse`` read through ``get_stream`` (the member holds
        a page at a time; the header and ``count`` are the first page's, every page read at
        its revision); from a store without streamed ranges (etcd answers the route 404,
        gRPC Unimplemented) one ``get``, and this client asks that store so from then on."""
        if not self._no_stream_range:
            pages: list[GetResponse] = []
            try:
                async for page in self.get_stream(key, page_size=page_size, **options):
                    pages.append(page)
            except ServerError as exc:
                if exc.code != UNIMPLEMENTED:
                    raise
                self._no_stream_range = True
            else:
                return GetResponse(pages[0].header, tuple(kv for p in pages for kv in p.kvs), False, pages[0].count)
        return await self.get(key, **options)

    async def put(self, key: Key, value: Key, **options: Any) -> PutResponse:
        """Write a key; options ``lease``, ``prev_kv``, ``ignore_value``, ``ignore_lease``."""
        op = Op.put(key, value, **options)
        return PutResponse.from_wire(await self._transport.unary("/kv/put", op.body, safe=False, numbered=True))

    async def delete(self, key: Key, **options: Any) -> DeleteResponse:
        """Delete a key or range; options ``range_end``, ``prefix``, ``from_key``, ``prev_kv``."""
        op = Op.delete(key, **options)
        return DeleteResponse.from_wire(await self._transport.unary("/kv/deleterange", op.body, safe=False, numbered=True))

    async def do(self, op: Op) -> GetResponse | PutResponse | DeleteResponse | TxnResponse:
        """Run one ``Op`` outside a txn (like clientv3's ``Do``)."""
        if op.kind == "range":
            return GetResponse.from_wire(await self._transport.unary("/kv/range", op.body, safe=True))
        if op.kind == "put":
            return PutResponse.from_wire(await self._transport.unary("/kv/put", op.body, safe=False, numbered=True))
        if op.kind == "delete_range":
            doc = await self._transport.unary("/kv/deleterange", op.body, safe=False, numbered=True)
            return DeleteResponse.from_wire(doc)
        txn = Txn(self._commit_txn).if_(*op.body["compare"]).then(*op.body["success"]).else_(*op.body["failure"])
        return await txn.commit()

    async def scan(
        self,
        key: Key,
        *,
        range_end: Key | None = None,
        prefix: bool = False,
        from_key: bool = False,
        page_size: int = 1000,
        revision: int = 0,
        keys_only: bool = False,
    ) -> AsyncIterator[KeyValue]:
        """Every key-value in a range, fetched ``page_size`` at a time, all at one revision
        (the first page's, unless ``revision`` is given), so a large listing neither loads
        at once nor mixes states. Raises ``CompactedError`` if that revision is compacted
        mid-scan."""
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        fields = range_fields(key, range_end, prefix, from_key)
        start, end = fields["key"], fields.get("range_end", b"")
        while True:
            op = Op.get(start, range_end=end or None, limit=page_size, revision=revision,
                        keys_only=keys_only, sort_target="KEY", sort_order="ASCEND")
            if not end:  # a single key: one page
                op = Op.get(start, revision=revision, keys_only=keys_only)
            page = GetResponse.from_wire(await self._transport.unary("/kv/range", op.body, safe=True))
            revision = revision or page.header.revision
            for kv in page.kvs:
                yield kv
            if not page.more or not page.kvs or not end:
                return
            start = page.kvs[-1].key + b"\0"

    def txn(self) -> Txn:
        """A new transaction builder; ``await txn.commit()`` sends it."""
        return Txn(self._commit_txn)

    async def _commit_txn(self, txn: Txn) -> TxnResponse:
        doc = await self._transport.unary("/kv/txn", txn.to_wire(), safe=not txn.writes, numbered=txn.writes)
        return TxnResponse.from_wire(doc)

    async def compact(self, revision: int, *, physical: bool = False) -> int:
        """Compact history below ``revision``; returns the header revision."""
        body: dict[str, Any] = {"revision": revision}
        if physical:
            body["physical"] = True
        doc = await self._transport.unary("/kv/compaction", body, safe=False, numbered=True)
        return GetResponse.from_wire(doc).header.revision
