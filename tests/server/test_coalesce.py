"""``PutCoalescer``: the puts of one event-loop turn become one ``BatchOp`` entry; each
request still gets its own result or error, as with an entry each."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from kvraft.apply.errors import EtcdError, InvalidArgument, ResourceExhausted, Unavailable
from kvraft.apply.ops import BatchOp, PutOp
from kvraft.server.api.coalesce import MAX_OPS, PutCoalescer
from kvraft.storage.mvcc.types import PutResult


class FakeServer:
    """Records what is proposed; ``answer`` decides each proposal's outcome."""

    def __init__(self, max_request_bytes: int = 1 << 20) -> None:
        self.config = SimpleNamespace(max_request_bytes=max_request_bytes, max_txn_ops=128)
        self.proposed: list[Any] = []
        self.direct: list[PutOp] = []
        self.revision = 10
        self.refuse: BaseException | None = None
        self.fail: BaseException | None = None

    def _result(self, op: PutOp) -> Any:
        if op.key == b"bad-lease":
            return EtcdError("etcdserver: requested lease not found")
        self.revision += 1
        return PutResult(self.revision)

    def submit_write(self, op: Any) -> asyncio.Future[Any]:
        if self.refuse is not None:
            raise self.refuse
        self.proposed.append(op)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail is not None:
            future.set_exception(self.fail)
        elif isinstance(op, BatchOp):
            future.set_result([self._result(o) for o in op.ops])
        else:
            result = self._result(op)
            if isinstance(result, EtcdError):
                future.set_exception(result)
            else:
                future.set_result(result)
        return future

    def submit_write_then(self, op: Any, then: Any, once: Any = None) -> None:
        future = self.submit_write(op)
        future.add_done_callback(lambda done: then(None, done.exception()) if done.exception() else then(done.result(), None))

    async def put(self, op: PutOp) -> Any:
        self.direct.append(op)
        return await self.submit_write(op)


def coalescer(server: FakeServer, auth: bool = False) -> PutCoalescer:
    return PutCoalescer(server, SimpleNamespace(auth=SimpleNamespace(enabled=auth)))


async def _gather(c: PutCoalescer, ops: list[PutOp]) -> list[Any]:
    return await asyncio.gather(*(c.put(op) for op in ops), return_exceptions=True)


def test_the_puts_of_one_turn_are_one_entry_with_a_result_each() -> None:
    server = FakeServer()
    ops = [PutOp(b"k%d" % i, b"v") for i in range(5)] + [PutOp(b"bad-lease", b"v"), PutOp(b"z", b"v")]
    results = asyncio.run(_gather(coalescer(server), ops))
    assert server.proposed == [BatchOp(ops)]
    assert [r.revision for r in results[:5]] == [11, 12, 13, 14, 15] and results[6].revision == 16
    assert isinstance(results[5], EtcdError) and "lease not found" in results[5].message


def test_a_put_alone_in_its_turn_is_a_plain_entry() -> None:
    async def run() -> list[Any]:
        c = coalescer(server)
        first = await c.put(PutOp(b"a", b"1"))
        second = await c.put(PutOp(b"b", b"2"))
        return [first, second]

    server = FakeServer()
    assert [r.revision for r in asyncio.run(run())] == [11, 12]
    assert server.proposed == [PutOp(b"a", b"1"), PutOp(b"b", b"2")]


def test_a_failed_entry_fails_each_put_and_a_refusal_too() -> None:
    server = FakeServer()
    server.fail = Unavailable("etcdserver: request timed out")
    results = asyncio.run(_gather(coalescer(server), [PutOp(b"a"), PutOp(b"b")]))
    assert all(isinstance(r, Unavailable) for r in results)
    server = FakeServer()
    server.refuse = ResourceExhausted("etcdserver: mvcc: database space exceeded")
    results = asyncio.run(_gather(coalescer(server), [PutOp(b"a"), PutOp(b"b")]))
    assert all(isinstance(r, ResourceExhausted) for r in results)


def test_a_bad_put_fails_alone_before_joining() -> None:
    server = FakeServer()
    results = asyncio.run(_gather(coalescer(server), [PutOp(b"a"), PutOp(b""), PutOp(b"b")]))
    assert isinstance(results[1], InvalidArgument) and "key is not provided" in results[1].message
    assert server.proposed == [BatchOp([PutOp(b"a"), PutOp(b"b")])]


def test_entries_stay_within_the_size_and_count_limits() -> None:
    server = FakeServer(max_request_bytes=10_000)
    big = [PutOp(b"k%d" % i, b"x" * 1000) for i in range(25)]
    huge = PutOp(b"huge", b"x" * 6000)  # over half the limit: proposed alone
    results = asyncio.run(_gather(coalescer(server), [*big, huge]))
    assert all(isinstance(r, PutResult) for r in results)
    assert huge in server.proposed  # a plain entry of its own
    batches = [op for op in server.proposed if isinstance(op, BatchOp)]
    assert [o for b in batches for o in b.ops] == big and len(batches) == 3
    server = FakeServer()
    many = [PutOp(b"k%d" % i) for i in range(MAX_OPS + 5)]
    asyncio.run(_gather(coalescer(server), many))
    assert [len(op.ops) if isinstance(op, BatchOp) else 1 for op in server.proposed] == [MAX_OPS, 5]


def test_with_auth_enabled_each_put_is_its_own_request() -> None:
    server = FakeServer()
    asyncio.run(_gather(coalescer(server, auth=True), [PutOp(b"a"), PutOp(b"b")]))
    assert server.direct == [PutOp(b"a"), PutOp(b"b")] and server.proposed == server.direct


class HeldServer(FakeServer):
    """``submit_write_then`` registers a waiter, as the driver's (``CallbackWaiter``: called
    where the entry is applied); ``applied`` resolves them and then queues a mark, as the
    driver's ``_send_after_answers`` queues the commit index for the followers right after
    the inline apply resolved the waiters."""

    def __init__(self) -> None:
        super().__init__()
        self.cluster_id, self.member_id, self.raft_term = 1, 2, 3
        self.waiters: list[tuple[Any, Any]] = []

    def submit_write_then(self, op: Any, then: Any, once: Any = None) -> None:
        self.proposed.append(op)
        self.waiters.append((op, then))

    def applied(self, events: list[Any]) -> None:
        for op, then in self.waiters:
            then([self._result(o) for o in op.ops] if isinstance(op, BatchOp) else self._result(op), None)
        self.waiters = []
        events.append("applied")
        asyncio.get_running_loop().call_soon(events.append, "commit index sent")


async def _turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_submit_then_answers_where_the_entry_is_applied() -> None:
    """Each put's answer runs where the entry's waiter is resolved, before anything queued
    after it (``submit``'s future would answer a turn later)."""

    async def run() -> list[Any]:
        server, events = HeldServer(), []
        c = coalescer(server)
        for key in (b"a", b"b", b"bad-lease"):
            c.submit_then(PutOp(key, b"v"), lambda result, error, key=key: events.append((key, result, error)))
        await _turns(2)
        assert len(server.waiters) == 1 and events == []
        server.applied(events)
        await _turns(3)
        return events

    events = asyncio.run(run())
    assert [e[0] for e in events[:3]] == [b"a", b"b", b"bad-lease"] and events[3:] == ["applied", "commit index sent"]
    assert [e[1].revision for e in events[:2]] == [11, 12] and events[2][1] is None
    assert isinstance(events[2][2], EtcdError)


def test_a_failing_answer_does_not_keep_the_others_unanswered() -> None:
    async def run() -> list[Any]:
        server, events = HeldServer(), []
        c = coalescer(server)

        def broken(result: Any, error: BaseException | None) -> None:
            raise RuntimeError("the connection went away")

        c.submit_then(PutOp(b"a", b"v"), broken)
        c.submit_then(PutOp(b"b", b"v"), lambda result, error: events.append(result.revision))
        await _turns(2)
        server.applied(events)
        await _turns(3)
        return events

    assert asyncio.run(run()) == [12, "applied", "commit index sent"]


def test_the_fast_paths_put_is_written_before_the_commit_index_goes_out() -> None:
    """The fast path's kv/put answer is on the socket in the turn the waiter's callbacks run:
    before the driver's commit-index messages (which wake the followers, competing with the
    answer for the CPU), indeed in the apply itself (a callback waiter, not a future: the
    answer no longer waits for the rest of the Ready loop's pass). It was two turns later:
    the waiter's future, then the coalescer's."""
    from kvraft.server.api.fast import FastProtocol, _Routes

    class Transport:
        def __init__(self, events: list[Any]) -> None:
            self.events = events

        def is_closing(self) -> bool:
            return False

        def get_extra_info(self, _name: str, default: Any = None) -> Any:
            return default  # (no socket, no TLS: as asyncio's transports answer for what they lack)

        def write(self, data: bytes) -> None:
            self.events.append(data.split(b"\r\n", 1)[0])

    async def run() -> list[Any]:
        server, events = HeldServer(), []
        features = SimpleNamespace(auth=SimpleNamespace(enabled=False))
        proto = FastProtocol(None, _Routes(server, features, b"kvraft"), 1 << 20)
        proto.connection_made(Transport(events))
        body = b'{"key": "YQ==", "value": "dg=="}'
        proto.data_received(b"POST /v3/kv/put HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await _turns(2)
        server.applied(events)
        await _turns(3)
        return events

    # written in the apply itself: before the Ready loop's pass goes on
    assert asyncio.run(run()) == [b"HTTP/1.1 200 OK", "applied", "commit index sent"]
