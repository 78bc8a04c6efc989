"""The Lease and Auth appliers: the decorators that make the chain
``Auth(Lease(Quota(Backend)))`` (etcd: ``authApplierV3`` over the lessor-aware backend).

``AuthApplier`` is the one place permissions are checked for everything that goes
through Raft: an ``AuthedOp`` is checked against the auth state *as of its apply*, with
the auth revision its token vouched for ("revision of auth store is old" if the state
moved on); a bare op that needs a user while auth is on fails with "user name is empty".
Ops the members propose themselves (expiry, checkpoints, alarms, compaction) are bare
and pass.

``LeaseApplier`` applies lease ops to the ``Lessor`` and the store: revoking deletes every
attached key in ONE revision. Lease and auth records are written into the store's
``lease`` and ``auth`` buckets inside the apply batch, so they commit atomically with the
consistent index. Deadlines are member-local: ``clock`` (``time.monotonic`` in a member,
a ``ManualClock`` in tests) is read when a grant, renewal or checkpoint is applied.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from kvraft.apply.chain import NOSPACE_MESSAGE, Applier
from kvraft.apply.errors import (
    EtcdError,
    FailedPrecondition,
    NotFound,
    OutOfRange,
    ResourceExhausted,
    error_from_code,
)
from kvraft.apply.feature_ops import (
    AuthedOp,
    AuthOp,
    LeaseCheckpointOp,
    LeaseExpireOp,
    LeaseGrantOp,
    LeaseRenewOp,
    LeaseRevokeOp,
)
from kvraft.apply.ops import BatchOp, DeleteRangeOp, PutOp, TxnOp
from kvraft.auth import AuthError, AuthState, Permission, ScopedGrant, check_request
from kvraft.auth import errors as auth_errors
from kvraft.lease import LeaseExists, LeaseNotFound, LeaseTTLTooLarge, Lessor

__all__ = [
    "AUTH_BUCKET",
    "LEASE_BUCKET",
    "AuthApplier",
    "LeaseApplier",
    "LeaseGrantResult",
    "LeaseRenewResult",
    "load_auth",
    "load_leases",
]

LEASE_BUCKET = b"lease"
AUTH_BUCKET = b"auth"
AUTH_STATE_KEY = b"state"
SCOPED_KEY_PREFIX = b"scoped/"
"""``scoped/<grant id>``: one scoped grant (``ScopedGrant.to_record``)."""
LEASE_NOT_FOUND = "etcdserver: requested lease not found"


@dataclass(slots=True)
class LeaseGrantResult:
    id: int
    ttl: int
    revision: int


@dataclass(slots=True)
class LeaseRenewResult:
    id: int
    ttl: int
    revision: int


def _put(store: Any, bucket: bytes, key: bytes, value: bytes | None) -> None:
    with store.backend.batch() as batch:
        if value is None:
            batch.txn.delete(key, db=batch.dbis[bucket])
        else:
            batch.txn.put(key, value, db=batch.dbis[bucket])


def current_revision(store: Any) -> int:
    """The store's revision including this apply batch's uncommitted revisions."""
    with store.read() as view:
        return int(view.rev)


def load_leases(store: Any) -> list[tuple[int, int, int]]:
    """(id, ttl, remaining) records from the lease bucket."""
    out = []
    with store.backend.read() as read:
        for key, value in read.txn.cursor(db=read.dbis[LEASE_BUCKET]):
            ttl, remaining = msgpack.unpackb(value)
            out.append((int.from_bytes(key, "big", signed=True), ttl, remaining))
    return out


def load_auth(store: Any) -> AuthState:
    """The auth record, and the scoped grants kept one key each beside it (a grant writes
    only its own key, however many are held)."""
    grants = []
    with store.backend.read() as read:
        raw = read.txn.get(AUTH_STATE_KEY, db=read.dbis[AUTH_BUCKET])
        cursor = read.txn.cursor(db=read.dbis[AUTH_BUCKET])
        if cursor.set_range(SCOPED_KEY_PREFIX):
            for key, value in cursor:
                if not key.startswith(SCOPED_KEY_PREFIX):
                    break
                grants.append(msgpack.unpackb(value, raw=False))
    state = AuthState.from_record(msgpack.unpackb(raw, raw=False)) if raw else AuthState()
    for record in grants:
        state.scoped_grant(ScopedGrant.from_record(record))
    state.take_scoped_changes()  # loaded: nothing to write
    return state


class LeaseApplier(Applier):
    def __init__(self, inner: Applier, store: Any, lessor: Lessor, clock: Callable[[], float]) -> None:
        self.inner = inner
        self.store = store
        self.lessor = lessor
        self.clock = clock

    def _persist(self, lease_id: int) -> None:
        lease = self.lessor.leases.get(lease_id)
        value = None if lease is None else msgpack.packb([lease.ttl_s, lease.remaining_ttl_s])
        # keyed by the int64 ID's 64-bit pattern, as etcd's lease bucket (IDs may be negative)
        _put(self.store, LEASE_BUCKET, lease_id.to_bytes(8, "big", signed=True), value)

    def apply(self, op: Any) -> Any:
        if isinstance(op, LeaseGrantOp):
            if self.store.nospace_alarm:  # etcd's capped applier refuses grants first
                raise ResourceExhausted(NOSPACE_MESSAGE)
            try:
                lease = self.lessor.grant(op.id, op.ttl, self.clock())
            except LeaseExists:
                raise FailedPrecondition("etcdserver: lease already exists") from None
            except LeaseTTLTooLarge:
                raise OutOfRange("etcdserver: too large lease TTL") from None
            self._persist(op.id)
            return LeaseGrantResult(op.id, lease.ttl_s, current_revision(self.store))
        if isinstance(op, (LeaseRevokeOp, LeaseExpireOp)):
            if op.id not in self.lessor.leases:
                raise NotFound(LEASE_NOT_FOUND)
            keys = self.store.keys_by_lease(op.id)
            revision = self.store.delete_keys(keys).revision if keys else current_revision(self.store)
            self.lessor.revoke(op.id)
            self._persist(op.id)
            return revision
        if isinstance(op, LeaseRenewOp):
            try:
                ttl = self.lessor.renew(op.id, self.clock())
            except LeaseNotFound:
                return LeaseRenewResult(op.id, 0, current_revision(self.store))
            self._persist(op.id)
            return LeaseRenewResult(op.id, ttl, current_revision(self.store))
        if isinstance(op, LeaseCheckpointOp):
            now = self.clock()
            leases = self.lessor.leases
            for lease_id, remaining in op.items:
                held = leases.get(lease_id)
                if held is None:
                    continue  # revoked meanwhile
                before = held.remaining_ttl_s
                self.lessor.checkpoint(lease_id, remaining, now)
                if held.remaining_ttl_s != before:  # a steady keepalive checkpoints the same value
                    self._persist(lease_id)
            return current_revision(self.store)
        return self.inner.apply(op)


_NEEDS_USER = (PutOp, DeleteRangeOp, TxnOp, BatchOp, LeaseGrantOp, LeaseRevokeOp, LeaseRenewOp)


class AuthApplier(Applier):
    """``on_simple_token(token, user)`` registers a replicated simple token locally;
    ``on_user_changed(user)`` drops a user's tokens (password change, deletion)."""

    def __init__(
        self,
        inner: Applier,
        store: Any,
        state: AuthState,
        on_simple_token: Callable[[str, str], None] = lambda _t, _u: None,
        on_user_changed: Callable[[str], None] = lambda _u: None,
    ) -> None:
        self.inner = inner
        self.store = store
        self.state = state
        self.on_simple_token = on_simple_token
        self.on_user_changed = on_user_changed

    def apply(self, op: Any) -> Any:
        try:
            if isinstance(op, AuthedOp):
                inner = op.op()
                self._check(op.user, op.revision, inner)
                op = inner
            elif self.state.enabled and (
                isinstance(op, _NEEDS_USER) or (isinstance(op, AuthOp) and op.action != "assign_simple")
            ):
                raise auth_errors.user_empty()
            if isinstance(op, AuthOp):
                return self._apply_auth(op)
        except AuthError as exc:
            raise error_from_code(exc.code, exc.message) from None
        result = self.inner.apply(op)
        if isinstance(op, (LeaseRevokeOp, LeaseExpireOp)) and self.state.scoped_drop_lease(op.id):
            self._save_grants()  # the scoped tokens bound to the lease end with it
        return result

    def _save(self) -> None:
        _put(self.store, AUTH_BUCKET, AUTH_STATE_KEY, msgpack.packb(self.state.to_record(), use_bin_type=True))

    def _save_grants(self) -> None:
        """Write the grants added since the last save, delete those that ended."""
        for grant_id, grant in self.state.take_scoped_changes().items():
            value = None if grant is None else msgpack.packb(grant.to_record(), use_bin_type=True)
            _put(self.store, AUTH_BUCKET, SCOPED_KEY_PREFIX + grant_id.encode(), value)

    def _check(self, user: str, revision: int, op: Any) -> None:
        state = self.state
        if isinstance(op, LeaseRevokeOp):
            if state.check_user(user, revision) or state.is_root(user):
                return
            for key in self.store.keys_by_lease(op.id):
                state.check_range(user, revision, key, b"", write=True)
        elif isinstance(op, AuthOp):
            if op.action == "scoped_grant":
                state.check_scoped_grant(user, revision, str(op.args[2]), _scope(op.args))
            elif op.action == "scoped_revoke":
                state.check_scoped_revoke(user, revision, str(op.args[0]))
            elif op.action != "assign_simple":
                state.check_admin(user, revision)
        elif isinstance(op, (LeaseGrantOp, LeaseRenewOp)):
            state.check_user(user, revision)
        elif isinstance(op, BatchOp):  # every op must be allowed (the batch is one request)
            for item in op.ops:
                self._check(user, revision, item)
        else:
            check_request(state, user, revision, op)

    def _apply_auth(self, op: AuthOp) -> int:
        try:
            return self._apply_auth_action(op)
        finally:
            if self.state.scoped_changes:
                self._save_grants()

    def _apply_auth_action(self, op: AuthOp) -> int:
        state, args = self.state, op.args
        action = op.action
        if action == "assign_simple":
            self.on_simple_token(args[0], args[1])
            return current_revision(self.store)
        if action == "scoped_grant":
            if not state.enabled:
                raise auth_errors.auth_not_enabled()
            lease = int(args[7])
            if not self.store.lease_check(lease):
                raise NotFound(LEASE_NOT_FOUND)
            state.scoped_grant(ScopedGrant(str(args[0]), bytes(args[1]), str(args[2]), str(args[3]), _scope(args), lease))
            return current_revision(self.store)  # the grant's own key only (_apply_auth)
        if action == "scoped_revoke":
            state.scoped_revoke(str(args[0]), str(args[1]))
            return current_revision(self.store)
        if action == "role_grant_permission":
            state.role_grant_permission(args[0], Permission(int(args[1]), bytes(args[2]), bytes(args[3])))
        elif action == "role_revoke_permission":
            state.role_revoke_permission(args[0], bytes(args[1]), bytes(args[2]))
        elif action in _AUTH_ACTIONS:
            getattr(state, action)(*args)
        else:
            raise EtcdError(f"etcdserver: unknown auth action {action!r}")
        if action in ("user_delete", "user_change_password"):
            self.on_user_changed(args[0])
        self._save()
        return current_revision(self.store)


def _scope(args: list[Any]) -> Permission:
    """``scoped_grant``'s args: id, digest, user, name, perm type, key, range end, lease."""
    return Permission(int(args[4]), bytes(args[5]), bytes(args[6]))


_AUTH_ACTIONS = frozenset({
    "enable", "disable", "user_add", "user_delete", "user_change_password", "user_grant_role",
    "user_revoke_role", "role_add", "role_delete",
})
