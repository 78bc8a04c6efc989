"""Puts from many requests in ONE log entry (``PutCoalescer``), for the fast path's
``kv/put``.

Every put that arrives in the same turn of the event loop (the requests read from every
ready connection in one poll) is queued; the turn after, they are proposed together as
one ``BatchOp`` entry. They stay independent, as if each had been an entry of its own:
each gets its own revision (in arrival order), its own result or error; a failure of the
whole entry (no leader, timeout, the quota) fails each of them as it would have failed
each entry. What changes is the cost: one proposal, one log entry, one waiter and one
apply call on every member instead of one per put (a follower spent ~2.5x more CPU per
put with an entry per put than with 100 puts per entry).

A put alone in its turn is proposed as a plain ``PutOp`` entry, as before; so is one
whose entry alone would come near ``--max-request-bytes`` (it gets its own "request is
too large"), and any put while auth is enabled (its entry carries the caller). A numbered
put (``Kvraft-Request-Id``) joins the entry as its ``SessionOp`` (the member numbers it
when it arrives: ``Node.numbered``); the state machine applies a batch holding any one at a
time, each numbered put through the at-most-once table (``kvraft.apply.sessions``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kvraft.apply.errors import EtcdError
from kvraft.apply.ops import BatchOp, PutOp
from kvraft.apply.validate import validate_op

__all__ = ["MAX_OPS", "PutCoalescer", "Then"]

log = logging.getLogger("kvraft.api.coalesce")

Then = Callable[[Any, BaseException | None], None]
"""A put's answer: called once with (result, None) or (None, error)."""

MAX_OPS = 1000
"""The most puts in one entry (a bigger turn is split)."""
_OP_OVERHEAD = 16  # a put's framing in a BatchOp entry, at most about this
_ENTRY_OVERHEAD = 64
_NUMBER_OVERHEAD = 40  # a SessionOp's framing around a put


class PutCoalescer:
    def __init__(self, server: Any, features: Any) -> None:
        self.server = server
        self.features = features
        self.max_bytes = int(server.config.max_request_bytes)
        self.max_txn_ops = int(server.config.max_txn_ops)
        self._pending: list[tuple[PutOp, Then]] = []
        self._bytes = _ENTRY_OVERHEAD
        self._scheduled = False
        self.entries = 0
        self.puts = 0

    async def put(self, op: PutOp) -> Any:
        """The put's result (a ``PutResult``), or its ``EtcdError`` raised."""
        if self.features.auth.enabled:
            return await self.server.put(op)
        return await self.submit(op)

    def submit(self, op: PutOp) -> asyncio.Future[Any]:
        """``put`` without the coroutine (auth must be off): the future of its result. A
        bad request raises here, alone."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.submit_then(op, lambda result, error: _settle(future, result, error))
        return future

    def submit_then(self, op: PutOp, then: Then, once: Any = None) -> None:
        """``submit`` without the future: ``then(result, None)`` or ``then(None, error)``
        is called once, where the entry is applied (``Node.submit_write_then``: the
        entry's waiter is a callback, not a future), with no loop turn before it: a
        future's callbacks run a turn after the future is resolved, after the rest of the
        Ready loop's pass and the commit index sent to the followers
        (``NodeDriver._send_after_answers``), whose wake-ups then compete with the answer
        for the CPU. A bad request raises here, alone."""
        validate_op(op, self.max_txn_ops)
        size = len(op.key) + len(op.value) + _OP_OVERHEAD
        if size + _ENTRY_OVERHEAD > self.max_bytes // 2:
            # (alone: its own "request is too large")
            self.server.submit_write_then(op, lambda result, error: _deliver(result, error, [(op, then)], True), once)
            return
        item = op if once is None else self.server.numbered(op, once)  # (refused: raises here, alone)
        if once is not None:
            size += _NUMBER_OVERHEAD
        if self._bytes + size > self.max_bytes or len(self._pending) >= MAX_OPS:
            self._flush()
        self._pending.append((item, then))
        self._bytes += size
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._turn_over)

    def _turn_over(self) -> None:
        self._scheduled = False
        self._flush()

    def _flush(self) -> None:
        pending, self._pending, self._bytes = self._pending, [], _ENTRY_OVERHEAD
        if not pending:
            return
        self.entries += 1
        self.puts += len(pending)
        single = len(pending) == 1 and type(pending[0][0]) is PutOp  # (a numbered one: in a batch of one)
        try:
            self.server.submit_write_then(
                pending[0][0] if single else BatchOp([op for op, _ in pending]),
                lambda result, error: _deliver(result, error, pending, single),
            )
        except Exception as exc:  # refused before proposing (quota, size): each put is,
            # answered a turn later (``_flush`` may run inside a request's handling)
            loop = asyncio.get_running_loop()
            for _op, then in pending:
                loop.call_soon(_call, then, None, exc)
            return


def _deliver(result: Any, error: BaseException | None, pending: list[tuple[PutOp, Then]], single: bool) -> None:
    """The entry's outcome to each of its puts."""
    if error is not None:
        for _op, then in pending:
            _call(then, None, error)
        return
    results = [result] if single else result
    for (_op, then), result in zip(pending, results, strict=True):
        if isinstance(result, EtcdError):
            _call(then, None, result)
        else:
            _call(then, result, None)


def _call(then: Then, result: Any, error: BaseException | None) -> None:
    """One put's answer; a failing one must not keep the others of its entry unanswered."""
    try:
        then(result, error)
    except Exception:
        log.exception("answering a put failed")


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # (its request went away)
        return
    if isinstance(error, asyncio.CancelledError):
        future.cancel()
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
