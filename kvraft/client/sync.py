"""``SyncClient``: a blocking wrapper for scripts and notebooks.

It runs a private event loop on a daemon thread and forwards each call to the async
``Client``. Results are the same typed values. Watches become plain iterators::

    with SyncClient("127.0.0.1:2379") as client:
        client.put("k", b"v")
        for response in client.watch("k", start_revision=2):
            ...

Safe to call from any one thread at a time, including inside Jupyter (which already runs
a loop of its own: this wrapper never touches it).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from kvraft.client.client import Client
from kvraft.client.kv import Txn
from kvraft.client.types import GetResponse, WatchResponse

__all__ = ["SyncClient"]

T = TypeVar("T")

_ASYNC_METHODS = {
    "get", "put", "delete", "compact", "get_all", "lease_grant", "lease_revoke", "lease_time_to_live",
    "lease_leases", "lease_keep_alive_once", "member_list", "member_add", "member_remove",
    "member_update", "member_promote", "status", "hash_kv", "health", "defragment", "alarm_list",
    "alarm_disarm", "move_leader", "auth_enable", "auth_disable", "auth_status", "user_add",
    "user_get", "user_list", "user_delete", "user_change_password", "user_grant_role",
    "user_revoke_role", "role_add", "role_get", "role_list", "role_delete",
    "role_grant_permission", "role_revoke_permission", "authenticate", "do", "sync_endpoints",
    "scoped_token_grant", "scoped_token_revoke", "scoped_token_list",
}


class SyncClient:
    """Blocking twin of ``Client``: same constructor arguments, same method names."""

    def __init__(self, endpoints: list[str] | str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kvraft-client", daemon=True)
        self._thread.start()
        self._client = Client(endpoints, **options)
        try:
            self._run(self._client.open())
        except BaseException:
            self._stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        if name not in _ASYNC_METHODS:
            raise AttributeError(name)
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._run(method(*args, **kwargs))

        call.__name__ = name
        call.__doc__ = method.__doc__
        return call

    def txn(self) -> _SyncTxn:
        return _SyncTxn(self, self._client.txn())

    def get_stream(self, key: str | bytes, **options: Any) -> Iterator[GetResponse]:
        """``Client.get_stream`` as a plain iterator; closing it (or ``break``) ends the stream."""
        pages = self._client.get_stream(key, **options)

        async def next_page() -> GetResponse:
            return await pages.__anext__()

        try:
            while True:
                try:
                    yield self._run(next_page())
                except StopAsyncIteration:
                    return
        finally:
            self._run(pages.aclose())

    def call(self, helper: Callable[[Client], Coroutine[Any, Any, T]]) -> T:
        """Run an async helper written for ``Client`` (several calls in a row) with this
        client's, and return its result."""
        return self._run(helper(self._client))

    def watch(self, key: str | bytes, **options: Any) -> Iterator[WatchResponse]:
        """Iterate watch responses; closing the iterator (or ``break``) stops the watch, and so
        does an exception raised while it waits (Ctrl-C's KeyboardInterrupt): the wait on the
        loop is cancelled before the watch is closed."""
        watcher = self._client.watch(key, **options)
        iterator = watcher.__aiter__()
        waiting: list[asyncio.Task[Any]] = []
        try:
            while True:
                try:
                    yield self._run(_next(iterator, waiting))
                except StopAsyncIteration:
                    return
        finally:
            self._run(_close(watcher, waiting))

    def close(self) -> None:
        try:
            self._run(self._client.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _next(iterator: AsyncIterator[WatchResponse], waiting: list[asyncio.Task[Any]]) -> WatchResponse:
    task = asyncio.current_task()
    assert task is not None
    waiting.append(task)
    try:
        return await iterator.__anext__()
    finally:
        waiting.remove(task)


async def _close(watcher: Any, waiting: list[asyncio.Task[Any]]) -> None:
    """Close a watch whose consumer left, maybe while a ``_next`` still waits on the loop (the
    consumer thread was interrupted): that wait is cancelled first, since closing the stream
    under it fails ("asynchronous generator is already running")."""
    for task in list(waiting):
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
    await watcher.close()


class _SyncTxn:
    def __init__(self, owner: SyncClient, txn: Txn) -> None:
        self._owner = owner
        self._txn = txn

    def if_(self, *compares: Any) -> _SyncTxn:
        self._txn.if_(*compares)
        return self

    def then(self, *ops: Any) -> _SyncTxn:
        self._txn.then(*ops)
        return self

    def else_(self, *ops: Any) -> _SyncTxn:
        self._txn.else_(*ops)
        return self

    def commit(self) -> Any:
        return self._owner._run(self._txn.commit())
