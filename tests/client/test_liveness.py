"""``Liveness``: keepalive probes and heartbeats, against fakes (no server, no sockets).
The probe is a coroutine that answers, fails or hangs; times are a few tenths of a second
of real time, and every assertion is about which outcome, never how fast."""

from __future__ import annotations

import asyncio

import pytest

from kvraft.client._liveness import Liveness, MemberSilent

A = "http://a"


class Prober:
    """A fake ``/version``: ``alive`` answers at once, else it never answers."""

    def __init__(self, alive: bool = True) -> None:
        self.alive = alive
        self.asked: list[str] = []

    async def __call__(self, endpoint: str) -> None:
        self.asked.append(endpoint)
        if not self.alive:
            await asyncio.Event().wait()


async def _answer_after(seconds: float, value: str = "done") -> str:
    await asyncio.sleep(seconds)
    return value


async def test_a_slow_request_on_a_member_that_answers_probes_is_not_abandoned() -> None:
    prober = Prober(alive=True)
    liveness = Liveness(prober, time_s=0.05, timeout_s=0.2)
    assert await liveness.wait(A, _answer_after(0.4)) == "done"
    assert len(prober.asked) >= 2  # asked again after every quiet interval
    assert liveness.silent == 0


async def test_a_request_on_a_silent_member_is_abandoned_and_cancelled() -> None:
    liveness = Liveness(Prober(alive=False), time_s=0.05, timeout_s=0.1)
    cancelled = asyncio.Event()

    async def hangs() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return "never"

    with pytest.raises(MemberSilent, match="did not answer a keepalive probe"):
        await liveness.wait(A, hangs())
    await asyncio.wait_for(cancelled.wait(), 5)
    assert liveness.silent == 1
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancel was taken back
    await asyncio.sleep(0.01)  # (and none is pending)


async def test_the_callers_own_cancel_stays_a_cancel() -> None:
    liveness = Liveness(Prober(alive=False), time_s=0.05, timeout_s=5.0)  # the probe still waits
    waiting = asyncio.create_task(liveness.wait(A, asyncio.Event().wait()))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert liveness.silent == 0


async def test_a_fast_request_is_never_probed() -> None:
    prober = Prober()
    liveness = Liveness(prober, time_s=5.0, timeout_s=1.0)
    assert await liveness.wait(A, _answer_after(0)) == "done"
    assert prober.asked == []


async def test_waits_on_one_member_share_one_probe() -> None:
    prober = Prober(alive=False)
    liveness = Liveness(prober, time_s=0.05, timeout_s=0.2)
    hang = asyncio.Event()
    results = await asyncio.gather(*(liveness.wait(A, hang.wait()) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, MemberSilent) for r in results)
    assert prober.asked == [A]


async def test_an_answer_from_elsewhere_counts_as_heard() -> None:
    """Another request's answer from the same member within the interval: no probe."""
    prober = Prober(alive=False)
    liveness = Liveness(prober, time_s=0.2, timeout_s=0.1)

    async def keep_hearing() -> None:
        for _ in range(10):
            await asyncio.sleep(0.05)
            liveness.heard(A)

    hearing = asyncio.create_task(keep_hearing())
    assert await liveness.wait(A, _answer_after(0.4)) == "done"
    await hearing
    assert prober.asked == []


async def test_the_request_error_is_its_own() -> None:
    liveness = Liveness(Prober(), time_s=0.05, timeout_s=0.1)

    async def fails() -> None:
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await liveness.wait(A, fails())


async def test_keepalive_off_waits_for_ever() -> None:
    prober = Prober(alive=False)
    liveness = Liveness(prober, time_s=None, timeout_s=0.05)
    assert await liveness.wait(A, _answer_after(0.2)) == "done"
    assert prober.asked == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="keepalive time must be positive"):
        Liveness(Prober(), time_s=0, timeout_s=1)
    with pytest.raises(ValueError, match="keepalive timeout must be positive"):
        Liveness(Prober(), time_s=1, timeout_s=0)


class Chunks:
    """A stream's ``readany``: hands out queued chunks, waits while none is queued."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def readany(self) -> bytes:
        return await self.queue.get()


async def test_a_stream_with_heartbeats_is_silent_when_they_stop() -> None:
    prober = Prober(alive=True)  # (never asked: the heartbeats are the check)
    liveness = Liveness(prober, time_s=0.05, timeout_s=0.1)
    chunks = Chunks()
    loop = asyncio.get_running_loop()
    started = loop.time()
    chunks.queue.put_nowait(b"\n")
    assert await liveness.read(A, chunks.readany, started, heartbeat_s=0.05) == b"\n"
    with pytest.raises(MemberSilent):
        await liveness.read(A, chunks.readany, started, heartbeat_s=0.05)
    assert prober.asked == []


async def test_a_quiet_stream_without_heartbeats_is_kept_while_probes_answer() -> None:
    prober = Prober(alive=True)
    liveness = Liveness(prober, time_s=0.05, timeout_s=0.1)
    chunks = Chunks()
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, chunks.queue.put_nowait, b"late")
    assert await liveness.read(A, chunks.readany, loop.time(), heartbeat_s=None) == b"late"
    assert len(prober.asked) >= 2
    prober.alive = False
    with pytest.raises(MemberSilent):
        await liveness.read(A, chunks.readany, loop.time(), heartbeat_s=None)


async def test_a_chunk_that_arrives_during_a_probe_is_not_lost() -> None:
    """The read is cancelled while the member is probed; the bytes wait in the buffer."""
    prober = Prober(alive=True)
    liveness = Liveness(prober, time_s=0.05, timeout_s=0.1)
    chunks = Chunks()
    loop = asyncio.get_running_loop()
    for at, data in ((0.12, b"a"), (0.2, b"b")):
        loop.call_later(at, chunks.queue.put_nowait, data)
    got = [await liveness.read(A, chunks.readany, loop.time(), None) for _ in range(2)]
    assert got == [b"a", b"b"]


async def test_an_unanswered_probe_cuts_every_wait_on_that_member() -> None:
    """A request that finds the member silent ends the streams and the other requests on it
    too, even a stream whose granted heartbeats are not due yet."""
    liveness = Liveness(Prober(alive=False), time_s=0.05, timeout_s=0.1)
    loop = asyncio.get_running_loop()
    hang = asyncio.Event()
    stream = asyncio.create_task(liveness.read(A, Chunks().readany, loop.time(), heartbeat_s=60.0))
    await asyncio.sleep(0)
    with pytest.raises(MemberSilent):
        await liveness.wait(A, hang.wait())  # its probe goes unanswered
    with pytest.raises(MemberSilent):
        await asyncio.wait_for(stream, 1)
    other = Liveness(Prober(alive=False), time_s=0.05, timeout_s=0.1)
    quiet = asyncio.create_task(other.read("http://b", Chunks().readany, loop.time(), heartbeat_s=60.0))
    await asyncio.sleep(0.3)
    assert not quiet.done()  # another member's silence does not touch it
    quiet.cancel()


async def test_a_streams_heartbeat_deadline_counts_its_own_bytes_only() -> None:
    """Answers on other connections to the same member do not keep a stream alive: its own
    connection may be the broken one."""
    liveness = Liveness(Prober(alive=True), time_s=0.05, timeout_s=0.1)
    loop = asyncio.get_running_loop()

    async def others_answer() -> None:
        for _ in range(20):
            liveness.heard(A)
            await asyncio.sleep(0.02)

    chatter = asyncio.create_task(others_answer())
    with pytest.raises(MemberSilent):
        await liveness.read(A, Chunks().readany, loop.time(), heartbeat_s=0.1)
    chatter.cancel()


async def test_one_unanswered_probe_counts_once_however_many_waits_it_ends() -> None:
    liveness = Liveness(Prober(alive=False), time_s=0.05, timeout_s=0.1)
    hang = asyncio.Event()
    results = await asyncio.gather(*(liveness.wait(A, hang.wait()) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, MemberSilent) for r in results)
    assert liveness.silent == 1
