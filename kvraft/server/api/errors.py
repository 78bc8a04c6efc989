"""etcd's error answers: the gateway's JSON body and the HTTP status for each gRPC code.

Body (grpc-gateway v1, as etcd 3.4 answers): ``{"error": msg, "message": msg, "code": n}``.
Statuses follow the Debian etcd 3.4.23 build the compatibility tests run against (its
gateway maps FailedPrecondition to 412; upstream builds say 400). Clients should key on
``code``.
"""

from __future__ import annotations

import logging

from aiohttp import web

from kvraft.apply.errors import EtcdError, Unknown
from kvraft.server.api.codec import JSON_OUT, Out

__all__ = ["GRPC_CODE", "HTTP_STATUS", "error_response", "to_etcd_error"]

log = logging.getLogger("kvraft.api")

HTTP_STATUS = {
    1: 408,
    2: 500,
    3: 400,
    4: 504,
    5: 404,
    6: 409,
    7: 403,
    8: 429,
    9: 412,
    10: 409,
    11: 400,
    12: 501,
    13: 500,
    14: 503,
    15: 500,
    16: 401,
}


def to_etcd_error(exc: BaseException) -> EtcdError:
    """Map any exception to the etcd error it is answered with."""
    if isinstance(exc, EtcdError):
        return exc
    if isinstance(exc, ConnectionResetError):  # the client left mid-request: its context canceled
        canceled = EtcdError("context canceled")
        canceled.code = 1
        return canceled
    code = getattr(exc, "grpc_code", None)
    if code is None and hasattr(exc, "message"):  # etcd-like errors (MVCC, auth): not LMDB's, whose code is an errno
        code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(code, int) and code in HTTP_STATUS:
        error = EtcdError(message)
        error.code = code
        return error
    log.exception("internal error while serving a request", exc_info=exc)
    return Unknown(f"etcdserver: {type(exc).__name__}: {exc}")


GRPC_CODE = web.ResponseKey("kvraft.grpc_code", int)
"""The gRPC code an error answer carries, stored in the response (``grpc_stats``)."""


def error_response(exc: BaseException, out: Out = JSON_OUT) -> web.Response:
    error = to_etcd_error(exc)
    body = out.dumps({"error": error.message, "message": error.message, "code": error.code})
    response = web.Response(body=body, status=HTTP_STATUS.get(error.code, 500), content_type=out.content_type)
    response[GRPC_CODE] = error.code
    return response
