"""An informer: list a prefix, then watch it from the listed revision (client-go's reflector).

``Informer(client, prefix, sink).run()`` loops forever:

1. **list**: the prefix as a streamed range (``Client.get_all``, pages of ``LIST_PAGE``
   keys at one revision: the member holds one page at a time, not a whole cluster's
   records; from a store without it, etcd, one ``get``); ``sink.replace(kvs, revision)`` gets the whole snapshot (the sink diffs it
   against what it had, so deletions missed while away are seen);
2. **watch** from ``revision + 1``; every response goes to ``sink.apply(events, revision)``.
   The client's watcher already resumes after a disconnect or a member change from the next
   revision it needs (``reconnect_timeout_s=None``), so nothing is lost or repeated;
3. on ``WatchCompactedError`` (the revision it needs is gone) or any other client error,
   back to 1 after a short jittered backoff (200 ms doubling to 5 s); so too when the sink
   raises (a bug: it is logged with its traceback), rather than ending the task.

The sink is called on the informer's task; it must not block. ``synced`` is set after each
list the sink took, and cleared when the sink raises: events it did not take are lost, so
its view is not the store's until a list succeeds (the scheduler acts only while it is set).
``relists`` counts lists after the first.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any, Protocol

from kvraft.client import ClientError, WatchCompactedError

__all__ = ["LIST_PAGE", "Informer", "Sink"]

LIST_PAGE = 2000

log = logging.getLogger("kvraft.scheduler.informer")


class Sink(Protocol):
    def replace(self, kvs: Sequence[Any], revision: int) -> None:
        """The full listing of the prefix at ``revision`` (``KeyValue`` items)."""

    def apply(self, events: Sequence[Any], revision: int) -> None:
        """Watch events (``Event(type, kv, prev_kv)``) in revision order, up to ``revision``."""


class Informer:
    def __init__(self, client: Any, prefix: str, sink: Sink, *, rng: random.Random | None = None,
                 backoff_initial_s: float = 0.2, backoff_max_s: float = 5.0) -> None:
        self.client = client
        self.prefix = prefix
        self.sink = sink
        self.rng = rng or random.Random()
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.synced = asyncio.Event()
        self.revision = 0
        self.relists = 0
        self.compactions = 0
        self.errors = 0
        self.events = 0

    async def _list(self) -> tuple[list[Any], int]:
        """The prefix's keys and the revision they were read at."""
        resp = await self.client.get_all(self.prefix, prefix=True, page_size=LIST_PAGE)
        return list(resp.kvs), int(resp.header.revision)

    async def list_once(self) -> int:
        kvs, revision = await self._list()
        self.sink.replace(kvs, revision)
        if self.synced.is_set():
            self.relists += 1
        self.revision = revision
        self.synced.set()
        return revision

    async def run(self) -> None:
        delay = self.backoff_initial_s
        while True:
            try:
                revision = await self.list_once()
                delay = self.backoff_initial_s
                async with self.client.watch(self.prefix, prefix=True, start_revision=revision + 1,
                                             reconnect_timeout_s=None) as watcher:
                    async for resp in watcher:
                        if resp.events:
                            self.events += len(resp.events)
                            self.sink.apply(resp.events, resp.header.revision)
                        self.revision = max(self.revision, resp.header.revision)
                # a watch stream that ends without an error: list again
            except WatchCompactedError as exc:
                self.compactions += 1
                log.info("watch compacted; relisting", extra={"fields": {"prefix": self.prefix,
                                                                         "compact_revision": exc.compact_revision}})
                continue
            except ClientError as exc:
                self.errors += 1
                log.warning("informer error; relisting", extra={"fields": {"prefix": self.prefix, "error": str(exc),
                                                                           "retry_s": round(delay, 3)}})
            except Exception:  # the sink's bug must not end the informer (a view never updated again)
                self.errors += 1
                self.synced.clear()
                log.exception("informer sink failed; relisting", extra={"fields": {"prefix": self.prefix,
                                                                                   "retry_s": round(delay, 3)}})
            await asyncio.sleep(delay * (0.5 + self.rng.random()))
            delay = min(delay * 2, self.backoff_max_s)
