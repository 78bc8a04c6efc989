"""``-w json``: what etcdctl's ``json.Marshal`` of the Go response structs prints.

Go's encoding: proto struct field order; ``omitempty`` drops zero values; 64-bit integers
are JSON numbers; bytes are base64; enums are numbers (``permType``, event ``type``);
``<``, ``>``, ``&`` are escaped as ``\\u003c`` etc. Some clientv3 wrappers flatten the
header into the top level (lease grant, keep-alive, time-to-live, leases) and watch
responses use Go field names (``Header``, ``Events``...), as etcdctl 3.4 prints them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

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
    Event,
    GetResponse,
    HeaderResponse,
    KeyValue,
    LeaseGrantResponse,
    LeaseKeepAliveResponse,
    LeaseLeasesResponse,
    LeaseTimeToLiveResponse,
    Member,
    MemberAddResponse,
    MemberListResponse,
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

__all__ = ["JsonPrinter", "go_json"]

_PERM_NUMBERS = {"READ": 0, "WRITE": 1, "READWRITE": 2}
_ALARM_NUMBERS = {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2}


def go_json(doc: Any) -> str:
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _omit(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {k: v for k, v in pairs if v not in (0, "", False, None, [], {})}


def header_doc(h: ResponseHeader) -> dict[str, Any]:
    return _omit([("cluster_id", h.cluster_id), ("member_id", h.member_id),
                  ("revision", h.revision), ("raft_term", h.raft_term)])


def kv_doc(kv: KeyValue) -> dict[str, Any]:
    return _omit([("key", _b64(kv.key)), ("create_revision", kv.create_revision),
                  ("mod_revision", kv.mod_revision), ("version", kv.version),
                  ("value", _b64(kv.value)), ("lease", kv.lease)])


def get_doc(r: GetResponse) -> dict[str, Any]:
    doc: dict[str, Any] = {"header": header_doc(r.header)}
    doc.update(_omit([("kvs", [kv_doc(kv) for kv in r.kvs]), ("more", r.more), ("count", r.count)]))
    return doc


def put_doc(r: PutResponse) -> dict[str, Any]:
    doc: dict[str, Any] = {"header": header_doc(r.header)}
    if r.prev_kv is not None:
        doc["prev_kv"] = kv_doc(r.prev_kv)
    return doc


def delete_doc(r: DeleteResponse) -> dict[str, Any]:
    doc: dict[str, Any] = {"header": header_doc(r.header)}
    doc.update(_omit([("deleted", r.deleted), ("prev_kvs", [kv_doc(kv) for kv in r.prev_kvs])]))
    return doc


def txn_doc(r: TxnResponse) -> dict[str, Any]:
    doc: dict[str, Any] = {"header": header_doc(r.header)}
    if r.succeeded:
        doc["succeeded"] = True
    responses = []
    for item in r.responses:
        if isinstance(item, GetResponse):
            responses.append({"Response": {"ResponseRange": get_doc(item)}})
        elif isinstance(item, PutResponse):
            responses.append({"Response": {"ResponsePut": put_doc(item)}})
        elif isinstance(item, DeleteResponse):
            responses.append({"Response": {"ResponseDeleteRange": delete_doc(item)}})
        else:
            responses.append({"Response": {"ResponseTxn": txn_doc(item)}})
    if responses:
        doc["responses"] = responses
    return doc


def event_doc(e: Event) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    if e.type == "DELETE":
        doc["type"] = 1
    doc["kv"] = kv_doc(e.kv)
    if e.prev_kv is not None:
        doc["prev_kv"] = kv_doc(e.prev_kv)
    return doc


def member_doc(m: Member) -> dict[str, Any]:
    return _omit([("ID", m.id), ("name", m.name), ("peerURLs", list(m.peer_urls)),
                  ("clientURLs", list(m.client_urls)), ("isLearner", m.is_learner)])


def members_doc(header: ResponseHeader, members: tuple[Member, ...]) -> dict[str, Any]:
    doc: dict[str, Any] = {"header": header_doc(header)}
    if members:
        doc["members"] = [member_doc(m) for m in members]
    return doc


def status_doc(s: StatusResponse) -> dict[str, Any]:
    doc: dict[str, Any] = {"header": header_doc(s.header)}
    doc.update(_omit([("version", s.version), ("dbSize", s.db_size), ("leader", s.leader),
                      ("raftIndex", s.raft_index), ("raftTerm", s.raft_term),
                      ("raftAppliedIndex", s.raft_applied_index), ("errors", list(s.errors)),
                      ("dbSizeInUse", s.db_size_in_use), ("isLearner", s.is_learner)]))
    return doc


def _header_only(resp: Any) -> dict[str, Any]:
    return {"header": header_doc(resp.header)}


class JsonPrinter(Printer):
    name = "json"

    def emit(self, doc: Any) -> None:
        self.line(go_json(doc))

    def get(self, resp: GetResponse) -> None:
        self.emit(get_doc(resp))

    def put(self, resp: PutResponse) -> None:
        self.emit(put_doc(resp))

    def delete(self, resp: DeleteResponse) -> None:
        self.emit(delete_doc(resp))

    def txn(self, resp: TxnResponse) -> None:
        self.emit(txn_doc(resp))

    def watch(self, resp: WatchResponse) -> None:
        self.emit({
            "Header": header_doc(resp.header),
            "Events": [event_doc(e) for e in resp.events],
            "CompactRevision": resp.compact_revision,
            "Canceled": resp.canceled,
            "Created": resp.created,
        })

    def lease_grant(self, resp: LeaseGrantResponse) -> None:
        doc = header_doc(resp.header)
        doc.update({"ID": resp.id, "TTL": resp.ttl, "Error": resp.error})
        self.emit(doc)

    def lease_revoke(self, _lease_id: int, resp: HeaderResponse) -> None:
        self.emit(_header_only(resp))

    def lease_keep_alive(self, resp: LeaseKeepAliveResponse) -> None:
        doc = header_doc(resp.header)
        doc.update({"ID": resp.id, "TTL": resp.ttl})
        self.emit(doc)

    def lease_time_to_live(self, resp: LeaseTimeToLiveResponse, keys: bool) -> None:
        doc = header_doc(resp.header)
        doc.update({"id": resp.id, "ttl": resp.ttl, "granted-ttl": resp.granted_ttl,
                    "keys": [_b64(k) for k in resp.keys] if resp.keys else None})
        self.emit(doc)

    def lease_leases(self, resp: LeaseLeasesResponse) -> None:
        doc = header_doc(resp.header)
        doc["leases"] = [{"id": lease_id} for lease_id in resp.leases]  # clientv3 makes the slice: never null
        self.emit(doc)

    def member_add(self, resp: MemberAddResponse) -> None:
        doc: dict[str, Any] = {"header": header_doc(resp.header), "member": member_doc(resp.member)}
        if resp.members:
            doc["members"] = [member_doc(m) for m in resp.members]
        self.emit(doc)

    def member_remove(self, _member_id: int, resp: MemberListResponse) -> None:
        self.emit(members_doc(resp.header, resp.members))

    member_update = member_promote = member_remove

    def member_list(self, resp: MemberListResponse) -> None:
        self.emit(members_doc(resp.header, resp.members))

    def endpoint_health(self, items: list[EndpointHealth]) -> None:
        docs = []
        for h in items:
            doc: dict[str, Any] = {"endpoint": h.endpoint, "health": h.health, "took": h.took}
            if h.error:
                doc["error"] = h.error
            docs.append(doc)
        self.emit(docs)

    def endpoint_status(self, items: list[EndpointStatus]) -> None:
        self.emit([{"Endpoint": i.endpoint, "Status": status_doc(i.status)} for i in items])

    def endpoint_hashkv(self, items: list[EndpointHashKV]) -> None:
        self.emit([{"Endpoint": i.endpoint, "HashKV": {"header": header_doc(i.hashkv.header),
                    **_omit([("hash", i.hashkv.hash), ("compact_revision", i.hashkv.compact_revision)])}}
                   for i in items])

    def db_status(self, status: DBStatus) -> None:
        self.emit({"hash": status.hash, "revision": status.revision, "totalKey": status.total_key,
                   "totalSize": status.total_size})

    def db_hash_kv(self, kv: DBHashKV) -> None:
        self.emit({"hash": kv.hash, "hashRevision": kv.hash_revision, "compactRevision": kv.compact_revision})

    def move_leader(self, _leader: int, _target: int, resp: HeaderResponse) -> None:
        self.emit(_header_only(resp))

    def alarm(self, resp: AlarmResponse) -> None:
        doc = _omit([("header", header_doc(resp.header))])
        if resp.alarms:
            doc["alarms"] = [_omit([("memberID", a.member_id), ("alarm", _ALARM_NUMBERS.get(a.alarm, 0))])
                             for a in resp.alarms]
        self.emit(doc)

    def role_get(self, _role: str, resp: RoleGetResponse) -> None:
        doc: dict[str, Any] = {"header": header_doc(resp.header)}
        if resp.perm:
            doc["perm"] = [_omit([("permType", _PERM_NUMBERS[p.perm_type]), ("key", _b64(p.key)),
                                  ("range_end", _b64(p.range_end))]) for p in resp.perm]
        self.emit(doc)

    def role_list(self, resp: RoleListResponse) -> None:
        self.emit(_header_only(resp) | _omit([("roles", list(resp.roles))]))

    def user_get(self, _name: str, resp: UserGetResponse) -> None:
        self.emit(_header_only(resp) | _omit([("roles", list(resp.roles))]))

    def user_list(self, resp: UserListResponse) -> None:
        self.emit(_header_only(resp) | _omit([("users", list(resp.users))]))

    def role_add(self, _role: str, resp: HeaderResponse) -> None:
        self.emit(_header_only(resp))

    def role_delete(self, _role: str, resp: HeaderResponse) -> None:
        self.emit(_header_only(resp))

    def role_grant_permission(self, _role: str, resp: HeaderResponse) -> None:
        self.emit(_header_only(resp))

    def role_revoke_permission(self, _role: str, _key: str, _end: str, resp: HeaderResponse) -> None:
        self.emit(_header_only(resp))

    def user_add(self, _name: str, resp: HeaderResponse) -> None:
        self.emit(_header_only(resp))

    def user_change_password(self, resp: HeaderResponse) -> None:
        self.emit(_header_only(resp))

    def user_grant_role(self, _user: str, _role: str, resp: HeaderResponse) -> None:
        self.emit(_header_only(resp))

    def user_revoke_role(self, _user: str, _role: str, resp: HeaderResponse) -> None:
        self.emit(_header_only(resp))

    def user_delete(self, _user: str, resp: HeaderResponse) -> None:
        self.emit(_header_only(resp))
