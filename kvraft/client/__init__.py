"""kvraft.client: the asyncio client for kvraft (and etcd's v3 JSON gateway).

The scheduler, the agents and ``kvctl`` reach kvraft only through this package. Its
public surface is exactly ``__all__`` (pinned by tests/client/test_exports.py).
See docs/client.md.
"""

from __future__ import annotations

from kvraft.client._transport import RetryPolicy
from kvraft.client.admin import SnapshotChunk
from kvraft.client.client import Client
from kvraft.client.concurrency import Election, Mutex
from kvraft.client.errors import (
    AlreadyExistsError,
    ClientError,
    CompactedError,
    EndpointError,
    FailedPreconditionError,
    FutureRevisionError,
    InvalidArgumentError,
    LeaseLostError,
    LeaseNotFoundError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ProtocolError,
    ResourceExhaustedError,
    ServerError,
    UnauthenticatedError,
    UnavailableError,
    WatchCompactedError,
)
from kvraft.client.kv import Compare, Op, Txn, prefix_range_end
from kvraft.client.lease import Lease
from kvraft.client.sync import SyncClient
from kvraft.client.types import (
    Alarm,
    AlarmResponse,
    AuthStatusResponse,
    DeleteResponse,
    Event,
    GetResponse,
    HashKVResponse,
    HeaderResponse,
    KeyValue,
    LeaseGrantResponse,
    LeaseKeepAliveResponse,
    LeaseLeasesResponse,
    LeaseTimeToLiveResponse,
    Member,
    MemberAddResponse,
    MemberListResponse,
    Permission,
    PutResponse,
    ResponseHeader,
    RoleGetResponse,
    RoleListResponse,
    StatusResponse,
    TxnResponse,
    UserGetResponse,
    UserListResponse,
    WatchResponse,
)
from kvraft.client.watch import Watcher

__all__ = [
    "Alarm",
    "AlarmResponse",
    "AlreadyExistsError",
    "AuthStatusResponse",
    "Client",
    "ClientError",
    "CompactedError",
    "Compare",
    "DeleteResponse",
    "Election",
    "EndpointError",
    "Event",
    "FailedPreconditionError",
    "FutureRevisionError",
    "GetResponse",
    "HashKVResponse",
    "HeaderResponse",
    "InvalidArgumentError",
    "KeyValue",
    "Lease",
    "LeaseGrantResponse",
    "LeaseKeepAliveResponse",
    "LeaseLeasesResponse",
    "LeaseLostError",
    "LeaseNotFoundError",
    "LeaseTimeToLiveResponse",
    "Member",
    "MemberAddResponse",
    "MemberListResponse",
    "Mutex",
    "NotFoundError",
    "Op",
    "OutOfRangeError",
    "Permission",
    "PermissionDeniedError",
    "ProtocolError",
    "PutResponse",
    "ResourceExhaustedError",
    "ResponseHeader",
    "RetryPolicy",
    "RoleGetResponse",
    "RoleListResponse",
    "ServerError",
    "SnapshotChunk",
    "StatusResponse",
    "SyncClient",
    "Txn",
    "TxnResponse",
    "UnauthenticatedError",
    "UnavailableError",
    "UserGetResponse",
    "UserListResponse",
    "WatchCompactedError",
    "WatchResponse",
    "Watcher",
    "prefix_range_end",
]
