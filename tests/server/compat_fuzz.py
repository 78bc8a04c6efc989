"""Randomized differential test: the same seeded request sequence to a real etcd 3.4 and to
kvraft over the v3 JSON gateway, answers compared by HTTP status and JSON body.

The generator (``generate``) is pure: ``random.Random(seed)`` alone decides the requests.
Requests touch a small key alphabet (so ranges, prefixes and compares hit) and cover put,
range, deleterange, txn (compares on every target and result, nested txns, duplicate
puts), compaction, the lease routes (explicit lease IDs, so both servers name leases the
same; keepalive streams), the lock/election routes that never block, the NOSPACE alarm
(raised for made-up member IDs, so both servers name it the same), auth users and roles
(never auth/enable), and malformed input
(bad base64, wrong JSON types, out-of-range integers, unknown and camelCase fields, cut,
invalid and trailing JSON, empty bodies, wrong methods, unknown and unclean paths).

Compared: the HTTP status and the JSON body, without cluster_id, member_id and raft_term;
lease lists and timetolive keys as sets (etcd walks Go maps); a timetolive TTL within 1 s.
A lease whose ID each server picks (ID 0 or absent) is compared without its ID and revoked
at once on both, as is a lease whose TTL is raised to the minimum (its expiry would land at
different moments). Not sent, because etcd 3.4 dies on them or picks at random (see
"Differences from etcd worth knowing" in docs/design/server.md): unknown numeric sort
values, an ignore_value/ignore_lease put after a delete in the same txn, a compare with two
of its oneof fields, a proclaim/resign without a lease, a put in a nested txn once NOSPACE
may be raised.

Revisions in a generated request are relative to the revision the servers had when the
seed started (``Rev``), so one pair of servers runs many seeds in a row: before each seed
both are reset (every key deleted, every lease revoked) and the seed's base revision is
read back. After a divergence the pair is restarted (its states may differ from there on).

Command line (longer campaigns; prints one line per seed, and for a divergence the
shortest request prefix found that still reproduces it, replayed on fresh servers)::

    .venv/bin/python -m tests.server.compat_fuzz --seeds 0-99 --ops 300

Only 127.0.0.1: both servers bind free local ports and are stopped by PID.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.client
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kvraft.server.local import LocalCluster

IGNORED_HEADER_FIELDS = {"cluster_id", "member_id", "raft_term"}
"""Differ by construction: ids are derived differently, terms depend on elections."""

# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Rev:
    """A revision relative to the seed's base revision (``base + offset``), sent as a JSON
    string (the gateway's int64 spelling) or, when ``as_int``, as a JSON number."""

    offset: int
    as_int: bool = False


@dataclass(frozen=True)
class Raw:
    """A body sent as these exact characters (malformed input)."""

    text: str


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: Any  # a JSON-able value that may hold Rev, a Raw, or None (no body)


def materialize(body: Any, base: int) -> Any:
    if isinstance(body, Rev):
        value = base + body.offset
        return value if body.as_int else str(value)
    if isinstance(body, dict):
        return {k: materialize(v, base) for k, v in body.items()}
    if isinstance(body, list):
        return [materialize(v, base) for v in body]
    return body


def body_text(request: Request, base: int) -> str | None:
    if request.body is None:
        return None
    if isinstance(request.body, Raw):
        return request.body.text
    return json.dumps(materialize(request.body, base))


# --------------------------------------------------------------------------- generator


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


KEYS: list[bytes] = [b"a", b"a/", b"a/b", b"a/c", b"ab", b"b", b"b/1", b"c", b"a\x00", b"\xff", b"\xff\xff"]
VALUES: list[bytes] = [b"", b"v1", b"v2", b"x", b"\x00\xff", b"long-" + b"z" * 40]
LEASE_IDS = [1, 2, 3, 77, 2**62 + 5]
MISSING_LEASE = 999
USERS = ["alice", "bob", "", "root"]
ROLES = ["r1", "r2", "", "root"]
ORDERS = ["NONE", "ASCEND", "DESCEND"]
TARGETS = ["KEY", "VERSION", "CREATE", "MOD", "VALUE"]
CMP_TARGETS = ["VALUE", "VERSION", "CREATE", "MOD", "LEASE"]
CMP_RESULTS = ["EQUAL", "GREATER", "LESS", "NOT_EQUAL"]
PATHS = ["/v3/kv/put", "/v3/kv/range", "/v3/kv/deleterange", "/v3/kv/txn", "/v3/kv/compaction",
         "/v3/lease/grant", "/v3/lease/revoke", "/v3/lease/timetolive", "/v3/lease/leases"]


def prefix_end(key: bytes) -> bytes:
    """The range end that covers every key with this prefix (etcd's rule; b"\\0" when the
    key is all 0xff bytes or empty)."""
    trimmed = key.rstrip(b"\xff")
    if not trimmed:
        return b"\x00"
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.writes = 0  # an upper bound on the revisions this seed has made so far
        # Inside a txn, after a delete: no ignore_value/ignore_lease put. One on a key that
        # the delete removed makes etcd 3.4 panic in the apply ("unexpected error during
        # txn"), killing the member; kvraft refuses the txn ('key not found'; see
        # docs/design/server.md, differences). Not compared, so as not to kill etcd.
        self.in_txn = False
        self.txn_deleted = False
        # Once this seed may have raised NOSPACE: no put inside a nested txn. etcd 3.4 counts
        # only a txn's top-level puts against the alarm, so nested ones get through; kvraft
        # refuses them (docs/design/server.md, differences).
        self.nospace = False

    # -- values --------------------------------------------------------------------------
    def key(self) -> bytes:
        return self.rng.choice(KEYS) if self.rng.random() < 0.97 else b""

    def value(self) -> bytes:
        return self.rng.choice(VALUES)

    def rev(self) -> Any:
        r = self.rng.random()
        if r < 0.08:
            return self.rng.choice([0, "0", 1, "1", -1, "-3"])
        if r < 0.12:
            return str(10**6 + self.rng.randint(0, 9))
        return Rev(self.rng.randint(0, self.writes + 3), as_int=self.rng.random() < 0.2)

    def int_field(self, value: int) -> Any:
        return value if self.rng.random() < 0.3 else str(value)

    def lease_id(self) -> int:
        r = self.rng.random()
        if r < 0.03:
            return -7  # etcd takes any int64 ID
        return MISSING_LEASE if r < 0.15 else self.rng.choice(LEASE_IDS)

    def range_end(self, key: bytes) -> bytes | None:
        r = self.rng.random()
        if r < 0.35:
            return None
        if r < 0.5:
            return b"\x00"
        if r < 0.75:
            return prefix_end(key)
        if r < 0.8:
            return b""
        return self.key()

    # -- ops -----------------------------------------------------------------------------
    def put(self) -> dict[str, Any]:
        key = self.key()
        doc: dict[str, Any] = {"key": b64(key)}
        risky = self.in_txn and self.txn_deleted
        ignore_value = self.rng.random() < 0.1 and not risky
        if ignore_value:
            doc["ignore_value"] = True
        if not ignore_value or self.rng.random() < 0.3:
            doc["value"] = b64(self.value())
        if self.rng.random() < 0.3:
            doc["prev_kv"] = True
        if self.rng.random() < 0.2:
            doc["lease"] = self.int_field(self.lease_id())
        if self.rng.random() < 0.08 and not risky:
            doc["ignore_lease"] = True
        self.writes += 1
        return doc

    def range(self) -> dict[str, Any]:
        key = self.key() if self.rng.random() < 0.9 else b"\x00"
        doc: dict[str, Any] = {"key": b64(key)}
        end = self.range_end(key)
        if end is not None:
            doc["range_end"] = b64(end)
        rng = self.rng
        if rng.random() < 0.3:
            doc["limit"] = self.int_field(rng.choice([0, 1, 2, 3, 5]))
        if rng.random() < 0.25:
            doc["revision"] = self.rev()
        if rng.random() < 0.35:
            doc["sort_order"] = rng.choice(ORDERS) if rng.random() < 0.9 else rng.randint(0, 2)
        if rng.random() < 0.35:
            doc["sort_target"] = rng.choice(TARGETS) if rng.random() < 0.9 else rng.randint(0, 4)
        for flag, p in (("keys_only", 0.15), ("count_only", 0.1), ("serializable", 0.15)):
            if rng.random() < p:
                doc[flag] = True
        for name in ("min_mod_revision", "max_mod_revision", "min_create_revision", "max_create_revision"):
            if rng.random() < 0.06:
                doc[name] = self.rev()
        return doc

    def delete(self) -> dict[str, Any]:
        key = self.key()
        doc: dict[str, Any] = {"key": b64(key)}
        end = self.range_end(key)
        if end is not None:
            doc["range_end"] = b64(end)
        if self.rng.random() < 0.4:
            doc["prev_kv"] = True
        self.writes += 1
        self.txn_deleted = self.txn_deleted or self.in_txn
        return doc

    def compare(self) -> dict[str, Any]:
        rng = self.rng
        key = self.key()
        target = rng.choice(CMP_TARGETS)
        doc: dict[str, Any] = {"key": b64(key), "target": target}
        if rng.random() < 0.85:
            doc["result"] = rng.choice(CMP_RESULTS)
        if rng.random() < 0.05:  # enums by number, unknown ones too (etcd compares them)
            doc[rng.choice(["target", "result"])] = rng.choice([0, 1, 2, 3, 4, 7, 9])
        if rng.random() < 0.15:
            end = self.range_end(key)
            if end is not None:
                doc["range_end"] = b64(end)
        if target == "VALUE":
            doc["value"] = b64(self.value())
        elif target == "VERSION":
            doc["version"] = self.int_field(rng.randint(0, 4))
        elif target == "CREATE":
            doc["create_revision"] = 0 if rng.random() < 0.4 else self.rev()
        elif target == "MOD":
            doc["mod_revision"] = 0 if rng.random() < 0.2 else self.rev()
        else:
            doc["lease"] = self.int_field(0 if rng.random() < 0.3 else self.lease_id())
        # Never two of version/create_revision/mod_revision/value/lease: they are one
        # protobuf oneof, which etcd's jsonpb fills in Go map order (a random one wins);
        # kvraft uses the one the target names (docs/design/server.md, differences).
        return doc

    def request_op(self, depth: int) -> dict[str, Any]:
        r = self.rng.random()
        if r < 0.3 or (r < 0.7 and depth > 0 and self.nospace):
            return {"request_range": self.range()}
        if r < 0.7:
            return {"request_put": self.put()}
        if r < 0.88 or depth >= 2:
            return {"request_delete_range": self.delete()}
        return {"request_txn": self._txn(depth + 1)}

    def txn(self, depth: int = 0) -> dict[str, Any]:
        if depth == 0:
            self.in_txn, self.txn_deleted = True, False
        try:
            return self._txn(depth)
        finally:
            if depth == 0:
                self.in_txn = False

    def _txn(self, depth: int) -> dict[str, Any]:
        rng = self.rng
        doc: dict[str, Any] = {}
        if rng.random() < 0.85:
            doc["compare"] = [self.compare() for _ in range(rng.randint(0, 3))]
        for branch in ("success", "failure"):
            if rng.random() < 0.8:
                doc[branch] = [self.request_op(depth) for _ in range(rng.randint(0, 3 if depth else 4))]
        if rng.random() < 0.03:
            doc.setdefault("success", []).append({})  # an empty RequestOp
        if depth == 0 and rng.random() < 0.01:  # beyond --max-txn-ops (128)
            doc["failure"] = [{"request_range": {"key": b64(self.key() or b"a")}} for _ in range(129)]
        self.writes += 1
        return doc

    def compaction(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"revision": Rev(self.rng.randint(0, self.writes + 2), self.rng.random() < 0.2)}
        if self.rng.random() < 0.5:
            doc["physical"] = True
        return doc

    def grant(self) -> dict[str, Any]:
        ttl = self.rng.choice([30, 60, 600, 3600, 9_000_000_001]) if self.rng.random() < 0.97 else self.rng.choice([-5, 0, 1])
        doc: dict[str, Any] = {"TTL": self.int_field(ttl), "ID": self.int_field(self.lease_id())}
        return doc

    def auth(self) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        user, role = rng.choice(USERS), rng.choice(ROLES)
        perm = {"permType": rng.choice(["READ", "WRITE", "READWRITE", 1]), "key": b64(self.key())}
        if rng.random() < 0.5:
            perm["range_end"] = b64(self.range_end(b"a") or b"")
        choices: list[tuple[str, dict[str, Any]]] = [
            ("user/add", {"name": user, "password": "pw"} if rng.random() < 0.8 else {"name": user, "options": {"no_password": True}}),
            ("user/get", {"name": user}), ("user/list", {}), ("user/delete", {"name": user}),
            ("user/changepw", {"name": user, "password": "pw2"}),
            ("user/grant", {"user": user, "role": role}), ("user/revoke", {"name": user, "role": role}),
            ("role/add", {"name": role}), ("role/get", {"role": role}), ("role/list", {}),
            ("role/delete", {"role": role}), ("role/grant", {"name": role, "perm": perm}),
            ("role/revoke", {"role": role, "key": perm["key"], **({"range_end": perm["range_end"]} if "range_end" in perm else {})}),
            ("disable", {}), ("authenticate", {"name": user, "password": "pw"}),
        ]  # fmt: skip
        name, doc = rng.choice(choices)
        return f"/v3/auth/{name}", doc

    # -- malformed -----------------------------------------------------------------------
    BAD_SCALARS: list[Any] = [
        "!!!", "YQ", "YQ=", "a===", " YQ==", "YQ==\n", 12, 1.5, True, [], {}, None, "",
        "-1", -1, "18446744073709551616", 9223372036854775808, "9223372036854775807", 1e30,
        "1e3", "0x10", " 7", "7 ", "+5", "", "null", 2.0, "-0",
        "007", "0.5", "\t5", "5\n", "-", "--1", "1e", "true", "[1]", "{}", "\u00e9===", "YQ\u00e9=",
        "YWJj=", "YQ===", "YQ==YQ==", "YQ=\r\n=", [97, 98], [256], ["a"], 1e400, -9223372036854775809,
    ]  # fmt: skip

    def bad_value(self, field: str) -> Any:
        bad = self.rng.choice(self.BAD_SCALARS)
        if field in ("sort_order", "sort_target") and type(bad) is int and -(2**31) <= bad < 2**31:
            # An unknown sort value in int32's range: etcd 3.4 panics (the whole member
            # dies) on an unknown sort_target and ignores an unknown sort_order; kvraft
            # refuses both with etcd 3.5's 'invalid sort option' (docs/design/server.md,
            # "Differences from etcd worth knowing"). Not compared, so as not to kill etcd.
            return "BOGUS"
        return bad

    @staticmethod
    def dumps(doc: Any) -> str:
        """JSON text for a Raw body (fixed now, so a Rev is taken from revision 1)."""
        return json.dumps(materialize(doc, 1))

    def mutate(self, doc: dict[str, Any]) -> Any:
        """One broken or unusual thing about an otherwise valid request body."""
        rng = self.rng
        r = rng.random()
        if r < 0.45 and doc:
            field = rng.choice(sorted(doc))
            doc[field] = self.bad_value(field)
            return doc
        if r < 0.55:
            name = rng.choice(["unknown_field", "Key", "rangeEnd", "prevKv", "sortOrder", "keysOnly", "ttl", "id"])
            value = rng.choice([5, "x", b64(b"a"), True, None, "DESCEND"])
            if name == "sortOrder" and value == 5:
                value = 2  # not an unknown numeric sort value: see BAD_SCALARS' use below
            doc[name] = value
            return doc
        if r < 0.62:
            return Raw(self.dumps(doc) + rng.choice(["x", " {}", ",", "]", " ", "\n\n"]))
        if r < 0.7:
            text = self.dumps(doc)
            return Raw(text[: rng.randint(0, max(len(text) - 1, 0))])
        if r < 0.78:
            return Raw(rng.choice(["", " ", "null", "[]", "[1,2]", "1", '"x"', "true", "{bad", "{'a':1}", '{"key":}', "\x00", "{}{}", '{"a":1,}', "nul", "tru", "\ufeff{}"]))
        if r < 0.86 and doc:  # the same field twice: the last one wins in Go and in Python
            field = rng.choice(sorted(doc))
            return Raw(self.dumps(doc)[:-1] + (", " if len(doc) else "") + f'"{field}": {json.dumps(self.bad_value(field))}' + "}")
        if r < 0.93:
            for field in list(doc):
                if rng.random() < 0.3:
                    doc[field] = None
            return doc
        return [doc]

    # -- the sequence --------------------------------------------------------------------
    def request(self) -> Request:
        rng = self.rng
        r = rng.random()
        if r < 0.2:
            path, doc = "/v3/kv/put", self.put()
        elif r < 0.42:
            path, doc = "/v3/kv/range", self.range()
        elif r < 0.5:
            path, doc = "/v3/kv/deleterange", self.delete()
        elif r < 0.68:
            path, doc = "/v3/kv/txn", self.txn()
        elif r < 0.71:
            path, doc = "/v3/kv/compaction", self.compaction()
        elif r < 0.76:
            path, doc = "/v3/lease/grant", self.grant()
            self.writes += 1
        elif r < 0.79:
            path, doc = rng.choice(["/v3/lease/revoke", "/v3/kv/lease/revoke"]), {"ID": self.int_field(self.lease_id())}
            self.writes += 1
        elif r < 0.83:
            path = rng.choice(["/v3/lease/timetolive", "/v3/kv/lease/timetolive"])
            doc = {"ID": self.int_field(self.lease_id())}
            if rng.random() < 0.5:
                doc["keys"] = True
        elif r < 0.85:
            path, doc = rng.choice(["/v3/lease/leases", "/v3/kv/lease/leases"]), {}
        elif r < 0.86:
            path = rng.choice(["/v3/lease/keepalive", "/v3beta/lease/keepalive"])
            objects = [{"ID": self.int_field(self.lease_id())} for _ in range(rng.choice([1, 1, 2, 3]))]
            if rng.random() < 0.3:  # a stream of request objects, one of them broken
                parts = [json.dumps(d) for d in objects]
                broken = self.mutate({"ID": self.int_field(self.lease_id())})
                parts.insert(rng.randint(0, len(parts)), broken.text if isinstance(broken, Raw) else json.dumps(broken))
                return Request("POST", path, Raw(rng.choice([" ", "\n", ""]).join(parts)))
            if len(objects) > 1:
                return Request("POST", path, Raw(" ".join(json.dumps(d) for d in objects)))
            doc = objects[0]
        elif r < 0.87:  # the concurrency routes that never block (lock and campaign can)
            kind = rng.choice(["leader", "resign", "proclaim", "unlock"])
            leader = {"name": b64(self.key()), "key": b64(self.key()), "rev": self.rev(),
                      "lease": self.int_field(self.lease_id())}  # fmt: skip
            for name in ("name", "key", "rev"):
                if rng.random() < 0.2:
                    del leader[name]
            # Always a lease: without one etcd's Proclaim/Resign open a session that grants a
            # new 60 s lease, left to expire (kvraft does not; docs/design/server.md).
            bodies: dict[str, dict[str, Any]] = {"leader": {"name": b64(self.key())}, "resign": {"leader": leader},
                   "proclaim": {"leader": leader, "value": b64(self.value())},
                   "unlock": {"key": b64(self.key())}}  # fmt: skip
            doc = bodies[kind]
            if kind in ("proclaim", "unlock"):
                self.writes += 1
            path = "/v3/lock/unlock" if kind == "unlock" else f"/v3/election/{kind}"
            if rng.random() < 0.15 and kind in ("leader", "unlock"):
                return Request("POST", path, self.mutate(doc))
        elif r < 0.8725:  # the NOSPACE alarm: writes refused while it is raised
            action = rng.choice(["GET", "GET", "ACTIVATE", "DEACTIVATE", "DEACTIVATE"])
            path, doc = "/v3/maintenance/alarm", {"action": action}
            if action != "GET" or rng.random() < 0.3:
                doc.update(memberID=rng.choice(["5", "6", 5, None]), alarm=rng.choice(["NOSPACE", "NOSPACE", "NONE", 1]))
                if doc["memberID"] is None:  # no memberID: member 0 (kvraft took the member asked until session 51)
                    del doc["memberID"]
                self.nospace = self.nospace or (action == "ACTIVATE" and doc["alarm"] in ("NOSPACE", 1))
        elif r < 0.875:  # auth users and roles (never auth/enable: every later request would fail)
            path, doc = self.auth()
            if rng.random() < 0.15:
                return Request("POST", path, self.mutate(doc))
        elif r < 0.88:
            method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
            path = rng.choice([*PATHS, "/health", "/version", "/v3/nothere"])
            if path == "/version" and method == "GET":
                method = "HEAD"  # GET /version differs by design (kvraft's own version)
            return Request(method, path, None if method in ("GET", "HEAD", "OPTIONS") else Raw("{}"))
        elif r < 0.9:
            path = rng.choice(["/v3/kv/nothere", "/v3/kv", "/v3/kv/put/", "/v3//kv/put", "/v2/keys/a", "/v3/lease", "/v4/kv/range", "/v3/KV/range"])
            return Request("POST", path, Raw("{}"))
        else:
            maker: Callable[[], dict[str, Any]] = rng.choice(
                [self.put, self.range, self.delete, self.txn, self.compaction, self.grant]
            )
            path = {self.put: "/v3/kv/put", self.range: "/v3/kv/range", self.delete: "/v3/kv/deleterange",
                    self.txn: "/v3/kv/txn", self.compaction: "/v3/kv/compaction", self.grant: "/v3/lease/grant"}[maker]  # fmt: skip
            return Request("POST", path, self.mutate(maker()))
        if rng.random() < 0.05 and path.startswith("/v3/"):
            path = "/v3beta/" + path[len("/v3/"):]
        return Request("POST", path, doc)


def generate(seed: int, count: int) -> list[Request]:
    gen = Generator(seed)
    return [gen.request() for _ in range(count)]


# --------------------------------------------------------------------------- comparison


Answer = tuple[int, Any]


def call(url: str, method: str, path: str, body: str | None, timeout_s: float = 30.0) -> Answer:
    """(HTTP status, JSON body or text); status 0 when the server did not answer (it died)."""
    try:
        return _call(url, method, path, body, timeout_s)
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"no answer: {exc!r}"


def _call(url: str, method: str, path: str, body: str | None, timeout_s: float) -> Answer:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    try:
        data = None if body is None else body.encode("utf-8", "surrogatepass")
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    text = raw.decode("utf-8", "replace")
    try:
        return response.status, json.loads(text)
    except ValueError:
        pass
    lines = [line for line in text.splitlines() if line.strip()]
    try:  # a stream (keepalive): one JSON document a line
        return response.status, [json.loads(line) for line in lines] if len(lines) > 1 else text.strip()
    except ValueError:
        return response.status, text.strip()


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: scrub(v) for k, v in value.items() if not (k in IGNORED_HEADER_FIELDS and isinstance(v, str))}
        leases = out.get("leases")
        if isinstance(leases, list):
            # etcd lists leases in Go map order (random per call); the set is what counts.
            out["leases"] = sorted(leases, key=lambda item: json.dumps(item, sort_keys=True))
        alarms = out.get("alarms")
        if isinstance(alarms, list):  # etcd's alarm store is a Go map too
            out["alarms"] = sorted(alarms, key=lambda item: json.dumps(item, sort_keys=True))
        keys = out.get("keys")
        if "grantedTTL" in out and isinstance(keys, list):
            # timetolive's keys: etcd walks the lease's key set, a Go map (random order).
            out["keys"] = sorted(keys, key=str)
        return out
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def same(want: Any, got: Any) -> bool:
    """Equal, except that a TTL beside a ``grantedTTL`` (timetolive, which counts down) may
    differ by one second: the two requests reach the two servers at different moments."""
    if isinstance(want, dict) and isinstance(got, dict):
        if set(want) != set(got):
            return False
        for key in want:
            if key == "TTL" and "grantedTTL" in want:
                try:
                    if abs(int(want[key]) - int(got[key])) > 1:
                        return False
                except (TypeError, ValueError):
                    return False
            elif not same(want[key], got[key]):
                return False
        return True
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(same(a, b) for a, b in zip(want, got, strict=True))
    return bool(want == got)


def answers_match(want: Answer, got: Answer) -> bool:
    return want[0] == got[0] and same(scrub(want[1]), scrub(got[1]))


@dataclass
class Divergence:
    index: int
    request: Request
    sent: str | None
    etcd: Answer
    kvraft: Answer

    def describe(self) -> str:
        shown = self.sent if self.sent is None or len(self.sent) < 600 else self.sent[:600] + "..."
        return (f"#{self.index} {self.request.method} {self.request.path} {shown}\n"
                f"  etcd:   {self.etcd}\n  kvraft: {self.kvraft}")  # fmt: skip


# --------------------------------------------------------------------------- servers


class Pair:
    """One etcd and one kvraft single-member cluster, fresh, on 127.0.0.1."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.etcd: LocalCluster | None = None
        self.kvraft: LocalCluster | None = None
        self.starts = 0

    def start(self) -> None:
        self.stop()
        self.starts += 1
        where = self.base_dir / f"pair{self.starts}"
        self.etcd = LocalCluster(1, where / "etcd", binary="etcd")
        self.kvraft = LocalCluster(1, where / "kvraft")
        self.etcd.start(90)
        self.kvraft.start(90)

    def stop(self) -> None:
        for cluster in (self.etcd, self.kvraft):
            if cluster is not None:
                cluster.stop()
                shutil.rmtree(cluster.base_dir, ignore_errors=True)
        self.etcd = self.kvraft = None

    @property
    def urls(self) -> tuple[str, str]:
        assert self.etcd is not None and self.kvraft is not None
        return self.etcd.url("m0"), self.kvraft.url("m0")

    def reset(self) -> int | None:
        """Delete every key and revoke every lease on both; the common revision after it, or
        None when the two disagree or one does not answer (then the caller restarts them)."""
        try:
            return self._reset()
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def _reset(self) -> int | None:
        revisions = []
        for url in self.urls:
            code, doc = call(url, "POST", "/v3/kv/deleterange", json.dumps({"key": "AA==", "range_end": "AA=="}))
            if code != 200:
                return None
            code, doc = call(url, "POST", "/v3/lease/leases", "{}")
            for lease in sorted(int(item["ID"]) for item in doc.get("leases", [])):
                call(url, "POST", "/v3/lease/revoke", json.dumps({"ID": str(lease)}))
            code, doc = call(url, "POST", "/v3/maintenance/alarm", json.dumps({"action": "GET"}))
            for alarm in doc.get("alarms", []):
                call(url, "POST", "/v3/maintenance/alarm", json.dumps({"action": "DEACTIVATE", **alarm}))
            for kind, field in (("user", "users"), ("role", "roles")):
                code, doc = call(url, "POST", f"/v3/auth/{kind}/list", "{}")
                for name in sorted(doc.get(field, [])):
                    call(url, "POST", f"/v3/auth/{kind}/delete", json.dumps({"name" if kind == "user" else "role": name}))
            code, doc = call(url, "POST", "/v3/kv/range", json.dumps({"key": "AA==", "count_only": True}))
            revisions.append(int(doc["header"]["revision"]))
        return revisions[0] if revisions[0] == revisions[1] else None


def _auto_lease(want: Answer, got: Answer) -> bool:
    """Both granted a lease whose ID each server chose (the request's ID was 0 or absent,
    in any spelling): the IDs differ by design. The caller compares the answers without
    them and revokes both leases (no keys: no revision) to keep the servers alike."""
    return (want[0] == got[0] == 200 and isinstance(want[1], dict) and isinstance(got[1], dict)
            and "ID" in want[1] and "ID" in got[1] and want[1]["ID"] != got[1]["ID"])  # fmt: skip


def _short_lease(answer: Answer) -> bool:
    doc = answer[1]
    return answer[0] == 200 and isinstance(doc, dict) and "ID" in doc and int(doc.get("TTL", 0)) < 30


def run_sequence(etcd_url: str, kvraft_url: str, requests: list[Request], base: int) -> Divergence | None:
    for index, request in enumerate(requests):
        sent = body_text(request, base)
        want = call(etcd_url, request.method, request.path, sent)
        got = call(kvraft_url, request.method, request.path, sent)
        if request.path.endswith("/lease/grant") and _auto_lease(want, got):
            for url, answer in ((etcd_url, want), (kvraft_url, got)):
                call(url, "POST", "/v3/lease/revoke", json.dumps({"ID": answer[1]["ID"]}))
            want = (want[0], {k: v for k, v in want[1].items() if k != "ID"})
            got = (got[0], {k: v for k, v in got[1].items() if k != "ID"})
        elif request.path.endswith("/lease/grant") and _short_lease(want) and _short_lease(got):
            # A TTL of 0 or less is raised to the minimum (a few seconds): the lease would
            # expire mid-sequence at a moment that differs between the two. Compared, then
            # revoked on both (it has no keys yet: no revision).
            for url, answer in ((etcd_url, want), (kvraft_url, got)):
                call(url, "POST", "/v3/lease/revoke", json.dumps({"ID": answer[1]["ID"]}))
        if not answers_match(want, got):  # etcd status 0: etcd died on it (its bug to know)
            return Divergence(index, request, sent, want, got)
    return None


def reproduces(pair: Pair, requests: list[Request], fresh: bool = False) -> Divergence | None:
    """Replay after a reset (fast; relative revisions make it equivalent), or on fresh
    servers when asked, or when the reset finds the two apart (a crash, other revisions)."""
    base = None if fresh else pair.reset()
    if base is None:
        pair.start()
        base = pair.reset()
        if base is None:
            raise RuntimeError("fresh servers disagree after a reset")
    return run_sequence(*pair.urls, requests, base)


Replay = Callable[[list[Request], bool], "Divergence | None"]
"""Run requests (on fresh servers when the flag says so); the first divergence or None."""


def shrink(replay: Replay, requests: list[Request], log: Callable[[str], None],
           budget_s: float = 600.0) -> tuple[list[Request], Divergence]:
    """The shortest sub-sequence found (by dropping requests: the failing one alone first,
    then chunks of halving size) whose last request still diverges; the result is checked
    once more on fresh servers. Stops improving after ``budget_s`` seconds. ``replay`` is
    ``functools.partial(reproduces, pair)`` in a campaign."""
    deadline = time.monotonic() + budget_s

    current = list(requests)
    found = replay(current, True)
    if found is None:
        raise RuntimeError("the divergence does not reproduce on fresh servers")
    current = current[: found.index + 1]
    alone = replay(current[-1:], True)
    if alone is not None:
        return current[-1:], alone
    chunk = max(1, (len(current) - 1) // 2)
    while time.monotonic() < deadline:
        start = 0
        while start < len(current) - 1 and time.monotonic() < deadline:
            end = min(start + chunk, len(current) - 1)  # never the diverging request
            trial = current[:start] + current[end:]
            result = replay(trial, False)
            if result is not None and result.index == len(trial) - 1:
                current = trial
                log(f"    shrunk to {len(current)} requests")
            else:
                start += chunk
        if chunk == 1:
            break
        chunk = max(1, chunk // 2)
    final = replay(current, True)
    if final is None or final.index != len(current) - 1:
        raise RuntimeError(f"the {len(current)}-request reduction does not reproduce on fresh servers")
    return current, final


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def campaign(seeds: list[int], ops: int, do_shrink: bool, log: Callable[[str], None]) -> int:
    divergences = 0
    with tempfile.TemporaryDirectory(prefix="compat-fuzz-") as tmp:
        pair = Pair(Path(tmp))
        try:
            pair.start()
            started = time.monotonic()
            for seed in seeds:
                base = pair.reset()
                if base is None:
                    pair.start()
                    base = pair.reset()
                    assert base is not None
                requests = generate(seed, ops)
                found = run_sequence(*pair.urls, requests, base)
                if found is None:
                    log(f"seed {seed}: {ops} requests agree ({time.monotonic() - started:.0f}s)")
                    continue
                divergences += 1
                log(f"seed {seed}: DIVERGENCE\n{found.describe()}")
                if do_shrink:
                    try:
                        minimal, last = shrink(functools.partial(reproduces, pair), requests, log)
                    except RuntimeError as exc:
                        log(f"  not shrunk: {exc}")
                    else:
                        log(f"  minimal reproduction ({len(minimal)} requests, base revision 1):")
                        for request in minimal:
                            log(f"    {request.method} {request.path} {body_text(request, 1)}")
                        log(f"  last answer differs:\n{last.describe()}")
                pair.start()
        finally:
            pair.stop()
    return divergences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-99 or 1,5,7-9")
    parser.add_argument("--ops", type=int, default=300, help="requests per seed")
    parser.add_argument("--no-shrink", action="store_true")
    args = parser.parse_args(argv)
    if shutil.which("etcd") is None:
        print("etcd is not installed", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop both servers on the way out

    def log(line: str) -> None:
        print(line, flush=True)

    divergences = campaign(parse_seeds(args.seeds), args.ops, not args.no_shrink, log)
    log(f"{divergences} divergent seed(s)")
    return 1 if divergences else 0


if __name__ == "__main__":
    sys.exit(main())
