"""Errors a request can end in, each carrying the gRPC status code etcd answers with.

The tree::

    EtcdError                  code, message (etcd's text, ``etcdserver: `` prefix included)
     +-- InvalidArgument        3   key is not provided, duplicate key, request is too large, ...
     +-- NotFound               5   requested lease not found, member not found
     +-- PermissionDenied       7   (auth, a later layer)
     +-- ResourceExhausted      8   database space exceeded, too many requests
     +-- FailedPrecondition     9   not leader, bad leader transferee, peer URLs exist, ...
     +-- OutOfRange            11   compacted / future revision
     +-- Internal              13
     +-- Unavailable           14   no leader, leader changed, request timed out, server stopped
     +-- DataLoss              15   corrupt cluster
     +-- Unauthenticated       16   invalid auth token

Expected outcomes are raised as these and turned into etcd's error JSON by the API layer;
anything else is a bug and is logged (and answered as code 2, never as a bare 500 page).
"""

from __future__ import annotations

__all__ = [
    "DataLoss",
    "EtcdError",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "Unknown",
    "error_from_code",
]


class EtcdError(Exception):
    """An expected failure with etcd's gRPC ``code`` and ``message``."""

    code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[EtcdError], tuple[str]]:  # pragma: no cover - pickling support for completeness
        return (type(self), (self.message,))


class Unknown(EtcdError):
    code = 2


class InvalidArgument(EtcdError):
    code = 3


class NotFound(EtcdError):
    code = 5


class PermissionDenied(EtcdError):
    code = 7


class ResourceExhausted(EtcdError):
    code = 8


class FailedPrecondition(EtcdError):
    code = 9


class OutOfRange(EtcdError):
    code = 11


class Internal(EtcdError):
    code = 13


class Unavailable(EtcdError):
    code = 14


class DataLoss(EtcdError):
    code = 15


class Unauthenticated(EtcdError):
    code = 16


_BY_CODE: dict[int, type[EtcdError]] = {
    cls.code: cls
    for cls in (
        Unknown,
        InvalidArgument,
        NotFound,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        OutOfRange,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error_from_code(code: int, message: str) -> EtcdError:
    """Rebuild an error from its code and message (e.g. after it crossed a process)."""
    return _BY_CODE.get(code, EtcdError)(message)
