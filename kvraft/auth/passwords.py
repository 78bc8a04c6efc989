"""Password hashing with bcrypt, and a check that takes the same time for unknown users.

``hash_password`` runs on the member that takes a user add / change-password request;
the hash (not the password) goes through Raft. ``check_password`` compares in constant
time (bcrypt's own comparison) and, for a user that does not exist, still runs one bcrypt
round against a fixed hash so the answer time does not tell who exists.
"""

from __future__ import annotations

import bcrypt

__all__ = ["DEFAULT_COST", "check_password", "hash_password"]

DEFAULT_COST = 10
"""etcd's ``--bcrypt-cost`` default."""

_DUMMY = bcrypt.hashpw(b"kvraft-no-such-user", bcrypt.gensalt(4))


def hash_password(password: str, cost: int = DEFAULT_COST) -> bytes:
    return bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(cost))


def check_password(password: str, password_hash: bytes | None) -> bool:
    if not password_hash:
        bcrypt.checkpw(password.encode()[:72], _DUMMY)
        return False
    try:
        return bcrypt.checkpw(password.encode()[:72], password_hash)
    except ValueError:  # a hashedPassword given at user add that is no bcrypt hash: nothing matches it
        return False
