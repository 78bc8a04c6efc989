"""Auth failures, with etcd's messages and gRPC codes.

The tree::

    AuthError                     code, message
     +-- (code 2)  password given for a no-password user (unmapped in etcd 3.4)
     +-- (code 3)  user name is empty, role name is empty, authentication failed,
     |             revision of auth store is old, invalid auth management
     +-- (code 7)  permission denied
     +-- (code 8)  too many requests (authenticate rate limit)
     +-- (code 9)  root user does not exist, user/role already exists or not found,
     |             role not granted, permission not granted, authentication is not enabled
     +-- (code 16) invalid auth token
     +-- (code 3)  scoped token name is empty, a scoped token cannot grant tokens (kvraft's)

The API layer answers any exception with integer ``code`` and ``message`` as etcd's error
JSON, so these need no mapping (and the auth package imports nothing above it).
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "auth_failed",
    "auth_not_enabled",
    "invalid_auth_mgmt",
    "invalid_token",
    "no_password_user",
    "old_revision",
    "permission_denied",
    "permission_not_granted",
    "role_empty",
    "role_exists",
    "role_not_found",
    "role_not_granted",
    "scoped_name_empty",
    "scoped_not_allowed",
    "scoped_perm_type_invalid",
    "scoped_range_empty",
    "root_role_missing",
    "root_user_missing",
    "too_many_requests",
    "user_empty",
    "user_exists",
    "user_not_found",
]


class AuthError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuthError) and (other.code, other.message) == (self.code, self.message)

    def __hash__(self) -> int:
        return hash((self.code, self.message))


def _e(code: int, text: str) -> AuthError:
    return AuthError(code, "etcdserver: " + text)


def user_empty() -> AuthError:
    return _e(3, "user name is empty")


def role_empty() -> AuthError:
    return _e(3, "role name is empty")


def auth_failed() -> AuthError:
    return _e(3, "authentication failed, invalid user ID or password")


def old_revision() -> AuthError:
    return _e(3, "revision of auth store is old")


def permission_denied() -> AuthError:
    return _e(7, "permission denied")


def too_many_requests() -> AuthError:
    return _e(8, "too many requests")


def root_user_missing() -> AuthError:
    return _e(9, "root user does not exist")


def root_role_missing() -> AuthError:
    return _e(9, "root user does not have root role")


def user_exists() -> AuthError:
    return _e(9, "user name already exists")


def user_not_found() -> AuthError:
    return _e(9, "user name not found")


def role_exists() -> AuthError:
    return _e(9, "role name already exists")


def role_not_found() -> AuthError:
    return _e(9, "role name not found")


def role_not_granted() -> AuthError:
    return _e(9, "role is not granted to the user")


def permission_not_granted() -> AuthError:
    return _e(9, "permission is not granted to the role")


def invalid_auth_mgmt() -> AuthError:
    return _e(3, "invalid auth management")


def no_password_user() -> AuthError:
    """etcd 3.4 does not map this one to a gRPC code: Unknown (2), HTTP 500 on the gateway."""
    return AuthError(2, "auth: authentication failed, password was given for no password user")


def auth_not_enabled() -> AuthError:
    return _e(9, "authentication is not enabled")


def invalid_token() -> AuthError:
    return _e(16, "invalid auth token")


def scoped_name_empty() -> AuthError:
    """kvraft's scoped tokens (no etcd counterpart): a grant needs a name to revoke it by."""
    return AuthError(3, "kvraft: scoped token name is empty")


def scoped_perm_type_invalid() -> AuthError:
    """A scope's permType that names no permission (jsonpb takes any number)."""
    return AuthError(3, "kvraft: a scoped token's permType must be READ, WRITE or READWRITE")


def scoped_range_empty() -> AuthError:
    """A scope whose range_end is at or before its key: a range of no key."""
    return AuthError(3, "kvraft: a scoped token's range is empty (range_end is not after key)")


def scoped_not_allowed() -> AuthError:
    """A caller holding a scoped token may not grant or revoke tokens."""
    return AuthError(7, "kvraft: a scoped token cannot grant, list or revoke tokens")
