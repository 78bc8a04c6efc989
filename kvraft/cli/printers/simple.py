"""``-w simple`` (the default): etcdctl's human-readable lines."""

from __future__ import annotations

from kvraft.cli.goformat import hex_bytes
from kvraft.cli.printers.base import (
    DBHashKV,
    DBStatus,
    EndpointHashKV,
    EndpointHealth,
    EndpointStatus,
    Printer,
    db_hash_kv_rows,
    db_status_rows,
    endpoint_hashkv_rows,
    endpoint_status_rows,
    member_list_rows,
)
from kvraft.client import (
    AlarmResponse,
    DeleteResponse,
    GetResponse,
    KeyValue,
    LeaseGrantResponse,
    LeaseKeepAliveResponse,
    LeaseLeasesResponse,
    LeaseTimeToLiveResponse,
    MemberAddResponse,
    MemberListResponse,
    Permission,
    PutResponse,
    RoleGetResponse,
    RoleListResponse,
    TxnResponse,
    UserGetResponse,
    UserListResponse,
    WatchResponse,
    prefix_range_end,
)

__all__ = ["SimplePrinter", "text"]


def text(data: bytes) -> str:
    """Bytes as Go's ``string(b)`` prints them: raw bytes, not decoded."""
    return data.decode("utf-8", errors="surrogateescape")


class SimplePrinter(Printer):
    name = "simple"

    def write_raw(self, data: bytes) -> None:
        self.out.write(text(data))

    def kv(self, kv: KeyValue) -> None:
        key = hex_bytes(kv.key) if self.hex_output else text(kv.key)
        value = hex_bytes(kv.value) if self.hex_output else text(kv.value)
        if not self.value_only:
            self.line(key)
        self.line(value)

    def delete(self, resp: DeleteResponse) -> None:
        self.line(str(resp.deleted))
        for kv in resp.prev_kvs:
            self.kv(kv)

    def get(self, resp: GetResponse) -> None:
        for kv in resp.kvs:
            self.kv(kv)

    def put(self, resp: PutResponse) -> None:
        self.line("OK")
        if resp.prev_kv is not None:
            self.kv(resp.prev_kv)

    def txn(self, resp: TxnResponse) -> None:
        self.line("SUCCESS" if resp.succeeded else "FAILURE")
        for item in resp.responses:
            self.line("")
            if not self.txn_item(item):
                self.line(f"unexpected response {item}")

    def watch(self, resp: WatchResponse) -> None:
        for event in resp.events:
            self.line(event.type)
            if event.prev_kv is not None:
                self.kv(event.prev_kv)
            self.kv(event.kv)

    def lease_grant(self, resp: LeaseGrantResponse) -> None:
        self.line(f"lease {resp.id:016x} granted with TTL({resp.ttl}s)")

    def lease_revoke(self, lease_id: int, _resp: object) -> None:
        self.line(f"lease {lease_id:016x} revoked")

    def lease_keep_alive(self, resp: LeaseKeepAliveResponse) -> None:
        self.line(f"lease {resp.id:016x} keepalived with TTL({resp.ttl})")

    def lease_time_to_live(self, resp: LeaseTimeToLiveResponse, keys: bool) -> None:
        if resp.granted_ttl == 0 and resp.ttl == -1:
            self.line(f"lease {resp.id:016x} already expired")
            return
        line = f"lease {resp.id:016x} granted with TTL({resp.granted_ttl}s), remaining({resp.ttl}s)"
        if keys:
            line += f", attached keys([{' '.join(text(k) for k in resp.keys)}])"
        self.line(line)

    def lease_leases(self, resp: LeaseLeasesResponse) -> None:
        self.line(f"found {len(resp.leases)} leases")
        for lease_id in resp.leases:
            self.line(f"{lease_id:016x}")

    def alarm(self, resp: AlarmResponse) -> None:
        for item in resp.alarms:
            self.line(f"memberID:{item.member_id} alarm:{item.alarm} ")

    def member_add(self, resp: MemberAddResponse) -> None:
        self.line(f"Member {resp.member.id:16x} added to cluster {resp.header.cluster_id:16x}")

    def member_remove(self, member_id: int, resp: MemberListResponse) -> None:
        self.line(f"Member {member_id:16x} removed from cluster {resp.header.cluster_id:16x}")

    def member_update(self, member_id: int, resp: MemberListResponse) -> None:
        self.line(f"Member {member_id:16x} updated in cluster {resp.header.cluster_id:16x}")

    def member_promote(self, member_id: int, resp: MemberListResponse) -> None:
        self.line(f"Member {member_id:16x} promoted in cluster {resp.header.cluster_id:16x}")

    def member_list(self, resp: MemberListResponse) -> None:
        for row in member_list_rows(resp)[1]:
            self.line(", ".join(row))

    def endpoint_health(self, items: list[EndpointHealth]) -> None:
        for h in items:
            if not h.error:
                self.err.write(f"{h.endpoint} is healthy: successfully committed proposal: took = {h.took}\n")
            else:
                self.err.write(f"{h.endpoint} is unhealthy: failed to commit proposal: {h.error}\n")

    def endpoint_status(self, items: list[EndpointStatus]) -> None:
        for row in endpoint_status_rows(items)[1]:
            self.line(", ".join(row))

    def endpoint_hashkv(self, items: list[EndpointHashKV]) -> None:
        for row in endpoint_hashkv_rows(items)[1]:
            self.line(", ".join(row))

    def db_status(self, status: DBStatus) -> None:
        for row in db_status_rows(status)[1]:
            self.line(", ".join(row))

    def db_hash_kv(self, kv: DBHashKV) -> None:
        for row in db_hash_kv_rows(kv)[1]:
            self.line(", ".join(row))

    def move_leader(self, leader: int, target: int, _resp: object) -> None:
        self.line(f"Leadership transferred from {leader:x} to {target:x}")

    def role_add(self, role: str, _resp: object) -> None:
        self.line(f"Role {role} created")

    def role_get(self, role: str, resp: RoleGetResponse) -> None:
        self.line(f"Role {role}")
        self.line("KV Read:")
        for perm in resp.perm:
            if perm.perm_type in ("READ", "READWRITE"):
                self._perm(perm)
        self.line("KV Write:")
        for perm in resp.perm:
            if perm.perm_type in ("WRITE", "READWRITE"):
                self._perm(perm)

    def _perm(self, perm: Permission) -> None:
        key, end = text(perm.key), text(perm.range_end)
        if not perm.range_end:
            self.line(f"\t{key}")
            return
        line = f"\t[{key}, {end})" if perm.range_end != b"\0" else f"\t[{key}, <open ended>"
        if prefix_range_end(perm.key) == perm.range_end:
            line += f" (prefix {key})"
        self.line(line)

    def role_list(self, resp: RoleListResponse) -> None:
        for role in resp.roles:
            self.line(role)

    def role_delete(self, role: str, _resp: object) -> None:
        self.line(f"Role {role} deleted")

    def role_grant_permission(self, role: str, _resp: object) -> None:
        self.line(f"Role {role} updated")

    def role_revoke_permission(self, role: str, key: str, end: str, _resp: object) -> None:
        if not end:
            self.line(f"Permission of key {key} is revoked from role {role}")
        elif end != "\0":
            self.line(f"Permission of range [{key}, {end}) is revoked from role {role}")
        else:
            self.line(f"Permission of range [{key}, <open ended> is revoked from role {role}")

    def user_add(self, name: str, _resp: object) -> None:
        self.line(f"User {name} created")

    def user_get(self, name: str, resp: UserGetResponse) -> None:
        self.line(f"User: {name}")
        self.line("Roles:" + "".join(f" {role}" for role in resp.roles))

    def user_change_password(self, _resp: object) -> None:
        self.line("Password updated")

    def user_grant_role(self, user: str, role: str, _resp: object) -> None:
        self.line(f"Role {role} is granted to user {user}")

    def user_revoke_role(self, user: str, role: str, _resp: object) -> None:
        self.line(f"Role {role} is revoked from user {user}")

    def user_delete(self, user: str, _resp: object) -> None:
        self.line(f"User {user} deleted")

    def user_list(self, resp: UserListResponse) -> None:
        for user in resp.users:
            self.line(user)
