"""``stops_in_time``: whether a component's ``stop()`` returns, for tests of loops that
must not lose their cancel (docs/architecture.md, "Rules of the house")."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any

__all__ = ["stops_in_time"]


async def stops_in_time(stop: Coroutine[Any, Any, Any], loops: Iterable[asyncio.Task[Any]],
                        timeout_s: float = 5.0) -> bool:
    """Run ``stop`` and say whether it returned within ``timeout_s``. If it did not (a loop
    lost its cancel), ``loops`` are cancelled again so that it returns and the test ends."""
    stopping = asyncio.ensure_future(stop)
    done, _ = await asyncio.wait({stopping}, timeout=timeout_s)
    if not done:
        for task in list(loops):
            task.cancel()
        await stopping
    return bool(done)
