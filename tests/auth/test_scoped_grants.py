"""Scoped grants in the auth state (kvraft's, docs/design/auth.md "Scoped tokens"): a scoped caller
is allowed what both its scope and its granting user's current roles allow, never admin;
grants end with their lease, by name and with their user; they never move the revision."""

from __future__ import annotations

import pytest

from kvraft.auth import (
    READ,
    READWRITE,
    WRITE,
    AuthState,
    Permission,
    ScopedGrant,
    check_request,
    scoped_caller,
)
from tests.auth.test_auth_core import Admin, Put, Range, Txn, _code, _state

JOB_A = Permission(READWRITE, b"app/job-a/", b"app/job-a0")


def _grant(s: AuthState, gid: str = "g1", *, user: str = "alice", name: str = "job-a",
           scope: Permission = JOB_A, lease: int = 7) -> str:
    s.check_scoped_grant(user, 0, user, scope)
    s.scoped_grant(ScopedGrant(gid, b"digest-" + gid.encode(), user, name, scope, lease))
    return scoped_caller(gid)


def test_a_scoped_caller_gets_the_scope_and_what_its_user_holds() -> None:
    s = _state()
    revision = s.revision
    job = _grant(s)
    assert s.revision == revision  # a grant does not make everyone's tokens stale
    check_request(s, job, 0, Put(b"app/job-a/progress"))
    check_request(s, job, 0, Range(b"app/job-a/", b"app/job-a0"))
    check_request(s, job, revision, Txn([], [Put(b"app/job-a/x")], [Range(b"app/job-a/y")]))
    # alice may write app/job-b/, the token may not; nor outside alice's roles
    assert _code(lambda: check_request(s, job, 0, Put(b"app/job-b/x"))) == (7, "permission denied")
    assert _code(lambda: check_request(s, job, 0, Range(b"app/", b"app0"))) == (7, "permission denied")
    assert _code(lambda: check_request(s, job, 0, Admin())) == (7, "permission denied")
    assert not s.is_root(job)
    # the user's roles narrow the token at every request: revoke alice's write, the token loses it
    s.role_revoke_permission("app", b"app/", b"app0")
    assert _code(lambda: check_request(s, job, 0, Put(b"app/job-a/progress"))) == (7, "permission denied")


def test_a_read_scope_does_not_write_and_a_root_users_scope_is_still_a_scope() -> None:
    s = _state()
    ro = _grant(s, "g2", name="ro", scope=Permission(READ, b"app/", b"app0"))
    check_request(s, ro, 0, Range(b"app/x"))
    assert _code(lambda: check_request(s, ro, 0, Put(b"app/x"))) == (7, "permission denied")
    rooted = _grant(s, "g3", user="root", name="r", scope=Permission(WRITE, b"x"))
    check_request(s, rooted, 0, Put(b"x"))
    assert _code(lambda: check_request(s, rooted, 0, Put(b"y"))) == (7, "permission denied")
    assert _code(lambda: check_request(s, rooted, 0, Range(b"x"))) == (7, "permission denied")
    assert _code(lambda: s.check_admin(rooted, 0)) == (7, "permission denied")


def test_who_may_grant_and_revoke() -> None:
    s = _state()
    alice_scope = Permission(READWRITE, b"app/j/", b"app/j0")
    s.check_scoped_grant("root", 0, "root", Permission(READWRITE, b"", b"\0"))  # root holds everything
    # only for oneself, only what one holds (both halves of READWRITE)
    assert _code(lambda: s.check_scoped_grant("alice", 0, "root", alice_scope)) == (7, "permission denied")
    assert _code(lambda: s.check_scoped_grant(
        "alice", 0, "alice", Permission(READWRITE, b"shared/", b"shared0"))) == (7, "permission denied")
    s.check_scoped_grant("alice", 0, "alice", Permission(READ, b"shared/", b"shared0"))
    job = _grant(s, scope=alice_scope)
    # a scoped token can neither grant (not even narrower) nor revoke
    assert _code(lambda: s.check_scoped_grant(job, 0, "alice", Permission(READ, b"app/j/x"))) == (
        7, "kvraft: a scoped token cannot grant, list or revoke tokens")
    assert _code(lambda: s.check_scoped_revoke(job, 0, "alice")) == (
        7, "kvraft: a scoped token cannot grant, list or revoke tokens")
    assert _code(lambda: s.check_scoped_revoke("bob", 0, "alice")) == (7, "permission denied")
    s.check_scoped_revoke("alice", 0, "alice")
    with pytest.raises(Exception) as info:
        s.scoped_grant(ScopedGrant("g9", b"d", "alice", "", alice_scope, 7))
    assert "name is empty" in str(info.value)
    assert _code(lambda: s.scoped_grant(ScopedGrant("g9", b"d", "ghost", "n", alice_scope, 7))) == (
        9, "user name not found")
    assert _code(lambda: s.user_add("x\x00scoped:g1", b"h")) == (3, "invalid auth management")


@pytest.mark.parametrize(("key", "range_end"), [(b"app/j/", b"app/j/"), (b"app/j/", b"app/"), (b"app/k", b"app/j")])
def test_a_scope_of_an_empty_range_is_refused(key: bytes, range_end: bytes) -> None:
    """A range_end at or before the key (etcd's ranges: [key, range_end)) holds no key: the
    token was granted and could do nothing, and nobody was told."""
    s = _state()
    assert _code(lambda: s.check_scoped_grant("alice", 0, "alice", Permission(READ, key, range_end))) == (
        3, "kvraft: a scoped token's range is empty (range_end is not after key)")


def test_a_scope_of_no_known_permission_type_is_refused() -> None:
    """jsonpb takes any number for permType; a scope of 7 granted nothing, passed the checks
    (it neither reads nor writes), and then token/list failed for everyone (a KeyError, 500)."""
    s = _state()
    for perm_type in (3, 7, -1):
        assert _code(lambda p=perm_type: s.check_scoped_grant("alice", 0, "alice", Permission(p, b"app/j/"))) == (
            3, "kvraft: a scoped token's permType must be READ, WRITE or READWRITE")


def test_grants_end_by_name_with_their_lease_and_with_their_user() -> None:
    s = _state()
    a = _grant(s, "g1", name="a", lease=7)
    b = _grant(s, "g2", name="b", lease=7)
    c = _grant(s, "g3", name="c", lease=8)
    d = _grant(s, "g4", user="root", name="a", lease=8)  # names are per user
    assert s.scoped_drop_lease(7) == 2
    for gone in (a, b):
        assert _code(lambda gone=gone: check_request(s, gone, 0, Put(b"app/job-a/x"))) == (7, "permission denied")
    check_request(s, c, 0, Put(b"app/job-a/x"))
    assert s.scoped_revoke("alice", "c") and not s.scoped_revoke("alice", "c")
    assert s.scoped_lookup("g3") is None
    # the same name again replaces the old grant
    e = _grant(s, "g5", name="e")
    _grant(s, "g6", name="e")
    assert _code(lambda: check_request(s, e, 0, Put(b"app/job-a/x"))) == (7, "permission denied")
    revision = s.revision
    s.user_delete("alice")
    assert revision < s.revision and set(s.scoped) == {"g4"}
    check_request(s, d, 0, Put(b"app/job-a/x"))


def test_a_grant_round_trips_through_its_record_and_the_auth_record_leaves_grants_out() -> None:
    s = _state()
    job = _grant(s)
    grant = s.scoped_lookup("g1")
    assert grant is not None and ScopedGrant.from_record(grant.to_record()) == grant
    assert "scoped" not in s.to_record()  # one key each beside it (kvraft.apply.feature_appliers)
    t = AuthState.from_record(s.to_record())
    t.scoped_grant(ScopedGrant.from_record(grant.to_record()))
    check_request(t, job, 0, Put(b"app/job-a/x"))


def test_who_sees_which_grants() -> None:
    s = _state()
    s.user_add("bob", b"h")
    job = _grant(s, "g1", name="a")
    _grant(s, "g2", user="root", name="r", scope=Permission(READ, b"x"))
    assert [g.id for g in s.scoped_visible("root", 0)] == ["g1", "g2"]  # by user, then name
    assert [g.id for g in s.scoped_visible("alice", 0)] == ["g1"]
    assert s.scoped_visible("bob", 0) == []
    assert _code(lambda: s.scoped_visible(job, 0)) == (7, "kvraft: a scoped token cannot grant, list or revoke tokens")
    s.disable()
    assert len(s.scoped_visible("", 0)) == 2  # auth off: anyone, as every other read
