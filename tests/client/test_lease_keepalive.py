"""The ``Lease`` handle's keepalive loop against stand-in clients (no server).

One keepalive that hangs (sent to a member that forwards it to a leader that just died)
must not use up the lease's TTL: another goes to the next member while it hangs. And a
keepalive that is only slow (a loaded machine) must not be given up on: its answer, later
than a renewal interval but within the TTL, still renews the lease."""

from __future__ import annotations

import asyncio

from kvraft.client.errors import ClientError
from kvraft.client.lease import Lease, LeaseMixin
from kvraft.client.types import LeaseKeepAliveResponse, ResponseHeader

TTL = 6  # a renewal every 2 s; a second keepalive after 1 s without an answer


class StandIn(LeaseMixin):
    def __init__(self, answer_after_s: float, hang_call: int = 0) -> None:
        self.answer_after_s = answer_after_s
        self.hang_call = hang_call  # this call never answers (waits out its timeout)
        self.calls: list[float | None] = []
        self.moved = 0

    def next_keepalive_endpoint(self) -> None:
        self.moved += 1

    async def lease_keep_alive_once(self, lease_id: int, *, timeout_s: float | None = None) -> LeaseKeepAliveResponse:
        self.calls.append(timeout_s)
        if len(self.calls) == self.hang_call:
            await asyncio.sleep(timeout_s or 0)
            raise ClientError("lease keepalive timed out")
        await asyncio.sleep(self.answer_after_s)
        return LeaseKeepAliveResponse(ResponseHeader.from_wire({}), lease_id, TTL)


async def keep(client: StandIn, renewals: int) -> Lease:
    lease = Lease(client, TTL, lease_id=7)
    lease._task = asyncio.get_running_loop().create_task(lease._keep_alive())
    deadline = asyncio.get_running_loop().time() + 60
    try:
        while lease.keepalives < renewals and not lease.lost.is_set():
            assert asyncio.get_running_loop().time() < deadline, client.calls
            await asyncio.sleep(0.05)
    finally:
        await lease.close(revoke=False)
    return lease


async def test_a_hung_keepalive_does_not_use_up_the_ttl() -> None:
    client = StandIn(answer_after_s=0.0, hang_call=2)
    lease = await keep(client, 3)
    assert not lease.lost.is_set(), (lease.error, client.calls)
    assert client.moved >= 1  # the second try went to another member


async def test_a_slow_keepalive_still_renews() -> None:
    client = StandIn(answer_after_s=2.5)  # later than the 2 s renewal interval, within the TTL
    lease = await keep(client, 2)
    assert not lease.lost.is_set(), (lease.error, client.calls)
