"""MVCC request outcomes, each with etcd's exact message and gRPC code.

The tree::

    MVCCError                       code, message (etcd's wire text, prefix included)
     +-- CompactedRevisionError     11  etcdserver: mvcc: required revision has been compacted
     +-- FutureRevisionError        11  etcdserver: mvcc: required revision is a future revision
     +-- NoSpaceError                8  etcdserver: mvcc: database space exceeded
     +-- EmptyKeyError               3  etcdserver: key is not provided
     +-- KeyNotFoundError            3  etcdserver: key not found  (ignore_value/ignore_lease)
     +-- ValueProvidedError          3  etcdserver: value is provided
     +-- LeaseProvidedError          3  etcdserver: lease is provided
     +-- DuplicateKeyError           3  etcdserver: duplicate key given in txn request
     +-- TooManyOpsError             3  etcdserver: too many operations in txn request
     +-- InvalidSortOptionError      3  etcdserver: invalid sort option
     +-- LeaseNotFoundError          5  etcdserver: requested lease not found

    BatchAbortedError (RuntimeError) a write batch failed part-way and was rolled back

The MVCC layer raises these before it changes anything, so a request that fails leaves no
trace. ``mvcc_message`` is the text without the ``etcdserver: `` prefix (etcd's
``mvcc.ErrCompacted`` etc.). The HTTP layer maps ``code`` to a status.
"""

from __future__ import annotations

from kvraft.storage.errors import BatchAbortedError

__all__ = [
    "BatchAbortedError",
    "CompactedRevisionError",
    "DuplicateKeyError",
    "EmptyKeyError",
    "FutureRevisionError",
    "InvalidSortOptionError",
    "KeyNotFoundError",
    "LeaseNotFoundError",
    "LeaseProvidedError",
    "MVCCError",
    "NoSpaceError",
    "TooManyOpsError",
    "ValueProvidedError",
]

_PREFIX = "etcdserver: "


class MVCCError(Exception):
    """An expected failure of an MVCC request."""

    code = 2
    message = "etcdserver: unknown error"

    def __init__(self) -> None:
        super().__init__(self.message)

    @property
    def mvcc_message(self) -> str:
        return self.message.removeprefix(_PREFIX)


class CompactedRevisionError(MVCCError):
    code = 11
    message = "etcdserver: mvcc: required revision has been compacted"


class FutureRevisionError(MVCCError):
    code = 11
    message = "etcdserver: mvcc: required revision is a future revision"


class NoSpaceError(MVCCError):
    code = 8
    message = "etcdserver: mvcc: database space exceeded"


class EmptyKeyError(MVCCError):
    code = 3
    message = "etcdserver: key is not provided"


class KeyNotFoundError(MVCCError):
    code = 3
    message = "etcdserver: key not found"


class ValueProvidedError(MVCCError):
    code = 3
    message = "etcdserver: value is provided"


class LeaseProvidedError(MVCCError):
    code = 3
    message = "etcdserver: lease is provided"


class DuplicateKeyError(MVCCError):
    code = 3
    message = "etcdserver: duplicate key given in txn request"


class TooManyOpsError(MVCCError):
    code = 3
    message = "etcdserver: too many operations in txn request"


class InvalidSortOptionError(MVCCError):
    code = 3
    message = "etcdserver: invalid sort option"


class LeaseNotFoundError(MVCCError):
    code = 5
    message = "etcdserver: requested lease not found"
