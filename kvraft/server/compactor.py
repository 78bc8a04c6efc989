"""Automatic compaction, as etcd's ``--auto-compaction-mode`` / ``--auto-compaction-retention``.

Only the leader compacts (a compaction is an ordinary proposal, applied everywhere).

- ``periodic``: retention is a duration (``"1h"``, ``"30m"``, ``"90s"``; a bare number is
  hours, as in etcd). The leader samples the revision every tenth of the retention (at
  most every hour) and compacts to the revision it had ``retention`` ago.
- ``revision``: retention is a revision count; every 5 minutes the leader compacts to
  ``current - retention``.

Retention 0 turns it off (etcd's default).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from typing import TYPE_CHECKING

from kvraft.apply.errors import EtcdError
from kvraft.apply.ops import CompactOp
from kvraft.durations import parse_go_duration_s
from kvraft.raft.types import StateRole

if TYPE_CHECKING:
    from kvraft.server.node import Node

__all__ = ["AutoCompactor", "parse_retention_s"]

log = logging.getLogger("kvraft.compactor")

REVISION_MODE_INTERVAL_S = 300.0


def parse_retention_s(text: str) -> float:
    """Seconds of a periodic retention: ``"1h"``, ``"1h30m"``, ``"90s"``, or hours."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text) * 3600.0
    try:
        return parse_go_duration_s(text)
    except ValueError:
        raise ValueError(f"cannot parse retention {text!r}") from None


class AutoCompactor:
    def __init__(self, node: Node, mode: str, retention: str) -> None:
        self.node = node
        self.mode = mode
        self.retention = retention
        self.compactions = 0

    def enabled(self) -> bool:
        if self.mode == "revision":
            return int(self.retention) > 0
        return parse_retention_s(self.retention) > 0

    async def run(self) -> None:
        if not self.enabled():
            return
        if self.mode == "revision":
            await self._run_revision(int(self.retention))
        else:
            await self._run_periodic(parse_retention_s(self.retention))

    def _leading(self) -> bool:
        return self.node.driver.role == StateRole.LEADER

    async def _compact(self, revision: int) -> None:
        try:
            await self.node.compact(CompactOp(revision))
            self.compactions += 1
            log.info("auto-compacted at revision %d", revision)
        except EtcdError as exc:  # already compacted there, or a leader change
            log.debug("auto-compaction at %d skipped: %s", revision, exc.message)

    async def _run_periodic(self, retention_s: float) -> None:
        interval_s = min(retention_s, 3600.0) / 10
        samples: deque[tuple[float, int]] = deque()
        compacted = 0
        while True:
            await asyncio.sleep(interval_s)
            if not self._leading():
                samples.clear()
                continue
            now = time.monotonic()
            samples.append((now, self.node.state.revision()))
            target = 0
            while samples and now - samples[0][0] >= retention_s:
                target = samples.popleft()[1]
            if target > compacted and target > 1:
                await self._compact(target)
                compacted = target

    async def _run_revision(self, retention: int) -> None:
        while True:
            await asyncio.sleep(REVISION_MODE_INTERVAL_S)
            target = self.node.state.revision() - retention
            if self._leading() and target > 1:
                await self._compact(target)
