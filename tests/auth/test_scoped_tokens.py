"""Scoped tokens on a real 3-member cluster with auth on (docs/design/auth.md, "Scoped tokens"): an
agent-like user narrows its permissions to one job's prefix, bound to a lease; a client that
holds only the token works inside the scope on every member (after a restart too) and
nowhere else, cannot grant further, and loses everything when the grant is revoked by name
or its lease ends."""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest

from kvraft.cli.main import run as kvctl_run
from kvraft.client import Client, PermissionDeniedError, UnauthenticatedError
from kvraft.testing.auth import enable_auth
from tests.watch.cluster_helpers import b64, call, start_cluster

INVALID = (16, "etcdserver: invalid auth token")


def _when_up(request, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return request()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


async def _secure(urls: list[str]) -> None:
    async with Client(urls) as admin:
        await enable_auth(admin, "rootpw", {"agent": [("READWRITE", "/jobs/", "/jobs0"),
                                                       ("READ", "/registry/", "/registry0")]},
                          {"agent": ("agentpw", "agent")})


def kvctl(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = kvctl_run(list(argv), io.StringIO(), out, err)
    return rc, out.getvalue(), err.getvalue()


def _kvctl_grants_lists_and_revokes(urls: list[str], lease: int) -> None:
    ep = f"--endpoints={urls[0]}"
    rc, token, err = kvctl(ep, "--user=agent:agentpw", "auth", "token", "grant", "ci", "/jobs/ci/", "--prefix",
                           f"--lease={lease:x}", "--perm=write")
    assert rc == 0 and token.startswith("kvraft-scoped."), err
    token = token.strip()
    rc, out, err = kvctl(ep, f"--token={token}", "put", "/jobs/ci/result", "ok")
    assert (rc, out) == (0, "OK\n"), err
    rc, out, err = kvctl(ep, f"--token={token}", "get", "/jobs/ci/result")  # WRITE only
    assert rc != 0 and "permission denied" in err, (rc, out, err)
    rc, out, err = kvctl(ep, "--user=agent:agentpw", "auth", "token", "list")
    assert (rc, out) == (0, f"agent, ci, WRITE, /jobs/ci/, /jobs/ci0, {lease:x}\n"), err
    rc, out, err = kvctl(ep, "--user=root:rootpw", "-w", "json", "auth", "token", "list")
    assert rc == 0 and [t["name"] for t in json.loads(out)["tokens"]] == ["ci"], (out, err)
    assert token.split(".")[-1] not in out  # the secret is never shown
    rc, out, err = kvctl(ep, f"--token={token}", "auth", "token", "list")
    assert rc != 0 and "a scoped token cannot grant, list or revoke tokens" in err, (rc, out, err)
    rc, out, err = kvctl(ep, "--user=agent:agentpw", "auth", "token", "grant", "x", "/jobs/")
    assert rc != 0 and "--lease" in err, (rc, out, err)
    rc, out, err = kvctl(ep, "--user=agent:agentpw", "auth", "token", "revoke", "ci")
    assert (rc, out) == (0, "Token ci revoked\n"), err
    rc, out, err = kvctl(ep, f"--token={token}", "put", "/jobs/ci/result", "again")
    assert rc != 0 and "invalid auth token" in err, (rc, out, err)
    rc, out, err = kvctl(ep, "--user=root:rootpw", "auth", "token", "list")
    assert (rc, out) == (0, ""), err


async def test_a_scoped_token_works_inside_its_scope_on_every_member_until_it_ends(tmp_path) -> None:
    cluster = start_cluster(tmp_path)
    try:
        urls = [m.client_url for m in cluster.members.values()]
        await _secure(urls)
        async with Client(urls[:1], user="agent", password="agentpw") as agent:
            lease = (await agent.lease_grant(60)).id
            token = await agent.scoped_token_grant("n1/job-a/0", "/jobs/job-a/", "/jobs/job-a0", lease=lease)
            assert token.startswith("kvraft-scoped.")
            async with Client(urls[1:2], token=token) as rank:  # another member, straight away
                await rank.put("/jobs/job-a/progress", "epoch 1")
                assert (await rank.get("/jobs/job-a/progress")).kvs[0].value == b"epoch 1"
                own = await rank.lease_grant(30)  # rendezvous keys under the rank's own lease
                await rank.put("/jobs/job-a/rendezvous/0", "addr", lease=own.id)
                refused = [rank.put("/jobs/job-b/progress", "x"), rank.get("/registry/jobs/job-a"),
                           rank.user_list(), rank.scoped_token_grant("x", "/jobs/job-a/x", lease=lease),
                           rank.scoped_token_revoke("n1/job-a/0")]
                for request in refused:
                    with pytest.raises(PermissionDeniedError):
                        await request
            # the grant is in the replicated, persisted auth state: a restarted member knows it
            cluster.stop_member("m2")
            cluster.start_member("m2")
            status, body = _when_up(lambda: call(urls[2], "/v3/kv/range", {"key": b64("/jobs/job-a/progress")}, token))
            assert status == 200 and body["count"] == "1", body
            # the token can do nothing after its grant is revoked by name, on any member
            await agent.scoped_token_revoke("n1/job-a/0")
            await agent.scoped_token_revoke("n1/job-a/0")  # again: no error
            for url in urls:
                status, body = call(url, "/v3/kv/range", {"key": b64("/jobs/job-a/progress")}, token)
                assert (body["code"], body["message"]) == INVALID, (url, body)
            async with Client(urls[1:2], token=token) as rank:
                with pytest.raises(UnauthenticatedError):
                    await rank.put("/jobs/job-a/progress", "x")
            # ... or when its lease ends
            second = await agent.scoped_token_grant("n1/job-a/1", "/jobs/job-a/", "/jobs/job-a0", lease=lease)
            assert call(urls[0], "/v3/kv/range", {"key": b64("/jobs/job-a/x")}, second)[0] == 200
            await agent.lease_revoke(lease)
            status, body = call(urls[0], "/v3/kv/range", {"key": b64("/jobs/job-a/x")}, second)
            assert (body["code"], body["message"]) == INVALID, body
            # the agent cannot scope what it does not hold, nor bind to a lease that is gone
            fresh = (await agent.lease_grant(60)).id
            with pytest.raises(PermissionDeniedError):
                await agent.scoped_token_grant("n1/x", "/registry/", "/registry0", lease=fresh)
            status, body = call(urls[0], "/v3/kvraft/auth/token/grant",
                                {"name": "n1/y", "permType": "READ", "key": b64("/jobs/"), "lease": lease},
                                (agent.token or ""))
            assert (status, body["code"], body["message"]) == (404, 5, "etcdserver: requested lease not found")
            status, body = call(urls[0], "/v3/kvraft/auth/token/grant", {"name": "n1/z", "lease": fresh})
            assert (body["code"], body["message"]) == (3, "etcdserver: user name is empty"), body
            await asyncio.to_thread(_kvctl_grants_lists_and_revokes, urls, fresh)  # kvctl runs its own loop
    finally:
        cluster.stop()
