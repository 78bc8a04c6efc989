"""``/v3/kv/*``: range, put, deleterange, txn, compaction; kvraft's ``/v3/kvraft/kv/rangestream``."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from kvraft.apply.errors import EtcdError, InvalidArgument
from kvraft.apply.ops import RangeOp
from kvraft.apply.sessions import HEADER, request_id
from kvraft.server.api import schemas
from kvraft.server.api.encode import encode_delete, encode_put, encode_range, encode_txn
from kvraft.server.api.request import header, read_request, respond
from kvraft.server.api.state import SERVER
from kvraft.server.api.stream import open_stream

__all__ = ["ROUTES"]


async def _range(request: web.Request) -> web.Response:
    out, op = await read_request(request, schemas.RANGE)
    result = await request.app[SERVER].range(op)
    return respond(out, encode_range(out, header(request, out, result.revision), result))


PAGE_SIZE = 1000
PAGE_SIZE_MAX = 10_000


async def _range_stream(request: web.Request) -> web.StreamResponse:
    """kvraft's streamed range (etcd has RangeStream in 3.7, over gRPC alone): the range in
    pages of ``page_size`` keys (1000 by default, at most 10,000), each a
    ``{"result": RangeResponse}`` chunk as the watch stream's, all at the revision of the
    first (a linearizable first page unless ``serializable``), ``more`` on every page but
    the last. The member holds one page at a time: a list of millions of keys costs no more
    memory than a page (etcd-io/etcd#12342). ``limit`` caps the whole; ``count`` is on the
    first page (the whole range's; a later page counts nothing: counting the rest made each
    page cost the whole remaining range). Refused before the stream starts (code 3): sorting,
    ``count_only`` and the revision filters (a page's cursor is its last key). A page that
    fails later (its revision compacted meanwhile) ends the stream with an error chunk."""
    out, (op, page_size) = await read_request(request, schemas.RANGE_STREAM)
    filters = op.min_mod_revision or op.max_mod_revision or op.min_create_revision or op.max_create_revision
    why = ("a sort other than by key, ascending" if op.sort_order == 2 or op.sort_target
           else "count_only" if op.count_only else "min/max revision filters" if filters else "")
    if why:
        raise InvalidArgument(f"kvraft: a streamed range does not take {why} (use /v3/kv/range)")
    if not 0 <= page_size <= PAGE_SIZE_MAX:
        raise InvalidArgument(f"kvraft: page_size must be from 1 to {PAGE_SIZE_MAX} (0: {PAGE_SIZE}), not {page_size}")
    server, page = request.app[SERVER], page_size or PAGE_SIZE
    sent = 0

    def next_page(key: bytes, revision: int, serializable: bool, no_count: bool = True) -> RangeOp:
        left = op.limit - sent if op.limit else page
        paged: RangeOp = dataclasses.replace(op, key=key, revision=revision, serializable=serializable,
                                             limit=min(page, left), no_count=no_count)
        return paged

    result = await server.range(next_page(op.key, op.revision, op.serializable, no_count=False))
    revision = op.revision or result.revision  # every page reads this one
    sink = await open_stream(request, out)
    while True:
        sent += len(result.kvs)
        more = result.more and bool(result.kvs) and not (op.limit and sent >= op.limit)
        await sink.send(encode_range(out, header(request, out, result.revision), result._replace(more=more)))
        if not more:
            break
        try:
            result = await server.range(next_page(result.kvs[-1].key + b"\0", revision, True))
        except EtcdError as exc:
            await sink.send_error(exc.code, exc.message)
            break
    return sink.response if sink.response is not None else web.Response()


async def _put(request: web.Request) -> web.Response:
    out, op = await read_request(request, schemas.PUT)
    result = await request.app[SERVER].put(op, request_id(request.headers.get(HEADER)))
    return respond(out, encode_put(out, header(request, out, result.revision), result))


async def _delete_range(request: web.Request) -> web.Response:
    out, op = await read_request(request, schemas.DELETE_RANGE)
    result = await request.app[SERVER].delete_range(op, request_id(request.headers.get(HEADER)))
    return respond(out, encode_delete(out, header(request, out, result.revision), result))


async def _txn(request: web.Request) -> web.Response:
    out, op = await read_request(request, schemas.TXN)
    result = await request.app[SERVER].txn(op, request_id(request.headers.get(HEADER)))
    return respond(out, encode_txn(out, header(request, out, result.revision), result))


async def _compaction(request: web.Request) -> web.Response:
    out, op = await read_request(request, schemas.COMPACTION)
    result = await request.app[SERVER].compact(op, request_id(request.headers.get(HEADER)))
    return respond(out, {"header": header(request, out, result.revision)})


ROUTES = {
    "/kv/range": _range,
    "/kvraft/kv/rangestream": _range_stream,
    "/kv/put": _put,
    "/kv/deleterange": _delete_range,
    "/kv/txn": _txn,
    "/kv/compaction": _compaction,
}
