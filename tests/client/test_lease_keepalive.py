"""The ``Lease`` handle's keepalive loop against a stand-in client (no server): one
keepalive that hangs (sent to a member that forwards it to a leader that just died) must
not use up the lease's TTL; the next try, sent soon after, renews it."""

from __future__ import annotations

import asyncio

from kvraft.client.errors import ClientError
from kvraft.client.lease import Lease, LeaseMixin
from kvraft.client.types import LeaseKeepAliveResponse, ResponseHeader


class OneHangingKeepalive(LeaseMixin):
    """Answers every keepalive at once, except the second, which never answers."""

    def __init__(self) -> None:
        self.calls: list[float | None] = []

    async def lease_keep_alive_once(self, lease_id: int, *, timeout_s: float | None = None) -> LeaseKeepAliveResponse:
        self.calls.append(timeout_s)
        if len(self.calls) == 2:
            await asyncio.sleep(timeout_s or 0)
            raise ClientError("lease keepalive timed out")
        return LeaseKeepAliveResponse(ResponseHeader.from_wire({}), lease_id, 6)


async def test_a_hung_keepalive_does_not_use_up_the_ttl() -> None:
    client = OneHangingKeepalive()
    lease = Lease(client, 6, lease_id=7)
    lease._task = asyncio.get_running_loop().create_task(lease._keep_alive())
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while lease.keepalives < 3 and not lease.lost.is_set():
            assert asyncio.get_running_loop().time() < deadline, client.calls
            await asyncio.sleep(0.05)
        assert not lease.lost.is_set(), (lease.error, client.calls)
        # the hung try waited one renewal interval (TTL / 3), not the rest of the TTL
        assert client.calls[1] is not None and client.calls[1] <= 2.0, client.calls
    finally:
        await lease.close(revoke=False)
