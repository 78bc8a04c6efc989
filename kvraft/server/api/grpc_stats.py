"""The gateway's calls counted under etcd's gRPC names, for ``grpc_server_started_total`` and
``grpc_server_handled_total`` (go-grpc-prometheus, which etcd 3.4 registers by default).

etcd serves its JSON gateway by calling its own gRPC server, so every gateway call shows in
those two counters, labelled with the gRPC type, service, method and (handled) status code.
The etcd mixin's alerts read them (``etcdHighNumberOfFailedGRPCRequests``:
``grpc_server_handled_total{grpc_code!="OK"}``). kvraft has no gRPC server; each route
counts as the method etcd's gateway would call. A request the gateway answers itself
(an unknown path, a wrong method) reaches no method and is not counted; nor is kvraft's
msgpack ``/kv/batch``, which has no gRPC counterpart.
"""

from __future__ import annotations

import time

from kvraft.durations import PROMETHEUS_DEFAULT_BUCKETS_S, DurationHistogram

__all__ = ["CODE_NAMES", "GrpcStats", "Method", "method_for"]

Method = tuple[str, str, str]  # (grpc_type, grpc_service, grpc_method)

CODE_NAMES = (
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists",
    "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
    "Internal", "Unavailable", "DataLoss", "Unauthenticated",
)  # fmt: skip

_UNARY, _SERVER_STREAM, _BIDI = "unary", "server_stream", "bidi_stream"
_KV, _LEASE, _CLUSTER = "etcdserverpb.KV", "etcdserverpb.Lease", "etcdserverpb.Cluster"
_MAINTENANCE, _AUTH = "etcdserverpb.Maintenance", "etcdserverpb.Auth"
_ELECTION = "v3electionpb.Election"

_METHODS: dict[str, Method] = {
    "/kv/range": (_UNARY, _KV, "Range"),
    "/kv/put": (_UNARY, _KV, "Put"),
    "/kv/deleterange": (_UNARY, _KV, "DeleteRange"),
    "/kv/txn": (_UNARY, _KV, "Txn"),
    "/kv/compaction": (_UNARY, _KV, "Compact"),
    "/watch": (_BIDI, "etcdserverpb.Watch", "Watch"),
    "/lease/grant": (_UNARY, _LEASE, "LeaseGrant"),
    "/lease/revoke": (_UNARY, _LEASE, "LeaseRevoke"),
    "/kv/lease/revoke": (_UNARY, _LEASE, "LeaseRevoke"),
    "/lease/keepalive": (_BIDI, _LEASE, "LeaseKeepAlive"),
    "/lease/timetolive": (_UNARY, _LEASE, "LeaseTimeToLive"),
    "/kv/lease/timetolive": (_UNARY, _LEASE, "LeaseTimeToLive"),
    "/lease/leases": (_UNARY, _LEASE, "LeaseLeases"),
    "/kv/lease/leases": (_UNARY, _LEASE, "LeaseLeases"),
    "/cluster/member/add": (_UNARY, _CLUSTER, "MemberAdd"),
    "/cluster/member/remove": (_UNARY, _CLUSTER, "MemberRemove"),
    "/cluster/member/update": (_UNARY, _CLUSTER, "MemberUpdate"),
    "/cluster/member/list": (_UNARY, _CLUSTER, "MemberList"),
    "/cluster/member/promote": (_UNARY, _CLUSTER, "MemberPromote"),
    "/maintenance/alarm": (_UNARY, _MAINTENANCE, "Alarm"),
    "/maintenance/status": (_UNARY, _MAINTENANCE, "Status"),
    "/maintenance/defragment": (_UNARY, _MAINTENANCE, "Defragment"),
    "/maintenance/hash": (_UNARY, _MAINTENANCE, "Hash"),
    "/maintenance/hashkv": (_UNARY, _MAINTENANCE, "HashKV"),
    "/maintenance/snapshot": (_SERVER_STREAM, _MAINTENANCE, "Snapshot"),
    "/maintenance/transfer-leadership": (_UNARY, _MAINTENANCE, "MoveLeader"),
    "/lock/lock": (_UNARY, "v3lockpb.Lock", "Lock"),
    "/lock/unlock": (_UNARY, "v3lockpb.Lock", "Unlock"),
    "/election/campaign": (_UNARY, _ELECTION, "Campaign"),
    "/election/proclaim": (_UNARY, _ELECTION, "Proclaim"),
    "/election/leader": (_UNARY, _ELECTION, "Leader"),
    "/election/observe": (_SERVER_STREAM, _ELECTION, "Observe"),
    "/election/resign": (_UNARY, _ELECTION, "Resign"),
}
for _path, _name in (
    ("enable", "AuthEnable"), ("disable", "AuthDisable"), ("status", "AuthStatus"),
    ("authenticate", "Authenticate"), ("user/add", "UserAdd"), ("user/get", "UserGet"), ("user/list", "UserList"),
    ("user/delete", "UserDelete"), ("user/changepw", "UserChangePassword"), ("user/grant", "UserGrantRole"),
    ("user/revoke", "UserRevokeRole"), ("role/add", "RoleAdd"), ("role/get", "RoleGet"), ("role/list", "RoleList"),
    ("role/delete", "RoleDelete"), ("role/grant", "RoleGrantPermission"), ("role/revoke", "RoleRevokePermission"),
):  # fmt: skip
    _METHODS["/auth/" + _path] = (_UNARY, _AUTH, _name)


def gateway_route(path: str) -> str | None:
    """A gateway path's route after its ``/v3`` or ``/v3beta`` (``/v3beta/kv/put`` ->
    ``/kv/put``); None for a path outside the gateway."""
    for prefix in ("/v3/", "/v3beta/"):
        if path.startswith(prefix):
            return path[len(prefix) - 1:]
    return None


def method_for(path: str) -> Method | None:
    """The gRPC method a gateway path (``/v3/...`` or ``/v3beta/...``) stands for."""
    route = gateway_route(path)
    return _METHODS.get(route) if route is not None else None


class GrpcStats:
    """Counts by method (started) and by method and status code (handled), and with
    ``timed`` (etcd's ``--metrics extensive``) each call's handling time by method, for
    ``grpc_server_handling_seconds`` (go-grpc-prometheus's opt-in histogram, which etcd
    enables only then; the mixin's ``etcdGRPCRequestsSlow`` alert reads it). Read at scrape
    time. Event-loop only: plain dict increments, no locks."""

    __slots__ = ("handled", "handling", "started", "timed")

    def __init__(self, timed: bool = False) -> None:
        self.timed = timed
        self.started: dict[Method, int] = {}
        self.handled: dict[tuple[str, str, str, int], int] = {}
        self.handling: dict[Method, DurationHistogram] = {}

    def start(self, method: Method) -> float:
        """Count a call; its start time for ``finish`` (also ``request_stats``'s)."""
        self.started[method] = self.started.get(method, 0) + 1
        return time.perf_counter()

    def finish(self, method: Method, code: int, started: float = 0.0) -> float:
        """Count a call's end; the seconds it took (0.0 without ``started``), for
        ``request_stats`` (one clock read serves both)."""
        key = (*method, code)
        self.handled[key] = self.handled.get(key, 0) + 1
        if not started:
            return 0.0
        took = time.perf_counter() - started
        if self.timed:
            hist = self.handling.get(method)
            if hist is None:
                hist = self.handling[method] = DurationHistogram(PROMETHEUS_DEFAULT_BUCKETS_S)
            hist.observe(took)
        return took
