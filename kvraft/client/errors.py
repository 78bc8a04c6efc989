"""Errors raised by ``kvraft.client``.

::

    ClientError                      every error this package raises
    ├── EndpointError                no endpoint answered (connection refused, timeout)
    ├── ProtocolError                an answer that is not the gateway's shape
    └── ServerError                  the server answered with an error (``code``, ``message``)
        ├── InvalidArgumentError     code 3 (bad request; also "user name is empty")
        ├── NotFoundError            code 5 (lease, member, user or role not found)
        │   └── LeaseNotFoundError   "requested lease not found"
        ├── AlreadyExistsError       code 6
        ├── PermissionDeniedError    code 7
        ├── ResourceExhaustedError   code 8 (quota, too many requests)
        ├── FailedPreconditionError  code 9
        ├── OutOfRangeError          code 11
        │   ├── CompactedError       "required revision has been compacted"
        │   └── FutureRevisionError  "required revision is a future revision"
        ├── UnavailableError         code 14 (no leader, leader changed, timed out)
        └── UnauthenticatedError     code 16 (invalid auth token)
    ├── WatchCompactedError          a watch's start revision was compacted (``compact_revision``)
    └── LeaseLostError               a kept-alive lease expired or was revoked

Messages are the server's own text (``etcdserver: ...``), so kvctl prints what etcdctl does.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExistsError",
    "ClientError",
    "CompactedError",
    "EndpointError",
    "FailedPreconditionError",
    "FutureRevisionError",
    "InvalidArgumentError",
    "LeaseLostError",
    "LeaseNotFoundError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ProtocolError",
    "ResourceExhaustedError",
    "ServerError",
    "UnauthenticatedError",
    "UnavailableError",
    "WatchCompactedError",
    "error_from_status",
]


class ClientError(Exception):
    """Base of every error raised by the client."""


class EndpointError(ClientError):
    """No endpoint could be reached (every endpoint refused or timed out). ``tls``: every one
    failed in the TLS handshake (a certificate not verified, or refused): waiting will not
    mend it, unlike a member that is down."""

    def __init__(self, message: str, *, tls: bool = False) -> None:
        super().__init__(message)
        self.tls = tls


class ProtocolError(ClientError):
    """The server answered something that is not the etcd gateway's shape."""


class ServerError(ClientError):
    """The server answered an error. ``code`` is the gRPC code, ``message`` its text."""

    code: int = 2

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(ServerError):
    code = 3


class NotFoundError(ServerError):
    code = 5


class LeaseNotFoundError(NotFoundError):
    pass


class AlreadyExistsError(ServerError):
    code = 6


class PermissionDeniedError(ServerError):
    code = 7


class ResourceExhaustedError(ServerError):
    code = 8


class FailedPreconditionError(ServerError):
    code = 9


class OutOfRangeError(ServerError):
    code = 11


class CompactedError(OutOfRangeError):
    pass


class FutureRevisionError(OutOfRangeError):
    pass


class UnavailableError(ServerError):
    code = 14


class UnauthenticatedError(ServerError):
    code = 16


class WatchCompactedError(ClientError):
    """The watch cannot resume: history it needs was compacted.

    ``compact_revision`` is the server's compaction point; re-read the state with a range
    and watch again from its header revision + 1.
    """

    def __init__(self, compact_revision: int, start_revision: int, response: Any = None) -> None:
        super().__init__(
            f"watch start revision {start_revision} has been compacted "
            f"(compact_revision {compact_revision})"
        )
        self.compact_revision = compact_revision
        self.start_revision = start_revision
        self.response = response
        """The server's canceling ``WatchResponse`` (``None`` if not known)."""


class LeaseLostError(ClientError):
    """A lease that was being kept alive expired or was revoked."""

    def __init__(self, lease_id: int, reason: str) -> None:
        super().__init__(f"lease {lease_id:016x} lost: {reason}")
        self.lease_id = lease_id
        self.reason = reason


_BY_CODE: dict[int, type[ServerError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        OutOfRangeError,
        UnavailableError,
        UnauthenticatedError,
    )
}

_BY_MESSAGE: dict[str, type[ServerError]] = {
    "etcdserver: mvcc: required revision has been compacted": CompactedError,
    "etcdserver: mvcc: required revision is a future revision": FutureRevisionError,
    "etcdserver: requested lease not found": LeaseNotFoundError,
}


def error_from_status(code: int, message: str) -> ServerError:
    """The typed error for a gateway error body ``{"code": code, "message": message}``."""
    cls = _BY_MESSAGE.get(message) or _BY_CODE.get(code, ServerError)
    return cls(message, code)
