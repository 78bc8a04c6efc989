"""The printer interface (one method per etcdctl display call) and shared row builders.

A printer writes one command's result to ``out``. Formats that cannot show a result raise
``CommandError(EXIT_BAD_FEATURE, "<format> not supported as output format")``, as
etcdctl does (e.g. ``get -w table``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TextIO

from kvraft.cli.errors import EXIT_BAD_FEATURE, CommandError
from kvraft.cli.goformat import humanize_bytes
from kvraft.client import (
    DeleteResponse,
    GetResponse,
    HashKVResponse,
    MemberListResponse,
    PutResponse,
    StatusResponse,
)

__all__ = [
    "DBHashKV",
    "DBStatus",
    "EndpointHashKV",
    "EndpointHealth",
    "EndpointStatus",
    "Printer",
    "db_hash_kv_rows",
    "db_status_rows",
    "endpoint_hashkv_rows",
    "endpoint_health_rows",
    "endpoint_status_rows",
    "member_list_rows",
]


@dataclass(frozen=True)
class EndpointHealth:
    endpoint: str
    health: bool
    took: str
    error: str = ""


@dataclass(frozen=True)
class EndpointStatus:
    endpoint: str
    status: StatusResponse


@dataclass(frozen=True)
class EndpointHashKV:
    endpoint: str
    hashkv: HashKVResponse


@dataclass(frozen=True)
class DBHashKV:
    """etcdutl's ``hashkv`` of a data file."""

    hash: int
    hash_revision: int
    compact_revision: int


@dataclass(frozen=True)
class DBStatus:
    hash: int
    revision: int
    total_key: int
    total_size: int


class Printer:
    """Every method is unsupported until a format overrides it."""

    name = "printer"

    def __init__(self, out: TextIO, err: TextIO, *, hex_output: bool = False, value_only: bool = False) -> None:
        self.out = out
        self.err = err
        self.hex_output = hex_output
        self.value_only = value_only

    def line(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def unsupported(self, *_args: Any, **_kwargs: Any) -> None:
        raise CommandError(EXIT_BAD_FEATURE, f"{self.name} not supported as output format")

    def txn_item(self, item: object) -> bool:
        """Print one response of a txn's branch as this format prints that request's own
        result; False, printing nothing, for any other kind (a nested txn)."""
        if isinstance(item, DeleteResponse):
            self.delete(item)
        elif isinstance(item, PutResponse):
            self.put(item)
        elif isinstance(item, GetResponse):
            self.get(item)
        else:
            return False
        return True

    get = put = delete = txn = watch = unsupported
    lease_grant = lease_revoke = lease_keep_alive = lease_time_to_live = lease_leases = unsupported
    member_add = member_remove = member_update = member_promote = member_list = unsupported
    endpoint_health = endpoint_status = endpoint_hashkv = move_leader = alarm = db_status = unsupported
    db_hash_kv = unsupported
    role_add = role_get = role_delete = role_list = role_grant_permission = role_revoke_permission = unsupported
    user_add = user_get = user_list = user_change_password = user_grant_role = unsupported
    user_revoke_role = user_delete = unsupported


def member_list_rows(resp: MemberListResponse) -> tuple[list[str], list[list[str]]]:
    header = ["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"]
    rows = [
        [
            f"{m.id:x}",
            "started" if m.name else "unstarted",
            m.name,
            ",".join(m.peer_urls),
            ",".join(m.client_urls),
            "true" if m.is_learner else "false",
        ]
        for m in resp.members
    ]
    return header, rows


def endpoint_health_rows(items: list[EndpointHealth]) -> tuple[list[str], list[list[str]]]:
    header = ["endpoint", "health", "took", "error"]
    return header, [[h.endpoint, "true" if h.health else "false", h.took, h.error] for h in items]


def endpoint_status_rows(items: list[EndpointStatus]) -> tuple[list[str], list[list[str]]]:
    header = ["endpoint", "ID", "version", "db size", "is leader", "is learner", "raft term",
              "raft index", "raft applied index", "errors"]
    rows = []
    for item in items:
        s = item.status
        rows.append([
            item.endpoint,
            f"{s.header.member_id:x}",
            s.version,
            humanize_bytes(s.db_size),
            "true" if s.leader == s.header.member_id else "false",
            "true" if s.is_learner else "false",
            str(s.raft_term),
            str(s.raft_index),
            str(s.raft_applied_index),
            ", ".join(s.errors),
        ])
    return header, rows


def endpoint_hashkv_rows(items: list[EndpointHashKV]) -> tuple[list[str], list[list[str]]]:
    return ["endpoint", "hash"], [[h.endpoint, str(h.hashkv.hash)] for h in items]


def db_hash_kv_rows(kv: DBHashKV) -> tuple[list[str], list[list[str]]]:
    return ["hash", "hash revision", "compact revision"], [[str(kv.hash), str(kv.hash_revision), str(kv.compact_revision)]]


def db_status_rows(status: DBStatus) -> tuple[list[str], list[list[str]]]:
    header = ["hash", "revision", "total keys", "total size"]
    row = [f"{status.hash:x}", str(status.revision), str(status.total_key), humanize_bytes(status.total_size)]
    return header, [row]
