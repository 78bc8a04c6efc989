"""``-w fields``: etcdctl's ``"Name" : value`` lines (Go ``%q`` for strings)."""

from __future__ import annotations

from kvraft.cli.goformat import go_quote
from kvraft.cli.printers.base import (
    DBHashKV,
    DBStatus,
    EndpointHashKV,
    EndpointHealth,
    EndpointStatus,
    Printer,
)
from kvraft.client import (
    AlarmResponse,
    DeleteResponse,
    GetResponse,
    HeaderResponse,
    KeyValue,
    LeaseGrantResponse,
    LeaseKeepAliveResponse,
    LeaseLeasesResponse,
    LeaseTimeToLiveResponse,
    MemberListResponse,
    PutResponse,
    ResponseHeader,
    RoleGetResponse,
    RoleListResponse,
    TxnResponse,
    UserGetResponse,
    WatchResponse,
)

__all__ = ["FieldsPrinter"]


def _bool(value: bool) -> str:
    return "true" if value else "false"


class FieldsPrinter(Printer):
    name = "fields"

    def kv(self, prefix: str, kv: KeyValue) -> None:
        self.line(f'"{prefix}Key" : {go_quote(kv.key)}')
        self.line(f'"{prefix}CreateRevision" : {kv.create_revision}')
        self.line(f'"{prefix}ModRevision" : {kv.mod_revision}')
        self.line(f'"{prefix}Version" : {kv.version}')
        self.line(f'"{prefix}Value" : {go_quote(kv.value)}')
        self.line(f'"{prefix}Lease" : {kv.lease}')

    def hdr(self, h: ResponseHeader) -> None:
        self.line(f'"ClusterID" : {h.cluster_id}')
        self.line(f'"MemberID" : {h.member_id}')
        self.line(f'"Revision" : {h.revision}')
        self.line(f'"RaftTerm" : {h.raft_term}')

    def delete(self, resp: DeleteResponse) -> None:
        self.hdr(resp.header)
        self.line(f'"Deleted" : {resp.deleted}')
        for kv in resp.prev_kvs:
            self.kv("Prev", kv)

    def get(self, resp: GetResponse) -> None:
        self.hdr(resp.header)
        for kv in resp.kvs:
            self.kv("", kv)
        self.line(f'"More" : {_bool(resp.more)}')
        self.line(f'"Count" : {resp.count}')

    def put(self, resp: PutResponse) -> None:
        self.hdr(resp.header)
        if resp.prev_kv is not None:
            self.kv("Prev", resp.prev_kv)

    def txn(self, resp: TxnResponse) -> None:
        self.hdr(resp.header)
        self.line(f'"Succeeded" : {_bool(resp.succeeded)}')
        for item in resp.responses:
            if not self.txn_item(item):
                self.line(f'"Unknown" : {go_quote(str(item))}')

    def watch(self, resp: WatchResponse) -> None:
        self.hdr(resp.header)
        for event in resp.events:
            self.line(f'"Type" : {event.type}')
            if event.prev_kv is not None:
                self.kv("Prev", event.prev_kv)
            self.kv("", event.kv)

    def lease_grant(self, resp: LeaseGrantResponse) -> None:
        self.hdr(resp.header)
        self.line(f'"ID" : {resp.id}')
        self.line(f'"TTL" : {resp.ttl}')

    def lease_revoke(self, _lease_id: int, resp: HeaderResponse) -> None:
        self.hdr(resp.header)

    def lease_keep_alive(self, resp: LeaseKeepAliveResponse) -> None:
        self.hdr(resp.header)
        self.line(f'"ID" : {resp.id}')
        self.line(f'"TTL" : {resp.ttl}')

    def lease_time_to_live(self, resp: LeaseTimeToLiveResponse, _keys: bool) -> None:
        self.hdr(resp.header)
        self.line(f'"ID" : {resp.id}')
        self.line(f'"TTL" : {resp.ttl}')
        self.line(f'"GrantedTTL" : {resp.granted_ttl}')
        for key in resp.keys:
            self.line(f'"Key" : {go_quote(key)}')

    def lease_leases(self, resp: LeaseLeasesResponse) -> None:
        self.hdr(resp.header)
        for lease_id in resp.leases:
            self.line(f'"ID" : {lease_id}')

    def member_list(self, resp: MemberListResponse) -> None:
        self.hdr(resp.header)
        for m in resp.members:
            self.line(f'"ID" : {m.id}')
            self.line(f'"Name" : {go_quote(m.name)}')
            for url in m.peer_urls:
                self.line(f'"PeerURL" : {go_quote(url)}')
            for url in m.client_urls:
                self.line(f'"ClientURL" : {go_quote(url)}')
            self.line(f'"IsLearner" : {_bool(m.is_learner)}')
            self.line()

    def endpoint_health(self, items: list[EndpointHealth]) -> None:
        for h in items:
            self.line(f'"Endpoint" : {go_quote(h.endpoint)}')
            self.line(f'"Health" : {_bool(h.health)}')
            self.line(f'"Took" : {h.took}')
            self.line(f'"Error" : {h.error}')
            self.line()

    def endpoint_status(self, items: list[EndpointStatus]) -> None:
        for item in items:
            s = item.status
            self.hdr(s.header)
            self.line(f'"Version" : {go_quote(s.version)}')
            self.line(f'"DBSize" : {s.db_size}')
            self.line(f'"Leader" : {s.leader}')
            self.line(f'"IsLearner" : {_bool(s.is_learner)}')
            self.line(f'"RaftIndex" : {s.raft_index}')
            self.line(f'"RaftTerm" : {s.raft_term}')
            self.line(f'"RaftAppliedIndex" : {s.raft_applied_index}')
            self.line(f'"Errors" : [{" ".join(s.errors)}]')
            self.line(f'"Endpoint" : {go_quote(item.endpoint)}')
            self.line()

    def endpoint_hashkv(self, items: list[EndpointHashKV]) -> None:
        for item in items:
            self.hdr(item.hashkv.header)
            self.line(f'"Endpoint" : {go_quote(item.endpoint)}')
            self.line(f'"Hash" : {item.hashkv.hash}')
            self.line()

    def alarm(self, resp: AlarmResponse) -> None:
        self.hdr(resp.header)
        for a in resp.alarms:
            self.line(f'"MemberID" : {a.member_id}')
            self.line(f'"AlarmType" : {a.alarm}')
            self.line()

    def db_status(self, status: DBStatus) -> None:
        self.line(f'"Hash" : {status.hash}')
        self.line(f'"Revision" : {status.revision}')
        self.line(f'"Keys" : {status.total_key}')
        self.line(f'"Size" : {status.total_size}')

    def db_hash_kv(self, kv: DBHashKV) -> None:
        self.line(f'"Hash" : {kv.hash}')
        self.line(f'"Hash revision" : {kv.hash_revision}')
        self.line(f'"Compact revision" : {kv.compact_revision}')

    def role_get(self, _role: str, resp: RoleGetResponse) -> None:
        self.hdr(resp.header)
        for p in resp.perm:
            self.line(f'"PermType" :  {p.perm_type}')
            self.line(f'"Key" : {go_quote(p.key)}')
            self.line(f'"RangeEnd" : {go_quote(p.range_end)}')

    def role_list(self, resp: RoleListResponse) -> None:
        self.hdr(resp.header)
        self.line('"Roles" :' + "".join(f" {go_quote(r)}" for r in resp.roles))

    def user_get(self, _name: str, resp: UserGetResponse) -> None:
        # etcdctl 3.4 has no fields UserGet: it falls back to printing the raw response.
        self.unsupported()

    def _hdr_only(self, resp: HeaderResponse) -> None:
        self.hdr(resp.header)

    def role_add(self, _role: str, resp: HeaderResponse) -> None:
        self.hdr(resp.header)

    def role_delete(self, _role: str, resp: HeaderResponse) -> None:
        self.hdr(resp.header)

    def role_grant_permission(self, _role: str, resp: HeaderResponse) -> None:
        self.hdr(resp.header)

    def role_revoke_permission(self, _role: str, _key: str, _end: str, resp: HeaderResponse) -> None:
        self.hdr(resp.header)

    def user_add(self, _user: str, resp: HeaderResponse) -> None:
        self.hdr(resp.header)

    def user_change_password(self, resp: HeaderResponse) -> None:
        self.hdr(resp.header)

    def user_grant_role(self, _user: str, _role: str, resp: HeaderResponse) -> None:
        self.hdr(resp.header)

    def user_revoke_role(self, _user: str, _role: str, resp: HeaderResponse) -> None:
        self.hdr(resp.header)

    def user_delete(self, _user: str, resp: HeaderResponse) -> None:
        self.hdr(resp.header)
