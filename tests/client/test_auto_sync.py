"""Auto-sync's rules (``Client.auto_sync``) on the shared one-member cluster, with the member
list replaced: learners and members that never started are left out, and a list that does not
answer from here does not replace one that does (tests/client/test_failover.py syncs a real
3-member cluster)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest
from kvclusters import Runtime

from kvraft.client import Client
from kvraft.client.admin_types import Member
from kvraft.client.errors import UnavailableError


def _faked(client: Client, members: list[Member]) -> None:
    async def member_list():  # type: ignore[no-untyped-def]
        real = await Client.member_list(client)
        return replace(real, members=tuple(members))

    client.member_list = member_list  # type: ignore[method-assign]


async def test_learners_unstarted_and_unreachable_members_are_not_taken(runtime: Runtime,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    live = runtime.endpoints[0]
    async with Client([live], request_timeout_s=10) as client:
        _faked(client, [Member(1, "m0", client_urls=(live,)), Member(2, "m1", client_urls=("http://127.0.0.1:9",)),
                        Member(3, "", client_urls=("http://127.0.0.1:10",)),  # never started
                        Member(4, "l", client_urls=("http://127.0.0.1:11",), is_learner=True)])
        assert await client.auto_sync() is True
        assert client.endpoints == [live.rstrip("/"), "http://127.0.0.1:9"]
        assert await client.auto_sync() is False  # (the same list)

        # every URL the members advertise is unreachable from here: keep what works
        _faked(client, [Member(1, "m0", client_urls=("http://127.0.0.1:9",))])
        with caplog.at_level(logging.WARNING, logger="kvraft.client"):
            assert await client.auto_sync() is False
            assert await client.auto_sync() is False
        assert client.endpoints == [live.rstrip("/"), "http://127.0.0.1:9"]
        warnings = [r.getMessage() for r in caplog.records if "do not answer from here" in r.getMessage()]
        assert len(warnings) == 1, warnings  # once per list
        await client.put("still", b"served")


async def test_the_loop_survives_a_failed_round_and_stops_with_the_client(runtime: Runtime) -> None:
    client = Client(runtime.endpoints, auto_sync_interval_s=0.05, request_timeout_s=10)
    rounds = 0

    async def failing() -> bool:
        nonlocal rounds
        rounds += 1
        raise UnavailableError("etcdserver: no leader")

    client.auto_sync = failing  # type: ignore[method-assign]
    async with client:
        for _ in range(100):
            if rounds >= 3:
                break
            await asyncio.sleep(0.05)
        assert rounds >= 3
    seen = rounds
    await asyncio.sleep(0.2)
    assert rounds == seen  # stopped on close


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="auto_sync_interval_s must not be negative"):
        Client(["127.0.0.1:2379"], auto_sync_interval_s=-1)
