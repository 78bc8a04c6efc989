"""asyncio helpers every daemon shares: waits that never lose a cancel.

Two idioms lose the caller's cancel on Python 3.11, and a loop that loses its cancel never
ends, so the ``stop()`` that awaits it hangs (an agent or member that ignores SIGTERM until
systemd kills it):

- ``asyncio.wait_for(aw, timeout)``: when the caller is cancelled in the same tick as ``aw``
  completes, it returns ``aw``'s result (or raises ``aw``'s error) instead of the cancel.
  ``async with asyncio.timeout(t)`` awaits in the caller's own task and has no such gap;
  ruff bans ``asyncio.wait_for`` in kvraft, scheduler and agent (pyproject.toml).
- ``with suppress(CancelledError): await task`` after ``task.cancel()``: it swallows the
  caller's own cancel along with the task's. :func:`cancel_and_wait` waits for the tasks
  without catching anything aimed at the caller.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait", "wait_event"]


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` has passed; True if it was set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> list[BaseException]:
    """Cancel ``tasks`` and wait until every one has ended, whatever it ended with; the errors
    they ended with (not their cancels), in order, for a caller that should raise them.

    A cancel of the caller while it waits propagates (the tasks have been cancelled already
    and end on their own)."""
    for task in tasks:
        task.cancel()
    pending = {task for task in tasks if not task.done()}
    if pending:
        await asyncio.wait(pending)
    return [error for task in tasks if not task.cancelled() and (error := task.exception()) is not None]
