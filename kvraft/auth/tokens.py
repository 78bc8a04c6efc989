"""Token providers: ``TokenProvider`` with ``SimpleTokens`` and ``JWTTokens``.

- **simple** (etcd's default): ``<16 random letters>.<index>``, kept in memory on the
  member that issued it, valid ``ttl_s`` after its last use (each use extends it), dropped
  when the user's password changes or the user is deleted. Other members do not know it.
- **jwt**: a signed JSON Web Token (PyJWT) with claims ``username``, ``revision`` and
  ``exp``, valid on every member holding the key; HS256 with a shared secret, or RS256 /
  ES256 / EdDSA with a key pair. Any auth change makes older tokens' ``revision`` stale,
  and requests with them fail with "revision of auth store is old", as in etcd.

Time comes in as ``now`` (seconds since the epoch for JWT ``exp``; any monotonic origin
for simple tokens); randomness from an injected callable so tests can fix it.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

__all__ = ["JWTTokens", "SimpleTokens", "TokenInfo", "TokenProvider"]

_LETTERS = string.ascii_letters


@dataclass(frozen=True, slots=True)
class TokenInfo:
    username: str
    revision: int
    """Auth revision the token vouches for (0: check against the current one)."""


class TokenProvider(Protocol):
    def assign(self, username: str, revision: int, now: float) -> str: ...

    def info(self, token: str, now: float) -> TokenInfo | None:
        """The token's user, or None if it is unknown, forged or expired."""
        ...

    def invalidate_user(self, username: str) -> None: ...


class SimpleTokens:
    def __init__(self, ttl_s: float = 300.0, random_letters: Callable[[int], str] | None = None) -> None:
        self.ttl_s = ttl_s
        self._random = random_letters or (lambda n: "".join(secrets.choice(_LETTERS) for _ in range(n)))
        self._tokens: dict[str, tuple[str, float]] = {}
        self._index = 0

    def assign(self, username: str, revision: int, now: float) -> str:
        token = self.new_token()
        self.register(token, username, now)
        return token

    def new_token(self) -> str:
        self._index += 1
        return f"{self._random(16)}.{self._index}"

    def register(self, token: str, username: str, now: float) -> None:
        """Know ``token`` (members register the tokens replicated through Raft)."""
        self._tokens[token] = (username, now + self.ttl_s)
        self._expire(now)

    def info(self, token: str, now: float) -> TokenInfo | None:
        entry = self._tokens.get(token)
        if entry is None:
            return None
        username, deadline = entry
        if deadline <= now:
            del self._tokens[token]
            return None
        self._tokens[token] = (username, now + self.ttl_s)
        return TokenInfo(username, 0)

    def invalidate_user(self, username: str) -> None:
        for token in [t for t, (u, _) in self._tokens.items() if u == username]:
            del self._tokens[token]

    def _expire(self, now: float) -> None:
        if len(self._tokens) % 64 == 0:
            for token in [t for t, (_, d) in self._tokens.items() if d <= now]:
                del self._tokens[token]

    def __len__(self) -> int:
        return len(self._tokens)


class JWTTokens:
    """``sign_key``/``verify_key``: the same secret for HS*, else private/public PEM."""

    def __init__(self, sign_key: Any, verify_key: Any = None, algorithm: str = "HS256", ttl_s: float = 300.0) -> None:
        self.sign_key = sign_key
        self.verify_key = sign_key if verify_key is None else verify_key
        self.algorithm = algorithm
        self.ttl_s = ttl_s

    def assign(self, username: str, revision: int, now: float) -> str:
        claims = {"username": username, "revision": revision, "exp": int(now + self.ttl_s)}
        return jwt.encode(claims, self.sign_key, algorithm=self.algorithm)

    def info(self, token: str, now: float) -> TokenInfo | None:
        try:
            claims = jwt.decode(
                token, self.verify_key, algorithms=[self.algorithm],
                options={"verify_exp": False, "require": ["username", "revision", "exp"]},
            )
        except jwt.PyJWTError:
            return None
        if not isinstance(claims.get("username"), str) or float(claims["exp"]) <= now:
            return None
        return TokenInfo(claims["username"], int(claims["revision"]))

    def invalidate_user(self, username: str) -> None:
        """Signed tokens cannot be recalled; the auth revision bump makes them stale."""
