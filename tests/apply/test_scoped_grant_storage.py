"""Scoped grants on disk: one key each in the auth bucket (``scoped/<id>``), beside the auth
record, which a grant leaves alone (a job starting must not rewrite every user, role and grant
however many are held). They survive a reopen, and go with their lease, their name and their
user, through the real appliers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kvraft.apply.feature_appliers import (
    AUTH_BUCKET,
    AUTH_STATE_KEY,
    SCOPED_KEY_PREFIX,
    AuthApplier,
    LeaseApplier,
    load_auth,
    load_leases,
)
from kvraft.apply.feature_ops import AuthOp, LeaseGrantOp, LeaseRevokeOp, authed
from kvraft.apply.state_machine import StateMachine
from kvraft.auth import READWRITE
from kvraft.lease import Lessor
from kvraft.server.membership import Membership


class Member:
    def __init__(self, path: Path) -> None:
        self.sm = StateMachine(path, quota_bytes=1 << 30, member_id=1, max_txn_ops=128, membership=Membership())
        lessor = Lessor(min_ttl_s=1)
        lessor.restore(load_leases(self.sm.store), 0.0)
        self.sm.store.lease_check = lambda lease: lease in lessor.leases
        self.auth = AuthApplier(LeaseApplier(self.sm.chain, self.sm.store, lessor, lambda: 0.0), self.sm.store,
                                load_auth(self.sm.store))
        self.sm.chain = self.auth
        self.index = self.sm.applied_index()

    def apply(self, *ops: Any) -> list[Any]:
        results = []
        for op in ops:
            self.index += 1
            (result,) = self.sm.apply_ops([(self.index, op)], self.index + 1, 1)
            results.append(result)
        return results

    def bucket(self) -> dict[bytes, bytes]:
        self.sm.commit()
        with self.sm.store.backend.read() as read:
            return dict(read.txn.cursor(db=read.dbis[AUTH_BUCKET]))

    def close(self) -> None:
        self.sm.close()


def _grant(gid: str, name: str, lease: int = 7) -> Any:
    return authed("agent", 0, AuthOp("scoped_grant", [gid, b"d" * 32, "agent", name, READWRITE, b"jobs/" + name.encode(),
                                                      b"jobs/" + name.encode() + b"0", lease]))


def test_grants_are_one_key_each_and_survive_a_reopen_and_end_with_their_lease(tmp_path: Path) -> None:
    m = Member(tmp_path / "sm")
    try:
        m.apply(AuthOp("user_add", ["root", b"h", False]), AuthOp("user_grant_role", ["root", "root"]),
                AuthOp("role_add", ["agent"]), AuthOp("role_grant_permission", ["agent", READWRITE, b"jobs/", b"jobs0"]),
                AuthOp("user_add", ["agent", b"h", False]), AuthOp("user_grant_role", ["agent", "agent"]),
                AuthOp("enable", []), authed("root", 0, LeaseGrantOp(7, 60)), authed("root", 0, LeaseGrantOp(8, 60)))
        record = m.bucket()[AUTH_STATE_KEY]
        results = m.apply(_grant("g1", "a/"), _grant("g2", "b/"), _grant("g3", "c/", lease=8))
        assert all(isinstance(r, int) for r in results), results
        bucket = m.bucket()
        assert bucket[AUTH_STATE_KEY] == record  # the record is not rewritten by a grant
        assert sorted(k for k in bucket if k.startswith(SCOPED_KEY_PREFIX)) == [b"scoped/g1", b"scoped/g2", b"scoped/g3"]
        m.close()

        m = Member(tmp_path / "sm")  # reopened: the grants are back
        assert sorted(m.auth.state.scoped) == ["g1", "g2", "g3"]
        assert m.auth.state.scoped["g1"].scope.key == b"jobs/a/"
        m.apply(authed("agent", 0, AuthOp("scoped_revoke", ["agent", "b/"])), authed("root", 0, LeaseRevokeOp(8)))
        assert sorted(k for k in m.bucket() if k.startswith(SCOPED_KEY_PREFIX)) == [b"scoped/g1"]
        m.apply(_grant("g4", "a/"))  # the same name again: the old grant's key goes
        assert sorted(k for k in m.bucket() if k.startswith(SCOPED_KEY_PREFIX)) == [b"scoped/g4"]
        m.apply(authed("root", 0, AuthOp("user_delete", ["agent"])))
        assert not [k for k in m.bucket() if k.startswith(SCOPED_KEY_PREFIX)]
        m.close()

        m = Member(tmp_path / "sm")
        assert m.auth.state.scoped == {}
    finally:
        m.close()
