from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvraft.auth import (
    READ,
    READWRITE,
    WRITE,
    AuthError,
    AuthState,
    JWTTokens,
    Permission,
    RangeSet,
    RateLimiter,
    SimpleTokens,
    check_password,
    check_request,
    hash_password,
)


def _code(fn) -> tuple[int, str]:
    with pytest.raises(AuthError) as info:
        fn()
    return info.value.code, info.value.message.removeprefix("etcdserver: ")


def _state() -> AuthState:
    s = AuthState()
    s.user_add("root", b"h")
    s.user_grant_role("root", "root")
    s.role_add("app")
    s.user_add("alice", b"h")
    s.user_grant_role("alice", "app")
    s.role_grant_permission("app", Permission(READWRITE, b"app/", b"app0"))
    s.role_grant_permission("app", Permission(READ, b"shared/", b"shared0"))
    s.role_grant_permission("app", Permission(WRITE, b"wonly"))
    s.enable()
    return s


def test_enable_needs_root_with_root_role() -> None:
    s = AuthState()
    assert _code(s.enable) == (9, "root user does not exist")
    s.user_add("root", b"h")
    assert _code(s.enable) == (9, "root user does not have root role")
    s.user_grant_role("root", "root")
    s.enable()
    # etcd's ErrGRPCInvalidAuthMgmt is InvalidArgument (3)
    assert _code(lambda: s.user_delete("root")) == (3, "invalid auth management")
    assert _code(lambda: s.user_revoke_role("root", "root")) == (3, "invalid auth management")
    assert _code(lambda: s.role_delete("root")) == (3, "invalid auth management")


def test_users_read_their_own_record_and_the_roles_they_hold() -> None:
    s = _state()
    s.user_add("bob", b"h")
    s.check_user_get("alice", 0, "alice")
    s.check_role_get("alice", 0, "app")
    s.check_user_get("root", 0, "alice")
    s.check_role_get("root", 0, "app")
    assert _code(lambda: s.check_user_get("bob", 0, "alice")) == (7, "permission denied")
    assert _code(lambda: s.check_role_get("bob", 0, "app")) == (7, "permission denied")
    assert _code(lambda: s.check_user_get("", 0, "")) == (3, "user name is empty")
    s.disable()
    s.check_role_get("bob", 0, "app")


def test_one_keys_permissions_stay_in_grant_order() -> None:
    """etcd sorts a role's permissions by key only (its grant appends, then sorts)."""
    s = _state()
    s.role_add("r")
    for perm in (Permission(READ, b"a", b"b"), Permission(WRITE, b"a", b"\0"), Permission(READWRITE, b"z"),
                 Permission(READ, b"")):
        s.role_grant_permission("r", perm)
    assert [(p.key, p.range_end) for p in s.role_get("r").perms] == [
        (b"", b""), (b"a", b"b"), (b"a", b"\0"), (b"z", b"")]


def test_an_empty_name_or_a_root_role_never_added_is_not_found() -> None:
    """etcd 3.4 refuses an empty name only in user/add and role/add; elsewhere it is looked
    up and not found (412). And only user/grant takes the root role without it existing:
    role/get, grant and revoke of a "root" never added are 'role name not found'. kvraft
    said 'name is empty' (400) and served a phantom root role (found by the randomized etcd
    comparison, tests/server/compat_fuzz.py)."""
    s = AuthState()
    s.user_add("alice", b"h")
    assert _code(lambda: s.user_get("")) == (9, "user name not found")
    assert _code(lambda: s.user_change_password("", b"h")) == (9, "user name not found")
    assert _code(lambda: s.user_grant_role("", "root")) == (9, "user name not found")
    assert _code(lambda: s.user_grant_role("alice", "")) == (9, "role name not found")
    assert _code(lambda: s.role_get("")) == (9, "role name not found")
    assert _code(lambda: s.role_get("root")) == (9, "role name not found")
    assert _code(lambda: s.role_grant_permission("root", Permission(READ, b"a"))) == (9, "role name not found")
    assert _code(lambda: s.role_revoke_permission("", b"a", b"")) == (9, "role name not found")
    s.user_grant_role("alice", "root")  # the one place the root role need not exist
    assert s.users["alice"].roles == ["root"]


def test_management_errors_match_etcd() -> None:
    s = _state()
    rev = s.revision
    assert _code(lambda: s.user_add("", b"")) == (3, "user name is empty")
    assert _code(lambda: s.user_add("alice", b"")) == (9, "user name already exists")
    assert _code(lambda: s.user_grant_role("alice", "nope")) == (9, "role name not found")
    assert _code(lambda: s.user_revoke_role("alice", "root")) == (9, "role is not granted to the user")
    assert _code(lambda: s.role_revoke_permission("app", b"zz", b"")) == (9, "permission is not granted to the role")
    assert _code(lambda: s.user_get("bob")) == (9, "user name not found")
    assert s.revision == rev  # failed mutations change nothing
    s.role_delete("app")
    assert s.users["alice"].roles == []


def test_permission_checks() -> None:
    s = _state()
    alice = lambda op: check_request(s, "alice", 0, op)  # noqa: E731
    alice(Put(b"app/x"))
    alice(Range(b"app/", b"app0"))
    alice(Range(b"shared/a"))
    alice(Put(b"wonly"))
    assert _code(lambda: alice(Put(b"shared/x"))) == (7, "permission denied")
    assert _code(lambda: alice(Range(b"wonly"))) == (7, "permission denied")
    assert _code(lambda: alice(Put(b"wonly", prev_kv=True))) == (7, "permission denied")
    assert _code(lambda: alice(Range(b"app/", b"\0"))) == (7, "permission denied")
    assert _code(lambda: alice(DeleteRange(b"shared/", b"shared0"))) == (7, "permission denied")
    txn = Txn([Cmp(b"shared/a")], [Put(b"app/1")], [Put(b"shared/b")])
    assert _code(lambda: alice(txn)) == (7, "permission denied")  # both branches checked
    alice(Txn([Cmp(b"shared/a")], [Put(b"app/1")], [Range(b"shared/b")]))
    assert _code(lambda: alice(Admin())) == (7, "permission denied")
    check_request(s, "root", 0, Admin())
    check_request(s, "root", 0, Put(b"anything"))
    assert _code(lambda: check_request(s, "", 0, Range(b"a"))) == (3, "user name is empty")
    assert _code(lambda: check_request(s, "ghost", 0, Range(b"a"))) == (7, "permission denied")
    assert _code(lambda: check_request(s, "alice", s.revision - 1, Range(b"app/x"))) == (
        3, "revision of auth store is old")
    s.disable()
    check_request(s, "", 0, Put(b"shared/x"))  # auth off: anyone


def test_state_round_trips() -> None:
    s = _state()
    t = AuthState.from_record(s.to_record())
    assert t.to_record() == s.to_record()
    check_request(t, "alice", 0, Put(b"app/z"))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=2), st.one_of(st.just(b""), st.just(b"\0"), st.binary(max_size=2))), max_size=8),
    st.binary(max_size=2),
    st.one_of(st.just(b""), st.just(b"\0"), st.binary(max_size=2)),
)
def test_range_set_agrees_with_a_union_of_grants(grants, key, range_end) -> None:
    """A request is allowed iff the union of the grants covers it."""
    from kvraft.auth.permissions import key_range

    ranges = [key_range(k, e) for k, e in grants]
    ranges = [(a, b) for a, b in ranges if b is None or b > a]
    start, end = key_range(key, range_end)
    if end is not None and end <= start:
        return
    assert RangeSet(ranges).contains(start, end) == _union_contains(ranges, start, end)


def _union_contains(ranges, start, end) -> bool:
    """Reference: sweep the grants in start order, extending the covered prefix."""
    pos = start
    for a, b in sorted(ranges, key=lambda r: r[0]):
        if a > pos:
            break
        if b is None:
            return True
        pos = max(pos, b)
        if end is not None and pos >= end:
            return True
    return False


def test_simple_tokens_expire_refresh_and_invalidate() -> None:
    tokens = SimpleTokens(ttl_s=10, random_letters=lambda n: "x" * n)
    t = tokens.assign("alice", 5, now=0)
    assert t == "xxxxxxxxxxxxxxxx.1"
    assert tokens.info(t, 9).username == "alice"
    assert tokens.info(t, 18) is not None  # the use at 9 extended it
    assert tokens.info(t, 28.5) is None
    t2 = tokens.assign("alice", 5, now=30)
    tokens.invalidate_user("alice")
    assert tokens.info(t2, 31) is None
    assert tokens.info("forged.1", 0) is None


def test_jwt_tokens_sign_verify_expire() -> None:
    tokens = JWTTokens(b"k" * 32, ttl_s=60)
    t = tokens.assign("bob", 7, now=1000)
    info = tokens.info(t, 1001)
    assert (info.username, info.revision) == ("bob", 7)
    assert tokens.info(t, 1061) is None
    assert JWTTokens(b"z" * 32).info(t, 1001) is None  # wrong key
    assert tokens.info(t[:-2] + "AA", 1001) is None  # tampered signature


def test_passwords_are_bcrypt_and_checked() -> None:
    h = hash_password("pw", cost=4)
    assert h.startswith(b"$2b$04$")
    assert check_password("pw", h)
    assert not check_password("pW", h)
    assert not check_password("pw", None)


def test_a_no_password_user_stays_one_after_a_password_change() -> None:
    """etcd keeps a user added with no_password (a certificate's CN logs it in) such after
    user/changepw: authenticating it is still 'password was given for no password user'.
    kvraft's change made it a password user (a password login for a cert-only user)."""
    s = AuthState()
    s.user_add("cn-only", b"", no_password=True)
    s.user_change_password("cn-only", hash_password("pw", cost=4))
    assert s.users["cn-only"].no_password


@pytest.mark.parametrize("stored", [b"garbage", b"$2a$10$tooshort", b"$2b$04$" + b"x" * 53])
def test_a_stored_hash_that_is_no_bcrypt_hash_matches_no_password(stored: bytes) -> None:
    """user/add takes a hashedPassword as given (etcd too); authenticating that user was a
    500 ('ValueError: Invalid salt'), where etcd answers 'authentication failed'."""
    assert not check_password("pw", stored)


def test_rate_limiter_per_user() -> None:
    rl = RateLimiter(rate_per_s=1, burst=3)
    assert [rl.allow("a", 0) for _ in range(4)] == [True, True, True, False]
    assert rl.allow("b", 0)
    assert not rl.allow("a", 0.5)
    assert rl.allow("a", 1.6)


# -- request shapes (as kvraft.apply.ops names them) --------------------------------------
@dataclass
class RangeOp:
    key: bytes
    range_end: bytes = b""


@dataclass
class PutOp:
    key: bytes
    prev_kv: bool = False


@dataclass
class DeleteRangeOp:
    key: bytes
    range_end: bytes = b""
    prev_kv: bool = False


@dataclass
class Compare:
    key: bytes
    range_end: bytes = b""


@dataclass
class TxnOp:
    compare: list = field(default_factory=list)
    success: list = field(default_factory=list)
    failure: list = field(default_factory=list)


class DefragOp:
    pass


Range, Put, DeleteRange, Cmp, Txn, Admin = RangeOp, PutOp, DeleteRangeOp, Compare, TxnOp, DefragOp
