"""Auth end to end: users, roles, permissions, login and automatic re-login when the
token expires (``--auth-token-ttl 1``), on a fresh member of each runtime."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from kvclusters import RUNTIMES, Runtime, start_runtime

from kvraft.client import Client, InvalidArgumentError, PermissionDeniedError, ServerError
from kvraft.testing.auth import enable_auth


@pytest.fixture(params=RUNTIMES)
def auth_runtime(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> Iterator[Runtime]:  # type: ignore[no-untyped-def]
    import kvclusters

    monkeypatch.setattr(kvclusters, "FAST_FLAGS", [*kvclusters.FAST_FLAGS, "--auth-token-ttl", "1"])
    rt = start_runtime(request.param, tmp_path, size=1)
    yield rt
    rt.stop()


async def test_users_roles_permissions_and_token_refresh(auth_runtime: Runtime) -> None:
    endpoints = auth_runtime.endpoints
    async with Client(endpoints) as admin:
        await enable_auth(admin, "rootpw", {"app": [("READWRITE", "app/", "app0")]}, {"alice": ("alicepw", "app")})
        with pytest.raises(InvalidArgumentError, match="user name is empty"):
            await admin.get("app/x")
    async with Client(endpoints, user="alice", password="alicepw") as alice:
        first_token = alice.token
        await alice.put("app/x", b"1")
        with pytest.raises(PermissionDeniedError):
            await alice.put("other", b"1")
        await asyncio.sleep(3)  # the simple token expires after its 1 s TTL
        assert (await alice.get("app/x")).kvs[0].value == b"1"  # re-logged in transparently
        assert alice.token != first_token
    async with Client(endpoints, user="root", password="rootpw") as root:
        assert set((await root.user_list()).users) == {"alice", "root"}
        role = await root.role_get("app")
        assert [(p.perm_type, p.key, p.range_end) for p in role.perm] == [("READWRITE", b"app/", b"app0")]
        assert (await root.user_get("alice")).roles == ("app",)
        with pytest.raises(ServerError, match="authentication failed, invalid user ID or password"):
            await Client(endpoints, user="alice", password="wrong").open()
        await root.auth_disable()
