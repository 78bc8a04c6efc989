"""``/v3/kv/*``: range, put, deleterange, txn, compaction."""

from __future__ import annotations

from aiohttp import web

from kvraft.server.api import schemas
from kvraft.server.api.encode import encode_delete, encode_put, encode_range, encode_txn
from kvraft.server.api.request import header, read_request, respond
from kvraft.server.api.state import SERVER

__all__ = ["ROUTES"]


async def _range(request: web.Request) -> web.Response:
    out, op = await read_request(request, schemas.RANGE)
    result = await request.app[SERVER].range(op)
    return respond(out, encode_range(out, header(request, out, result.revision), result))


async def _put(request: web.Request) -> web.Response:
    out, op = await read_request(request, schemas.PUT)
    result = await request.app[SERVER].put(op)
    return respond(out, encode_put(out, header(request, out, result.revision), result))


async def _delete_range(request: web.Request) -> web.Response:
    out, op = await read_request(request, schemas.DELETE_RANGE)
    result = await request.app[SERVER].delete_range(op)
    return respond(out, encode_delete(out, header(request, out, result.revision), result))


async def _txn(request: web.Request) -> web.Response:
    out, op = await read_request(request, schemas.TXN)
    result = await request.app[SERVER].txn(op)
    return respond(out, encode_txn(out, header(request, out, result.revision), result))


async def _compaction(request: web.Request) -> web.Response:
    out, op = await read_request(request, schemas.COMPACTION)
    result = await request.app[SERVER].compact(op)
    return respond(out, {"header": header(request, out, result.revision)})


ROUTES = {
    "/kv/range": _range,
    "/kv/put": _put,
    "/kv/deleterange": _delete_range,
    "/kv/txn": _txn,
    "/kv/compaction": _compaction,
}
