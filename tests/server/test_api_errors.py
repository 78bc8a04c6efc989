"""How an exception out of a handler is answered (kvraft/server/api/errors.py)."""

from __future__ import annotations

import lmdb

from kvraft.apply.errors import FailedPrecondition
from kvraft.server.api.errors import HTTP_STATUS, to_etcd_error
from kvraft.storage.mvcc.errors import NoSpaceError


def test_an_lmdb_errno_is_not_taken_for_a_grpc_code() -> None:
    """py-lmdb's errors carry the errno as ``code``: a defragmentation on a full disk
    (LMDB's short write: EIO, 5) was answered as gRPC NotFound, HTTP 404. etcd answers a
    failed defragment as Unknown (code 2, HTTP 500)."""
    exc = lmdb.Error("mdb_txn_commit: Input/output error")
    exc.code, exc.what, exc.reason = 5, "mdb_txn_commit", "Input/output error"  # as py-lmdb raises it
    error = to_etcd_error(exc)
    assert (error.code, HTTP_STATUS[error.code]) == (2, 500)
    assert "Input/output error" in error.message


def test_etcd_errors_keep_their_codes() -> None:
    assert to_etcd_error(NoSpaceError()).code == 8
    assert to_etcd_error(FailedPrecondition("etcdserver: x")).code == 9
