"""``enable_auth``: root, roles with their permissions, users with their roles, then auth on,
through any etcd v3 client API (kvraft or etcd behind it). For tests and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["enable_auth"]


async def enable_auth(client: Any, root_password: str, roles: Mapping[str, Sequence[tuple[str, str, str]]],
                      users: Mapping[str, tuple[str, str]]) -> None:
    """``roles``: role -> [(perm type, key, range end)]; ``users``: user -> (password, role)."""
    await client.user_add("root", root_password)
    await client.user_grant_role("root", "root")
    for role, perms in roles.items():
        await client.role_add(role)
        for perm, key, range_end in perms:
            await client.role_grant_permission(role, perm, key, range_end)
    for user, (password, role) in users.items():
        await client.user_add(user, password)
        await client.user_grant_role(user, role)
    await client.auth_enable()
