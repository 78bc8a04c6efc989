"""The auth state: users, roles, permissions, enabled flag and auth revision.

Mutations (``user_add`` ... ``disable``) are applied on every member from committed Raft
entries, in log order, so they must be deterministic: passwords arrive already hashed
(the member that took the request hashed it), and nothing here reads a clock. Every
successful mutation bumps ``revision``; requests carry the revision their token was
checked at, and are refused with "revision of auth store is old" if it moved since.

Permission checks (``check_*``) are pure functions of the state; the per-user merged
range sets are cached and dropped whenever the state changes.

The root role is implicit (it can be granted without ``role_add``) and allows everything,
auth administration and maintenance included.

**Scoped grants** (kvraft's, no etcd counterpart; Kubernetes' bound service-account tokens
are the model): a user narrows its own permissions to one range and hands the result to
someone else as a token, bound to a lease. The agent does this for the ranks of a job, so
user code never holds the agent's identity (docs/design/auth.md, "Scoped tokens"). A grant holds
the SHA-256 of the token's secret (the secret is never in the log), the granting user, the
user's name for it, the scope (a ``Permission``) and the lease. A request made with the
token runs as the *scoped caller* ``scoped_caller(id)``: it is allowed what both the scope
and the granting user's current roles allow, never anything admin. Grants do not move the
auth revision (a job starting must not invalidate everyone's JWTs); they end with their
lease, when revoked by name, and when the granting user is deleted. They are not part of
``to_record``: the applier keeps each under a key of its own (``ScopedGrant.to_record``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvraft.auth import errors
from kvraft.auth.permissions import Permission, RangeSet, key_range

__all__ = ["ROOT", "AuthState", "Role", "ScopedGrant", "User", "scoped_caller"]

ROOT = "root"
_SCOPED = "\x00scoped:"
"""Prefix of a scoped caller's name; user_add refuses names with a NUL, so no user has it."""


def scoped_caller(grant_id: str) -> str:
    return _SCOPED + grant_id


@dataclass(slots=True)
class User:
    name: str
    password_hash: bytes = b""
    roles: list[str] = field(default_factory=list)
    no_password: bool = False


@dataclass(slots=True)
class Role:
    name: str
    perms: list[Permission] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ScopedGrant:
    id: str
    digest: bytes
    user: str
    name: str
    scope: Permission
    lease: int

    def to_record(self) -> list[Any]:
        return [self.id, self.digest, self.user, self.name, self.scope.perm_type, self.scope.key,
                self.scope.range_end, self.lease]

    @classmethod
    def from_record(cls, record: list[Any]) -> ScopedGrant:
        gid, digest, user, name, perm_type, key, range_end, lease = record
        return cls(str(gid), bytes(digest), str(user), str(name), Permission(int(perm_type), bytes(key),
                                                                             bytes(range_end)), int(lease))

    def allows(self, start: bytes, end: bytes | None, write: bool) -> bool:
        if not (self.scope.writes() if write else self.scope.reads()):
            return False
        return RangeSet([key_range(self.scope.key, self.scope.range_end)]).contains(start, end)


class AuthState:
    def __init__(self) -> None:
        self.enabled = False
        self.revision = 1
        self.users: dict[str, User] = {}
        self.roles: dict[str, Role] = {}
        self.scoped: dict[str, ScopedGrant] = {}
        self._scoped_names: dict[tuple[str, str], str] = {}
        self._scoped_by_lease: dict[int, set[str]] = {}
        self.scoped_changes: dict[str, ScopedGrant | None] = {}
        """Grants added (the grant) or ended (None) since the applier last saved them."""
        self._cache: dict[str, tuple[RangeSet, RangeSet, bool]] = {}

    def _changed(self) -> None:
        self.revision += 1
        self._cache.clear()

    # -- mutations (applied) ----------------------------------------------------------------
    def enable(self) -> None:
        if self.enabled:
            return
        root = self.users.get(ROOT)
        if root is None:
            raise errors.root_user_missing()
        if ROOT not in root.roles:
            raise errors.root_role_missing()
        self.enabled = True
        self._changed()

    def disable(self) -> None:
        if self.enabled:
            self.enabled = False
            self._changed()

    def user_add(self, name: str, password_hash: bytes, no_password: bool = False) -> None:
        if not name:
            raise errors.user_empty()
        if "\x00" in name:  # kvraft: names with a NUL are the scoped callers'
            raise errors.invalid_auth_mgmt()
        if name in self.users:
            raise errors.user_exists()
        self.users[name] = User(name, password_hash, [], no_password)
        self._changed()

    def user_delete(self, name: str) -> None:
        if self.enabled and name == ROOT:
            raise errors.invalid_auth_mgmt()
        if self.users.pop(name, None) is None:
            raise errors.user_not_found()
        for grant in [g for g in self.scoped.values() if g.user == name]:
            self._drop_scoped(grant)
        self._changed()

    def user_change_password(self, name: str, password_hash: bytes) -> None:
        user = self._user(name)
        user.password_hash = password_hash  # (a no_password user stays one, as in etcd)
        self._changed()

    def user_grant_role(self, name: str, role: str) -> None:
        user = self._user(name)
        if role != ROOT and role not in self.roles:
            raise errors.role_not_found()
        if role not in user.roles:
            user.roles.append(role)
            user.roles.sort()
        self._changed()

    def user_revoke_role(self, name: str, role: str) -> None:
        if self.enabled and name == ROOT and role == ROOT:
            raise errors.invalid_auth_mgmt()
        user = self._user(name)
        if role not in user.roles:
            raise errors.role_not_granted()
        user.roles.remove(role)
        self._changed()

    def role_add(self, name: str) -> None:
        if not name:
            raise errors.role_empty()
        if name in self.roles:
            raise errors.role_exists()
        self.roles[name] = Role(name)
        self._changed()

    def role_delete(self, name: str) -> None:
        if self.enabled and name == ROOT:
            raise errors.invalid_auth_mgmt()
        if self.roles.pop(name, None) is None:
            raise errors.role_not_found()
        for user in self.users.values():
            if name in user.roles:
                user.roles.remove(name)
        self._changed()

    def role_grant_permission(self, name: str, perm: Permission) -> None:
        role = self._role(name)
        role.perms = [p for p in role.perms if (p.key, p.range_end) != (perm.key, perm.range_end)]
        role.perms.append(perm)
        role.perms.sort(key=lambda p: p.key)  # etcd: by key; one key's ranges in grant order
        self._changed()

    def role_revoke_permission(self, name: str, key: bytes, range_end: bytes) -> None:
        role = self._role(name)
        kept = [p for p in role.perms if (p.key, p.range_end) != (key, range_end)]
        if len(kept) == len(role.perms):
            raise errors.permission_not_granted()
        role.perms = kept
        self._changed()

    # -- scoped grants (applied; they do not move the revision) ----------------------------
    def scoped_grant(self, grant: ScopedGrant) -> None:
        """Add ``grant`` (replacing the user's grant of the same name). Who may grant is
        checked before (``check_scoped_grant``); the lease's existence by the applier."""
        if not grant.name:
            raise errors.scoped_name_empty()
        if grant.user not in self.users:
            raise errors.user_not_found()
        old = self._scoped_names.get((grant.user, grant.name))
        if old is not None:
            self._drop_scoped(self.scoped[old])
        self.scoped[grant.id] = grant
        self._scoped_names[(grant.user, grant.name)] = grant.id
        self._scoped_by_lease.setdefault(grant.lease, set()).add(grant.id)
        self.scoped_changes[grant.id] = grant

    def scoped_revoke(self, user: str, name: str) -> bool:
        grant_id = self._scoped_names.get((user, name))
        if grant_id is None:
            return False
        self._drop_scoped(self.scoped[grant_id])
        return True

    def scoped_drop_lease(self, lease: int) -> int:
        """The lease ended: its grants end with it. Returns how many."""
        gone = [self.scoped[i] for i in sorted(self._scoped_by_lease.get(lease, ()))]
        for grant in gone:
            self._drop_scoped(grant)
        return len(gone)

    def _drop_scoped(self, grant: ScopedGrant) -> None:
        del self.scoped[grant.id]
        del self._scoped_names[(grant.user, grant.name)]
        ids = self._scoped_by_lease[grant.lease]
        ids.discard(grant.id)
        if not ids:
            del self._scoped_by_lease[grant.lease]
        self.scoped_changes[grant.id] = None

    def take_scoped_changes(self) -> dict[str, ScopedGrant | None]:
        """The grants to write (or, None, to delete) since the last call."""
        changes, self.scoped_changes = self.scoped_changes, {}
        return changes

    def scoped_lookup(self, grant_id: str) -> ScopedGrant | None:
        return self.scoped.get(grant_id)

    def scoped_of(self, name: str) -> ScopedGrant | None:
        """The grant a scoped caller's name stands for (None: not a scoped caller).
        Raises "permission denied" for a scoped caller whose grant has ended."""
        if not name.startswith(_SCOPED):
            return None
        grant = self.scoped.get(name[len(_SCOPED):])
        if grant is None:
            raise errors.permission_denied()
        return grant

    def check_scoped_grant(self, caller: str, revision: int, user: str, scope: Permission) -> None:
        """May ``caller`` grant ``scope`` as ``user``? Only for itself, only what it holds
        (both halves of READWRITE), never through a scoped token."""
        if caller.startswith(_SCOPED):
            raise errors.scoped_not_allowed()
        if self.check_user(caller, revision):
            raise errors.auth_not_enabled()
        if caller != user:
            raise errors.permission_denied()
        if not (scope.reads() or scope.writes()):
            raise errors.scoped_perm_type_invalid()
        start, end = key_range(scope.key, scope.range_end)
        if end is not None and end <= start:
            raise errors.scoped_range_empty()
        if scope.reads():
            self.check_range(caller, revision, scope.key, scope.range_end, write=False)
        if scope.writes():
            self.check_range(caller, revision, scope.key, scope.range_end, write=True)

    def check_scoped_revoke(self, caller: str, revision: int, user: str) -> None:
        """Only the granting user revokes its grants (a scoped token cannot)."""
        if caller.startswith(_SCOPED):
            raise errors.scoped_not_allowed()
        if self.check_user(caller, revision):
            return
        if caller != user:
            raise errors.permission_denied()

    def scoped_visible(self, caller: str, revision: int) -> list[ScopedGrant]:
        """The grants ``caller`` may list: root (or anyone with auth off) every grant, a user
        its own; a scoped token none (refused)."""
        if caller.startswith(_SCOPED):
            raise errors.scoped_not_allowed()
        grants = sorted(self.scoped.values(), key=lambda g: (g.user, g.name))
        if self.check_user(caller, revision) or self.is_root(caller):
            return grants
        return [g for g in grants if g.user == caller]

    # -- reads ----------------------------------------------------------------------------
    def _user(self, name: str) -> User:
        # an empty name is simply not found (etcd 3.4 checks emptiness in user/add only)
        user = self.users.get(name)
        if user is None:
            raise errors.user_not_found()
        return user

    def _role(self, name: str) -> Role:
        # an empty name, or "root" never added, is not found (etcd 3.4: only user/grant
        # takes the root role without it existing; role/add alone checks emptiness)
        role = self.roles.get(name)
        if role is None:
            raise errors.role_not_found()
        return role

    def user_get(self, name: str) -> User:
        return self._user(name)

    def role_get(self, name: str) -> Role:
        return self._role(name)

    def is_root(self, name: str) -> bool:  # a scoped caller never is (no user has its name)
        user = self.users.get(name)
        return user is not None and ROOT in user.roles

    # -- permission checks ------------------------------------------------------------------
    def _ranges(self, name: str) -> tuple[RangeSet, RangeSet, bool]:
        cached = self._cache.get(name)
        if cached is None:
            user = self.users[name]
            perms = [p for r in user.roles if r in self.roles for p in self.roles[r].perms]
            read = RangeSet(key_range(p.key, p.range_end) for p in perms if p.reads())
            write = RangeSet(key_range(p.key, p.range_end) for p in perms if p.writes())
            cached = (read, write, ROOT in user.roles)
            self._cache[name] = cached
        return cached

    def check_user(self, name: str, revision: int) -> bool:
        """Validate the caller; True if auth is off (nothing else to check)."""
        if not self.enabled:
            return True
        if not name:
            raise errors.user_empty()
        if revision and revision < self.revision:
            raise errors.old_revision()
        grant = self.scoped_of(name)
        if (grant.user if grant is not None else name) not in self.users:
            raise errors.permission_denied()
        return False

    def check_range(self, name: str, revision: int, key: bytes, range_end: bytes, write: bool) -> None:
        if self.check_user(name, revision):
            return
        grant = self.scoped_of(name)
        if grant is not None:  # the scope, then what its user holds now
            if not grant.allows(*key_range(key, range_end), write):
                raise errors.permission_denied()
            name = grant.user
        read_set, write_set, root = self._ranges(name)
        if root:
            return
        start, end = key_range(key, range_end)
        if not (write_set if write else read_set).contains(start, end):
            raise errors.permission_denied()

    def check_admin(self, name: str, revision: int) -> None:
        if self.check_user(name, revision):
            return
        if name.startswith(_SCOPED) or not self._ranges(name)[2]:
            raise errors.permission_denied()

    def check_user_get(self, name: str, revision: int, target: str) -> None:
        """etcd's UserGet: root, or any user reading its own record."""
        if self.check_user(name, revision) or name == target:
            return
        self.check_admin(name, revision)

    def check_role_get(self, name: str, revision: int, role: str) -> None:
        """etcd's RoleGet: root, or any user reading a role it holds."""
        user = self.users.get(name)
        if self.check_user(name, revision) or (user is not None and role in user.roles):
            return
        self.check_admin(name, revision)

    # -- persistence ----------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "revision": self.revision,
            "users": [[u.name, u.password_hash, list(u.roles), u.no_password] for u in self.users.values()],
            "roles": [[r.name, [[p.perm_type, p.key, p.range_end] for p in r.perms]] for r in self.roles.values()],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AuthState:
        state = cls()
        state.enabled = bool(record["enabled"])
        state.revision = int(record["revision"])
        for name, pw, roles, no_pw in record["users"]:
            state.users[name] = User(name, bytes(pw), list(roles), bool(no_pw))
        for name, perms in record["roles"]:
            state.roles[name] = Role(name, [Permission(int(t), bytes(k), bytes(e)) for t, k, e in perms])
        return state
