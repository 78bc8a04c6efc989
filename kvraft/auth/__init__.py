"""Auth: users, roles, range permissions (``store``, ``permissions``), request checks
(``check``), token providers (``tokens``), bcrypt hashing (``passwords``) and the
authenticate rate limiter (``ratelimit``)."""

from kvraft.auth.check import check_request
from kvraft.auth.errors import AuthError
from kvraft.auth.passwords import check_password, hash_password
from kvraft.auth.permissions import READ, READWRITE, WRITE, Permission, RangeSet
from kvraft.auth.ratelimit import RateLimiter
from kvraft.auth.store import ROOT, AuthState, Role, ScopedGrant, User, scoped_caller
from kvraft.auth.tokens import JWTTokens, SimpleTokens, TokenInfo, TokenProvider

__all__ = [
    "READ",
    "READWRITE",
    "ROOT",
    "WRITE",
    "AuthError",
    "AuthState",
    "JWTTokens",
    "Permission",
    "RangeSet",
    "RateLimiter",
    "Role",
    "ScopedGrant",
    "SimpleTokens",
    "TokenInfo",
    "TokenProvider",
    "User",
    "check_password",
    "check_request",
    "hash_password",
    "scoped_caller",
]
